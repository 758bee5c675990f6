package accountstore

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/gcpclient"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func mustParse(t *testing.T, s string) *account.Account {
	t.Helper()
	a, err := account.Parse([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return a
}

const acme = `{"name":"Acme","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId"}}`

func newStore(t *testing.T) (*Store, *clock, emulatortest.Env, string) {
	s, clk, env, col, _ := newCountedStore(t)
	return s, clk, env, col
}

// newCountedStore is newStore with its Firestore reads counted on the wire.
func newCountedStore(t *testing.T) (*Store, *clock, emulatortest.Env, string, *emulatortest.Wire) {
	env := emulatortest.Require(t)
	fs, wire := emulatortest.CountingFirestore(t, env)
	clk := &clock{t: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
	col := emulatortest.Name(t, "accounts")
	return New(fs, Options{Collection: col, TTL: time.Minute, NegativeTTL: 10 * time.Second, Now: clk.Now}), clk, env, col, wire
}

func TestPutGetListDelete(t *testing.T) {
	s, _, _, _ := newStore(t)
	ctx := context.Background()
	key := "sd-secret-abc"
	id := envelope.AccountID(key)
	if err := s.Put(ctx, id, mustParse(t, acme)); err != nil {
		t.Fatal(err)
	}
	e, err := s.Read(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if e.Invalid != nil || e.Account.Name != "Acme" || e.Compiled == nil {
		t.Fatalf("Read = %+v, want a valid Acme", e)
	}
	for k, v := range e.Account.Map() {
		if s, ok := v.(string); ok && strings.Contains(s, key) {
			t.Errorf("stored field %s holds the API key", k)
		}
	}
	list, err := s.List(ctx)
	if err != nil || len(list) != 1 || list[0].ID != id {
		t.Fatalf("List = %v, %v; want the one account", list, err)
	}
	if err := s.Delete(ctx, id); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, id); !errors.Is(err, ErrUnknown) {
		t.Errorf("Get after Delete = %v, want ErrUnknown", err)
	}
}

func TestPutRejectsInvalid(t *testing.T) {
	s, _, _, _ := newStore(t)
	a := mustParse(t, `{"name":"x","settings":{}}`)
	err := s.Put(context.Background(), "id", a)
	if err == nil || !strings.Contains(err.Error(), "startdeliverUserCustomFieldToMatchOn") {
		t.Errorf("Put(no match field) = %v, want a validation error naming the key", err)
	}
	if _, err := s.Read(context.Background(), "id"); !errors.Is(err, ErrUnknown) {
		t.Errorf("an invalid account was written: %v", err)
	}
}

func TestCacheAndStampede(t *testing.T) {
	s, clk, _, _, wire := newCountedStore(t)
	ctx := context.Background()
	id := envelope.AccountID("k1")
	if err := s.Put(ctx, id, mustParse(t, acme)); err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 50 {
		wg.Go(func() {
			if err := s.Check(ctx, id); err != nil {
				t.Errorf("Check = %v", err)
			}
		})
	}
	wg.Wait()
	if got := wire.Reads.Load(); got != 1 {
		t.Errorf("50 concurrent lookups made %d reads, want 1", got)
	}
	if _, src, _ := s.Lookup(ctx, id); src != SourceCache {
		t.Errorf("Lookup within TTL came from %s, want the cache", src)
	}
	clk.Add(59 * time.Second)
	_ = s.Check(ctx, id)
	if got := wire.Reads.Load(); got != 1 {
		t.Errorf("within TTL: %d reads, want 1", got)
	}
	clk.Add(2 * time.Second)
	_ = s.Check(ctx, id)
	if got := wire.Reads.Load(); got != 2 {
		t.Errorf("after TTL: %d reads, want 2", got)
	}
}

func TestUnknownKeysCachedBriefly(t *testing.T) {
	s, clk, _, _, wire := newCountedStore(t)
	ctx := context.Background()
	for range 100 {
		if err := s.Check(ctx, "no-such-account"); !errors.Is(err, ErrUnknown) {
			t.Fatalf("Check(unknown) = %v, want ErrUnknown", err)
		}
	}
	if got := wire.Reads.Load(); got != 1 {
		t.Errorf("100 checks of one bad key made %d reads, want 1", got)
	}
	clk.Add(11 * time.Second)
	_ = s.Check(ctx, "no-such-account")
	if got := wire.Reads.Load(); got != 2 {
		t.Errorf("after the negative TTL: %d reads, want 2", got)
	}
}

// TestUnknownKeysBounded: random keys cost at most NegativeSize entries and,
// with UnknownReadsPerSecond, at most the bucket's reads; a real account
// already cached is never throttled, and one not yet cached is refused with
// ErrThrottled (ingest answers 503, Segment retries) until the bucket
// refills.
func TestUnknownKeysBounded(t *testing.T) {
	env := emulatortest.Require(t)
	fs, wire := emulatortest.CountingFirestore(t, env)
	clk := &clock{t: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)}
	s := New(fs, Options{Collection: emulatortest.Name(t, "accounts"), TTL: time.Minute, NegativeTTL: 10 * time.Second,
		NegativeSize: 20, UnknownReadsPerSecond: 1, UnknownReadBurst: 30, Now: clk.Now})
	ctx := context.Background()
	known := envelope.AccountID("sd-real")
	if err := s.Put(ctx, known, mustParse(t, acme)); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx, known); err != nil {
		t.Fatalf("Check(real) = %v", err)
	}
	reads0 := wire.Reads.Load()
	var unknown, throttled int
	for i := range 200 {
		switch err := s.Check(ctx, envelope.AccountID(fmt.Sprint("random-", i))); {
		case errors.Is(err, ErrUnknown):
			unknown++
		case errors.Is(err, ErrThrottled):
			throttled++
		default:
			t.Fatalf("Check(random) = %v", err)
		}
	}
	if got := wire.Reads.Load() - reads0; got != 29 {
		t.Errorf("200 random keys made %d reads, want 29 (the bucket of 30 less the real account's first read)", got)
	}
	if unknown != 29 || throttled != 171 {
		t.Errorf("unknown, throttled = %d, %d; want 29, 171", unknown, throttled)
	}
	if n := s.Unknown(); n > 20 {
		t.Errorf("%d unknown ids remembered, want at most 20", n)
	}
	if err := s.Check(ctx, known); err != nil {
		t.Errorf("Check(real, cached) during the flood = %v, want nil", err)
	}
	other := envelope.AccountID("sd-real-2")
	if err := s.Put(ctx, other, mustParse(t, acme)); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx, other); !errors.Is(err, ErrThrottled) {
		t.Errorf("Check(new real account) with the bucket empty = %v, want ErrThrottled", err)
	}
	clk.Add(time.Second)
	if err := s.Check(ctx, other); err != nil {
		t.Errorf("Check(new real account) a second later = %v, want nil", err)
	}
}

func TestDisabledAndInvalid(t *testing.T) {
	s, _, env, col := newStore(t)
	ctx := context.Background()
	fs := emulatortest.Firestore(t, env)
	if _, err := fs.Collection(col).Doc("disabled").Set(ctx, map[string]any{"name": "d", "disabled": true, "settings": map[string]any{"startdeliverUserCustomFieldToMatchOn": "x"}}); err != nil {
		t.Fatal(err)
	}
	if _, err := fs.Collection(col).Doc("broken").Set(ctx, map[string]any{"name": "b", "settings": map[string]any{}, "segmentApp": map[string]any{"enabled": true, "userMapping": []any{map[string]any{"externalField": "traits.x"}}}}); err != nil {
		t.Fatal(err)
	}
	if err := s.Check(ctx, "disabled"); !errors.Is(err, ErrDisabled) {
		t.Errorf("Check(disabled) = %v, want ErrDisabled", err)
	}
	if err := s.Check(ctx, "broken"); err != nil {
		t.Errorf("Check(broken config) = %v, want nil (deliver dead-letters its events)", err)
	}
	e, err := s.Get(ctx, "broken")
	if err != nil {
		t.Fatal(err)
	}
	if e.Invalid == nil || e.Compiled != nil || !strings.Contains(e.Invalid.Error(), "startdeliverUserCustomFieldToMatchOn") {
		t.Errorf("Get(broken).Invalid = %v, want the validation message", e.Invalid)
	}
}

func TestServesLastGoodWhenFirestoreFails(t *testing.T) {
	env := emulatortest.Require(t)
	ctx := context.Background()
	fs, err := gcpclient.Firestore(ctx, env.Project, "", env.Getenv(nil))
	if err != nil {
		t.Fatal(err)
	}
	clk := &clock{t: time.Now()}
	col := emulatortest.Name(t, "accounts")
	s := New(fs, Options{Collection: col, TTL: time.Minute, StaleFor: time.Hour, Now: clk.Now})
	if err := s.Put(ctx, "a", mustParse(t, acme)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	fs.Close() // Firestore is now unreachable for this store
	clk.Add(2 * time.Minute)
	e, src, err := s.Lookup(ctx, "a")
	if err != nil || e.Account.Name != "Acme" || src != SourceStale {
		t.Errorf("Lookup with Firestore down = %v, %s, %v; want the last good Acme, stale", e, src, err)
	}
	if _, err := s.Get(ctx, "never-seen"); err == nil || errors.Is(err, ErrUnknown) {
		t.Errorf("Get(never seen) with Firestore down = %v, want an unavailable error (not ErrUnknown)", err)
	}
	clk.Add(2 * time.Hour)
	if _, err := s.Get(ctx, "a"); err == nil {
		t.Errorf("Get after StaleFor = nil error, want Firestore's")
	}
}

func TestListenerSeesChangesBeforeTTL(t *testing.T) {
	s, _, env, col := newStore(t)
	other := emulatortest.Firestore(t, env) // a writer that is not this store
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	id := "listened"
	if err := s.Put(ctx, id, mustParse(t, acme)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, id); err != nil {
		t.Fatal(err)
	}
	errc := make(chan error, 1)
	go func() { errc <- s.Listen(ctx) }()
	// First wait until the listener is live: a marker document, rewritten
	// until the store sees it change (a write made while the listen is
	// still being set up may reach only its first snapshot, which can
	// predate it; on a loaded machine that took the emulator over 20 s).
	if err := s.Put(ctx, "marker", mustParse(t, acme)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Get(ctx, "marker"); err != nil {
		t.Fatal(err)
	}
	n := 0
	waitfor.Within(t, 60*time.Second, "the listener is live", func() bool {
		select {
		case err := <-errc:
			t.Fatalf("Listen ended: %v", err)
		default:
		}
		if e, err := s.Get(ctx, "marker"); err == nil && strings.HasPrefix(e.Account.Name, "Marked") {
			return true
		}
		n++
		marked := mustParse(t, strings.Replace(acme, "Acme", fmt.Sprint("Marked ", n), 1))
		if _, err := other.Collection(col).Doc("marker").Set(ctx, marked.Map()); err != nil {
			t.Fatal(err)
		}
		return false
	})
	// Another writer changes the document: only the listener can tell the
	// store, the TTL (a minute on a clock that does not move) will not.
	renamed := mustParse(t, strings.Replace(acme, "Acme", "Acme Renamed", 1))
	if _, err := other.Collection(col).Doc(id).Set(ctx, renamed.Map()); err != nil {
		t.Fatal(err)
	}
	waitfor.Within(t, 20*time.Second, "the change seen", func() bool {
		select {
		case err := <-errc:
			t.Fatalf("Listen ended before the change was seen: %v", err)
		default:
		}
		e, err := s.Get(ctx, id)
		return err == nil && e.Account.Name == "Acme Renamed"
	})
	cancel()
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Errorf("Listen = %v, want context.Canceled", err)
	}
}
