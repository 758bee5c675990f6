package keyseal

import (
	"context"
	"sync"
	"testing"

	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/startdeliver/segment-destination/shared/emulatortest"
)

// TestDevelopmentKeyset: services starting at once on the emulators agree on
// one development keyset; the public half seals what the private half
// opens, and the public half holds no private key material.
func TestDevelopmentKeyset(t *testing.T) {
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	coll := emulatortest.Name(t, "keysets")
	ctx := context.Background()

	const n = 4
	pubs := make([]*keyset.Handle, n)
	privs := make([]*keyset.Handle, n)
	errs := make([]error, 2*n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { pubs[i], errs[i] = DevelopmentPublic(ctx, fs, coll) })
		wg.Go(func() { privs[i], errs[n+i] = DevelopmentPrivate(ctx, fs, coll) })
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
	for i := range n {
		s, err := NewSealer(pubs[i], SealerOptions{})
		if err != nil {
			t.Fatalf("NewSealer(development public keyset %d) = %v", i, err)
		}
		sealed, err := s.Seal(testKey, testAccount, testMessage)
		if err != nil {
			t.Fatal(err)
		}
		for j := range n {
			o, err := NewOpener(privs[j])
			if err != nil {
				t.Fatal(err)
			}
			if got, err := o.Open(sealed, testAccount, testMessage); err != nil || got != testKey {
				t.Fatalf("sealed by starter %d, opened by %d: %q, %v (two keysets made)", i, j, got, err)
			}
		}
	}
}
