package delivery

import (
	"context"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"testing/synctest"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/shared/plan"
)

// fakeClock is a settable clock for cache expiry.
type fakeClock struct{ ns atomic.Int64 }

func (f *fakeClock) now() time.Time          { return time.Unix(0, f.ns.Load()) }
func (f *fakeClock) advance(d time.Duration) { f.ns.Add(int64(d)) }

func TestIDCache(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{}
	c := newIDs(CacheConfig{TTL: time.Minute, Size: 2, Now: clock.now})
	known := map[string]int64{"a": 1, "b": 2, "c": 3}
	finds := 0
	key := func(acct, v string) string {
		return idKey(acct, "", startdeliver.KindUser, plan.Match{Field: "externalId", Value: v})
	}
	lookup := func(acct, v string) (int64, error) {
		return c.lookup(ctx, key(acct, v), func(context.Context) (int64, error) {
			finds++
			if id, ok := known[v]; ok && acct == "acct-1" {
				return id, nil
			}
			return 0, startdeliver.ErrNotFound
		})
	}
	mustLookup := func(v string) {
		t.Helper()
		if id, err := lookup("acct-1", v); err != nil || id != known[v] {
			t.Fatalf("lookup(%q) = %d, %v, want %d", v, id, err, known[v])
		}
	}
	steps := []struct {
		name      string
		do        func()
		wantFinds int // cumulative
	}{
		{"miss", func() { mustLookup("a") }, 1},
		{"hit", func() { mustLookup("a") }, 1},
		{"other value misses", func() { mustLookup("b") }, 2},
		{"still cached before TTL", func() { clock.advance(59 * time.Second); mustLookup("a") }, 2},
		{"expired after TTL", func() { clock.advance(2 * time.Second); mustLookup("a") }, 3},
		{"size bound evicts least recently used (b)", func() { mustLookup("c"); mustLookup("b") }, 5},
		{"forget", func() { c.forget(key("acct-1", "b")); mustLookup("b") }, 6},
		{"forget by id drops only that id", func() {
			c.forgetID(idPrefix("acct-1", "", startdeliver.KindUser), known["b"])
			mustLookup("c")
			mustLookup("b")
		}, 7},
		{"put", func() { c.put(key("acct-1", "z"), 77); known["z"] = 77; mustLookup("z") }, 7},
		{"other account does not share entries", func() {
			if _, err := lookup("acct-2", "z"); err != startdeliver.ErrNotFound {
				t.Errorf("lookup(other account) error = %v, want ErrNotFound", err)
			}
		}, 8},
		{"not found is not cached", func() { _, _ = lookup("acct-2", "z") }, 9},
	}
	for _, s := range steps {
		s.do()
		if finds != s.wantFinds {
			t.Fatalf("after %q: finds = %d, want %d", s.name, finds, s.wantFinds)
		}
	}
	if k5, k5s := idKey("a", "", startdeliver.KindUser, plan.Match{Field: "f", Value: 5}),
		idKey("a", "", startdeliver.KindUser, plan.Match{Field: "f", Value: "5"}); k5 == k5s {
		t.Errorf("idKey(5) = idKey(\"5\") = %q, want them apart (a filter tells them apart)", k5)
	}
}

// TestConcurrentLookupsShareOneFind: 50 lookups of one key while its find
// is in flight make one find, and a caller that gives up does not fail the
// others.
func TestConcurrentLookupsShareOneFind(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		c := newIDs(CacheConfig{})
		gate := make(chan struct{})
		var finds atomic.Int32
		find := func(ctx context.Context) (int64, error) {
			finds.Add(1)
			select {
			case <-gate:
				return 42, nil
			case <-ctx.Done():
				return 0, ctx.Err()
			}
		}
		const n = 50
		results := make([]error, n)
		var wg sync.WaitGroup
		quitter, quit := context.WithCancel(context.Background())
		for i := range n {
			ctx := context.Background()
			if i == 0 {
				ctx = quitter // the first caller, whose find runs, gives up
			}
			wg.Go(func() {
				id, err := c.lookup(ctx, "k", find)
				if err == nil && id != 42 {
					err = fmt.Errorf("id %d, want 42", id)
				}
				results[i] = err
			})
			synctest.Wait()
		}
		quit()
		synctest.Wait()
		close(gate)
		wg.Wait()
		if got := finds.Load(); got != 1 {
			t.Errorf("finds = %d for %d concurrent lookups, want 1", got, n)
		}
		if results[0] != context.Canceled {
			t.Errorf("lookup(cancelled caller) error = %v, want context.Canceled", results[0])
		}
		for i, err := range results[1:] {
			if err != nil {
				t.Errorf("lookup %d error = %v, want 42", i+1, err)
			}
		}
	})
}

// TestKnownUserCostsOneCallPerEvent: the applier's cache makes a known
// user's track events one call each after the first lookup.
func TestKnownUserCostsOneCallPerEvent(t *testing.T) {
	f := newFixture(t, simple)
	f.sd.AddUser(key, map[string]any{"externalId": "u"})
	for i := range 10 {
		res := f.p.Process(context.Background(), message(t, fmt.Sprintf(`{"type":"track","userId":"u","event":"e","messageId":"m-%d"}`, i)))
		if res.Outcome != OutcomeDelivered {
			t.Fatalf("event %d = %s (%v), want delivered", i, res.Outcome, res.Err)
		}
	}
	want := map[string]int{"GET /user": 1, "POST /usage": 10}
	if diff := cmp.Diff(want, f.sd.CallCounts()); diff != "" {
		t.Errorf("calls for 10 events of one known user (-want +got):\n%s", diff)
	}
}

// TestStaleCachedIDRecovers: a cached user deleted in Startdeliver makes
// the usage answer 404; the applier forgets the id, finds nothing, creates
// the user again and records the usage on the new one.
func TestStaleCachedIDRecovers(t *testing.T) {
	f := newFixture(t, simple)
	old := f.sd.AddUser(key, map[string]any{"externalId": "u"})
	if res := f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u","event":"e","messageId":"m-1"}`)); res.Outcome != OutcomeDelivered {
		t.Fatalf("first event = %s (%v), want delivered", res.Outcome, res.Err)
	}
	f.sd.Delete(key, "user", old)
	f.sd.ResetCounters()
	if res := f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u","event":"e","messageId":"m-2"}`)); res.Outcome != OutcomeDelivered {
		t.Fatalf("event after the user's deletion = %s (%v), want delivered", res.Outcome, res.Err)
	}
	want := map[string]int{"POST /usage": 2, "GET /user": 1, "POST /user": 1}
	if diff := cmp.Diff(want, f.sd.CallCounts()); diff != "" {
		t.Errorf("calls after a stale id (-want +got):\n%s", diff)
	}
	users := f.sd.Users(key)
	if len(users) != 1 || users[0].ID() == old {
		t.Fatalf("users = %v, want one new user", users)
	}
	usage := f.sd.Usage(key)
	if len(usage) != 2 || fmt.Sprint(usage[1]["user"]) != fmt.Sprint(users[0].ID()) {
		t.Errorf("usage = %v, want the second on user %d", usage, users[0].ID())
	}
}

const mapped = `{"name":"t","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId"},
  "segmentApp":{"enabled":true,
    "startdeliverMatchingField":{"field":"externalId","type":"text"},"externalMatchingField":{"field":"userId"},
    "userMapping":[{"field":"name","externalField":"traits.name","type":"text"},{"field":"plan","externalField":"traits.plan","type":"text"}]}}`

// TestUpdateSendsOnlyWhatChanged: an identify of a known user PATCHes the
// fields that differ from what Startdeliver holds, and nothing when
// nothing differs.
func TestUpdateSendsOnlyWhatChanged(t *testing.T) {
	f := newFixture(t, mapped)
	id := f.sd.AddUser(key, map[string]any{"externalId": "u", "name": "Ada", "plan": "free"})
	identify := func(msgID, traits string) {
		t.Helper()
		f.sd.ResetCounters()
		res := f.p.Process(context.Background(), message(t, `{"type":"identify","userId":"u","messageId":"`+msgID+`","traits":`+traits+`}`))
		if res.Outcome != OutcomeDelivered {
			t.Fatalf("identify %s = %s (%v), want delivered", msgID, res.Outcome, res.Err)
		}
	}
	identify("i-1", `{"name":"Ada","plan":"free"}`)
	if n := f.sd.Calls("PATCH /user/{id}"); n != 0 {
		t.Errorf("PATCH calls for unchanged traits = %d, want 0", n)
	}
	identify("i-2", `{"name":"Ada","plan":"pro"}`)
	if n := f.sd.Calls("PATCH /user/{id}"); n != 1 {
		t.Errorf("PATCH calls for a changed plan = %d, want 1", n)
	}
	for _, u := range f.sd.Users(key) {
		if u.ID() == id && (u["plan"] != "pro" || u["name"] != "Ada") {
			t.Errorf("user = %v, want plan pro and name Ada", u)
		}
	}
}
