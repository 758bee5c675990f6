package journey

import (
	"context"
	"errors"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/emulatortest"
)

func TestReaderAgainstEmulator(t *testing.T) {
	env := emulatortest.Require(t)
	fs := emulatortest.Firestore(t, env)
	col := emulatortest.Name(t, "deliveries")
	ctx := context.Background()
	base := time.Date(2026, 12, 1, 8, 0, 0, 0, time.UTC)
	uid := int64(7)
	put := func(acct, msg, status, typ, user string, at time.Time, expire time.Time) {
		t.Helper()
		rec := &Record{AccountID: acct, MessageID: msg, Status: status, Type: typ, UserID: user, User: &uid,
			Calls: []Call{{Method: "GET", Route: "/user", Status: 200, Attempt: 1}}, CompletedAt: at, ExpireAt: expire}
		if _, err := fs.Collection(col).Doc(DocumentID(acct, msg)).Set(ctx, rec); err != nil {
			t.Fatal(err)
		}
	}
	later := time.Now().Add(24 * time.Hour)
	put("acct-a", "m1", StatusDelivered, "track", "ada", base, later)
	put("acct-a", "m2", StatusSkipped, "alias", "ada", base.Add(time.Minute), later)
	put("acct-a", "m3", StatusDeadLettered, "track", "bob", base.Add(2*time.Minute), later)
	put("acct-a", "old", StatusDelivered, "track", "ada", base.Add(3*time.Minute), time.Now().Add(-time.Hour))
	put("acct-b", "m4", StatusDelivered, "track", "ada", base.Add(4*time.Minute), later)
	r := NewReader(fs, col)

	got, err := r.Get(ctx, "acct-a", "m1")
	if err != nil || got.Status != StatusDelivered || got.User == nil || *got.User != 7 || len(got.Calls) != 1 {
		t.Fatalf("Get(acct-a, m1) = %+v, %v", got, err)
	}
	for _, tc := range []struct{ acct, msg string }{{"acct-b", "m1"}, {"acct-a", "m4"}, {"acct-a", "none"}, {"acct-a", "old"}} {
		if _, err := r.Get(ctx, tc.acct, tc.msg); !errors.Is(err, ErrNotFound) {
			t.Errorf("Get(%s, %s) error = %v, want ErrNotFound", tc.acct, tc.msg, err)
		}
	}
	ids := func(f Filter) []string {
		t.Helper()
		recs, err := r.List(ctx, "acct-a", f)
		if err != nil {
			t.Fatalf("List(%+v): %v", f, err)
		}
		var out []string
		for _, rec := range recs {
			out = append(out, rec.MessageID)
		}
		return out
	}
	for _, tc := range []struct {
		f    Filter
		want []string
	}{
		{Filter{}, []string{"m3", "m2", "m1"}},
		{Filter{Limit: 2}, []string{"m3", "m2"}},
		{Filter{UserID: "ada"}, []string{"m2", "m1"}},
		{Filter{Type: "track"}, []string{"m3", "m1"}},
		{Filter{Status: StatusSkipped}, []string{"m2"}},
		{Filter{UserID: "ada", Type: "track", Status: StatusDelivered}, []string{"m1"}},
	} {
		if got := ids(tc.f); !equal(got, tc.want) {
			t.Errorf("List(%+v) = %v, want %v", tc.f, got, tc.want)
		}
	}
}

func equal(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestCompleted(t *testing.T) {
	for status, want := range map[string]bool{"": true, StatusDelivered: true, StatusSkipped: true, StatusDuplicate: true,
		StatusDeadLettered: false, StatusRetrying: false, StatusPending: false} {
		if got := Completed(status); got != want {
			t.Errorf("Completed(%q) = %v, want %v", status, got, want)
		}
	}
}
