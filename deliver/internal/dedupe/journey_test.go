package dedupe

import (
	"context"
	"testing"

	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/journey"
)

// TestFailedRecordsDoNotCount: a dead-lettered or retrying event's record
// is kept for the console but is no completion (its replay must take
// effect), never replaces a completed record, and is replaced by the
// completion when the event finally succeeds.
func TestFailedRecordsDoNotCount(t *testing.T) {
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "deliveries")
	ctx := context.Background()
	s := New(fs, Options{Collection: col})
	reader := journey.NewReader(fs, col)
	status := func(id string) string {
		t.Helper()
		r, err := reader.Get(ctx, "acct", id)
		if err != nil {
			t.Fatalf("Get(%s): %v", id, err)
		}
		return r.Status
	}

	dead := &Record{AccountID: "acct", MessageID: "dl", Status: journey.StatusDeadLettered, ErrorClass: "no-match-value",
		Reason: "no user matched", Calls: []journey.Call{{Method: "GET", Route: "/user", Status: 200}}, Payload: "{}"}
	if err := s.Failed(ctx, dead); err != nil {
		t.Fatal(err)
	}
	// Its replay takes it over, on another instance or this one, and the
	// record is then the replay's claim, with nothing of the dead letter's
	// journey (its reason and calls are not the replay's).
	other := New(fs, Options{Collection: col})
	c, err := other.Claim(ctx, &Record{AccountID: "acct", MessageID: "dl", Type: "track"})
	if err != nil || c.Completed {
		t.Fatalf("Claim of a dead-lettered event = %+v, %v; want a claim, so that its replay takes effect", c, err)
	}
	snap, err := fs.Collection(col).Doc(Key("acct", "dl")).Get(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var took Record
	if err := snap.DataTo(&took); err != nil {
		t.Fatal(err)
	}
	if took.Status != journey.StatusPending || took.Type != "track" || took.Reason != "" || took.ErrorClass != "" || len(took.Calls) != 0 || took.Owner == "" {
		t.Errorf("the taken-over record = %+v; want the replay's claim (pending, its type and owner) with no reason, class or calls of the dead letter", took)
	}
	if _, ok := snap.Data()["payload"]; ok {
		t.Error("the taken-over record kept the dead letter's payload; a claim carries none")
	}
	if err := other.Release(ctx, c); err != nil {
		t.Fatal(err)
	}
	if done, err := claim(ctx, s, "dl"); err != nil || done {
		t.Errorf("the writing instance: Claim of a dead letter: completed = %v, %v; want a claim", done, err)
	}
	// A retry after it replaces it (neither is a completion) ...
	if err := s.Failed(ctx, &Record{AccountID: "acct", MessageID: "dl", Status: journey.StatusRetrying}); err != nil {
		t.Fatal(err)
	}
	if got := status("dl"); got != journey.StatusRetrying {
		t.Errorf("status = %s, want retrying", got)
	}
	// ... and the replay's completion replaces both.
	if err := s.Complete(ctx, &Record{AccountID: "acct", MessageID: "dl", Status: journey.StatusDelivered}); err != nil {
		t.Fatal(err)
	}
	// A failure of another copy never undoes a completion.
	if err := New(fs, Options{Collection: col}).Failed(ctx, &Record{AccountID: "acct", MessageID: "dl", Status: journey.StatusDeadLettered}); err != nil {
		t.Fatal(err)
	}
	if got := status("dl"); got != journey.StatusDelivered {
		t.Errorf("after a late dead letter status = %s, want delivered", got)
	}
	if done, _ := claim(ctx, New(fs, Options{Collection: col}), "dl"); !done {
		t.Error("the completed event is not done after a late failure record")
	}
	if err := s.Failed(ctx, &Record{AccountID: "acct", MessageID: "x", Status: journey.StatusDelivered}); err == nil {
		t.Error("Failed took a completion")
	}
}

func TestDuplicateNotedOnRecord(t *testing.T) {
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "deliveries")
	ctx := context.Background()
	s := New(fs, Options{Collection: col})
	uid := int64(9)
	calls := []journey.Call{{Method: "GET", Route: "/user", Status: 200, Attempt: 1}}
	if err := s.Complete(ctx, &Record{AccountID: "acct", MessageID: "m", Status: journey.StatusDelivered, User: &uid, Calls: calls}); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		if err := s.Duplicate(ctx, "acct", "m"); err != nil {
			t.Fatal(err)
		}
	}
	r, err := journey.NewReader(fs, col).Get(ctx, "acct", "m")
	if err != nil {
		t.Fatal(err)
	}
	if r.Status != journey.StatusDuplicate || r.Duplicates != 2 || r.LastDuplicateAt == nil || r.User == nil || *r.User != 9 || len(r.Calls) != 1 {
		t.Errorf("record after two duplicates = %+v, want status duplicate, 2 duplicates, the journey kept", r)
	}
	if done, _ := claim(ctx, New(fs, Options{Collection: col}), "m"); !done {
		t.Error("a record marked duplicate no longer counts as done")
	}
	// A record that is gone is left alone, without an error.
	if err := s.Duplicate(ctx, "acct", "never-recorded"); err != nil {
		t.Errorf("Duplicate of no record: %v", err)
	}
	if _, err := fs.Collection(col).Doc(Key("acct", "never-recorded")).Get(ctx); err == nil {
		t.Error("Duplicate created a record")
	}
}
