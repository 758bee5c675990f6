package startdeliver_test

import (
	"context"
	"encoding/json"
	"errors"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
)

// fakeClock is a settable clock for cache expiry.
type fakeClock struct{ ns atomic.Int64 }

func (f *fakeClock) now() time.Time          { return time.Unix(0, f.ns.Load()) }
func (f *fakeClock) advance(d time.Duration) { f.ns.Add(int64(d)) }

func TestLookupCache(t *testing.T) {
	ctx := context.Background()
	clock := &fakeClock{}
	c, srv, acct := newTestClient(t, startdeliver.Options{Cache: startdeliver.CacheConfig{TTL: time.Minute, Size: 2, Now: clock.now}})
	ids := map[string]int64{}
	for _, v := range []string{"a", "b", "c"} {
		ids[v] = srv.AddUser(testKey, map[string]any{"externalId": v})
	}
	lookup := func(v string) {
		t.Helper()
		id, err := c.LookupID(ctx, acct, startdeliver.KindUser, startdeliver.Match{Field: "externalId", Value: v})
		if err != nil || id != ids[v] {
			t.Fatalf("LookupID(%q) = %d, %v, want %d", v, id, err, ids[v])
		}
	}
	steps := []struct {
		name      string
		do        func()
		wantFinds int // cumulative GET /user calls
	}{
		{"miss", func() { lookup("a") }, 1},
		{"hit", func() { lookup("a") }, 1},
		{"other key misses", func() { lookup("b") }, 2},
		{"still cached before TTL", func() { clock.advance(59 * time.Second); lookup("a") }, 2},
		{"expired after TTL", func() { clock.advance(2 * time.Second); lookup("a") }, 3},
		{"size bound evicts least recently used (b)", func() { lookup("c"); lookup("b") }, 5},
		{"forget", func() {
			c.Forget(acct, startdeliver.KindUser, startdeliver.Match{Field: "externalId", Value: "b"})
			lookup("b")
		}, 6},
		{"forget by id", func() {
			if n := c.ForgetID(acct, startdeliver.KindUser, ids["b"]); n != 1 {
				t.Errorf("ForgetID() = %d, want 1", n)
			}
			lookup("b")
		}, 7},
		{"put", func() {
			c.Put(acct, startdeliver.KindUser, startdeliver.Match{Field: "externalId", Value: "z"}, 77)
			ids["z"] = 77
			lookup("z")
		}, 7},
		{"other account does not share entries", func() {
			srv.AddKey("k2")
			_, err := c.LookupID(ctx, startdeliver.Account{APIKey: "k2"}, startdeliver.KindUser, startdeliver.Match{Field: "externalId", Value: "z"})
			if !errors.Is(err, startdeliver.ErrNotFound) {
				t.Errorf("LookupID(other account) error = %v, want ErrNotFound", err)
			}
		}, 8},
		{"not found is not cached", func() {
			_, _ = c.LookupID(ctx, startdeliver.Account{APIKey: "k2"}, startdeliver.KindUser, startdeliver.Match{Field: "externalId", Value: "z"})
		}, 9},
	}
	for _, s := range steps {
		s.do()
		if n := srv.Calls("GET /user"); n != s.wantFinds {
			t.Fatalf("after %q: finds = %d, want %d", s.name, n, s.wantFinds)
		}
	}
}

func TestConcurrentLookupsShareOneRequest(t *testing.T) {
	c, srv, acct := newTestClient(t, startdeliver.Options{})
	id := srv.AddUser(testKey, map[string]any{"externalId": "u"})
	srv.SetLatency(50 * time.Millisecond)
	const n = 50
	var wg sync.WaitGroup
	errs := make(chan error, n)
	for range n {
		wg.Go(func() {
			got, err := c.LookupID(context.Background(), acct, startdeliver.KindUser, startdeliver.Match{Field: "externalId", Value: "u"})
			if err == nil && got != id {
				err = errors.New("wrong id")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatalf("LookupID() error = %v", err)
		}
	}
	if calls := srv.Calls("GET /user"); calls != 1 {
		t.Errorf("GET /user calls = %d for %d concurrent lookups, want 1", calls, n)
	}
}

func TestKnownUserCostsOneCallPerEvent(t *testing.T) {
	c, srv, acct := newTestClient(t, startdeliver.Options{})
	ctx := context.Background()
	m := startdeliver.Match{Field: "externalId", Value: "u"}
	srv.AddUser(testKey, map[string]any{"externalId": "u"})
	for i := range 10 {
		id, err := c.LookupID(ctx, acct, startdeliver.KindUser, m)
		if err != nil {
			t.Fatalf("LookupID() error = %v", err)
		}
		if _, err := c.RecordUsage(ctx, acct, startdeliver.Usage{User: id, Type: startdeliver.UsageTrack, Name: "e", Timestamp: time.Now(), ExternalID: string(rune('a' + i))}); err != nil {
			t.Fatalf("RecordUsage() error = %v", err)
		}
	}
	want := map[string]int{"GET /user": 1, "POST /usage": 10}
	if diff := cmp.Diff(want, srv.CallCounts()); diff != "" {
		t.Errorf("calls for 10 events of one known user (-want +got):\n%s", diff)
	}
}

func TestStaleCachedIDRecovers(t *testing.T) {
	c, srv, acct := newTestClient(t, startdeliver.Options{})
	ctx := context.Background()
	m := startdeliver.Match{Field: "externalId", Value: "u"}
	srv.AddUser(testKey, map[string]any{"externalId": "u"})
	old, err := c.LookupID(ctx, acct, startdeliver.KindUser, m)
	if err != nil {
		t.Fatal(err)
	}
	srv.Delete(testKey, "user", old)
	_, err = c.RecordUsage(ctx, acct, startdeliver.Usage{User: old, Type: startdeliver.UsageTrack, Name: "e", Timestamp: time.Now()})
	if !errors.Is(err, startdeliver.ErrNotFound) {
		t.Fatalf("RecordUsage(deleted user) error = %v, want ErrNotFound", err)
	}
	c.ForgetID(acct, startdeliver.KindUser, old)
	if id, err := c.LookupID(ctx, acct, startdeliver.KindUser, m); !errors.Is(err, startdeliver.ErrNotFound) {
		t.Fatalf("LookupID() after ForgetID = %d, %v; want ErrNotFound from Startdeliver, not the stale id", id, err)
	}
}

func TestDiff(t *testing.T) {
	found := startdeliver.Entity{
		"id": json.Number("1"), "name": "Ada", "score": json.Number("5"), "ratio": json.Number("0.5"),
		"active": true, "customer": map[string]any{"id": json.Number("9"), "name": "Acme"}, "tags": []any{"a"},
	}
	tests := []struct {
		name    string
		desired startdeliver.Fields
		want    startdeliver.Fields
	}{
		{"nothing desired", nil, nil},
		{"same values", startdeliver.Fields{"name": "Ada", "score": 5, "ratio": 0.5, "active": true, "tags": []string{"a"}}, nil},
		{"float equal to int", startdeliver.Fields{"score": 5.0}, nil},
		{"expanded reference equals id", startdeliver.Fields{"customer": int64(9)}, nil},
		{"changed and new", startdeliver.Fields{"name": "Ada L", "score": 5, "plan": "pro"}, startdeliver.Fields{"name": "Ada L", "plan": "pro"}},
		{"type change is a change", startdeliver.Fields{"score": "5"}, startdeliver.Fields{"score": "5"}},
		{"other customer", startdeliver.Fields{"customer": int64(10)}, startdeliver.Fields{"customer": int64(10)}},
		{"null clears", startdeliver.Fields{"name": nil}, startdeliver.Fields{"name": nil}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := startdeliver.Diff(found, tt.desired); !cmp.Equal(got, tt.want) {
				t.Errorf("Diff(%v) = %v, want %v", tt.desired, got, tt.want)
			}
		})
	}
}

// BenchmarkKnownUserEvent measures one track event for a known user: a
// cached lookup plus the usage record. It reports API calls per event
// (want 1) and, as a baseline in the same run, the uncached path.
func BenchmarkKnownUserEvent(b *testing.B) {
	for _, bc := range []struct {
		name  string
		cache startdeliver.CacheConfig
	}{{"cached", startdeliver.CacheConfig{}}, {"uncached-baseline", startdeliver.CacheConfig{Disabled: true}}} {
		b.Run(bc.name, func(b *testing.B) {
			srv := startdelivertest.NewServer(testKey)
			defer srv.Close()
			c := startdeliver.New(startdeliver.Options{DefaultBaseURL: srv.URL(), Cache: bc.cache, RateLimit: startdeliver.RateLimit{Disabled: true}})
			acct := startdeliver.Account{APIKey: testKey}
			ctx := context.Background()
			m := startdeliver.Match{Field: "externalId", Value: "u"}
			srv.AddUser(testKey, map[string]any{"externalId": "u"})
			b.ResetTimer()
			for range b.N {
				id, err := c.LookupID(ctx, acct, startdeliver.KindUser, m)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := c.RecordUsage(ctx, acct, startdeliver.Usage{User: id, Type: startdeliver.UsageTrack, Name: "e", Timestamp: time.Now()}); err != nil {
					b.Fatal(err)
				}
			}
			b.ReportMetric(float64(srv.TotalCalls())/float64(b.N), "calls/event")
		})
	}
}
