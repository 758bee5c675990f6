package emulatortest_test

import (
	"context"
	"testing"

	"cloud.google.com/go/firestore"

	"github.com/startdeliver/segment-destination/shared/emulatortest"
)

// TestWireCountsByCollection: documents read, found or missing, count in
// Reads and in ReadsOf their collection; writes in Writes.
func TestWireCountsByCollection(t *testing.T) {
	env := emulatortest.Require(t)
	fs, wire := emulatortest.CountingFirestore(t, env)
	ctx := context.Background()
	a, b := emulatortest.Name(t, "a"), emulatortest.Name(t, "b")
	if _, err := fs.Collection(a).Doc("x").Set(ctx, map[string]any{"v": 1}); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.GetAll(ctx, []*firestore.DocumentRef{fs.Collection(a).Doc("x"), fs.Collection(a).Doc("missing"), fs.Collection(b).Doc("y")}); err != nil {
		t.Fatal(err)
	}
	if got := [4]int64{wire.Reads.Load(), wire.ReadsOf(a), wire.ReadsOf(b), wire.Writes.Load()}; got != [4]int64{3, 2, 1, 1} {
		t.Errorf("reads, of a, of b, writes = %v, want [3 2 1 1]", got)
	}
	if got := wire.Calls("BatchGetDocuments"); got != 1 {
		t.Errorf("read calls = %d, want 1", got)
	}
}
