// Package accountstore reads and writes the accounts collection in
// Firestore (docs/api.md §5) and caches what it reads, for ingest's key check
// and deliver's configuration alike.
//
// Caching rules: a document read is kept for TTL (CONFIG_CACHE_TTL, 10
// minutes at most); concurrent lookups of one account share one read; and
// when Firestore fails, the last good entry is served for up to StaleFor
// rather than failing every event.
//
// Unknown accounts cost bounded memory and, where the caller asks for it,
// bounded reads. Anyone can send ingest a random key, so unknown ids are
// remembered for NegativeTTL in an expirable LRU of at most NegativeSize
// entries (hashicorp/golang-lru/v2/expirable: a well-kept, size- and
// time-bounded cache, where the map it replaces kept every random id
// forever); a flood of random keys evicts only other random keys' entries,
// never a real account's, which live in their own cache bounded by the
// collection. The listener-fed set of all account ids would bound reads too,
// but a new account's first events would then be refused until the
// listener caught up, or the whole collection would have to be held in each
// instance. Instead, with UnknownReadsPerSecond set (ingest sets it), reads
// of ids never seen to exist pass a token bucket: a random-key flood costs
// at most that many reads a second per instance, and a lookup refused by it
// fails with ErrThrottled, which ingest answers 503 so that a real new
// account's events are retried, not lost. deliver leaves it unset: its ids
// come from ingest's messages, and throttling them would spend delivery
// attempts.
package accountstore

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/hashicorp/golang-lru/v2/expirable"
	"golang.org/x/sync/singleflight"
	"golang.org/x/time/rate"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startdeliver/segment-destination/shared/abbrev"
	"github.com/startdeliver/segment-destination/shared/account"
)

// Errors Check and Get return; any other error means "cannot tell now".
var (
	ErrUnknown  = errors.New("unknown account")
	ErrDisabled = errors.New("account disabled")
	// ErrThrottled is a lookup of an id never seen to exist, refused
	// because such reads are at UnknownReadsPerSecond: retry later.
	ErrThrottled = errors.New("too many lookups of unknown accounts; retry later")
)

// MaxTTL is the longest a configuration may be cached (the product promises
// changes show within 10 minutes).
const MaxTTL = 10 * time.Minute

// Entry is what the store knows of one account.
type Entry struct {
	// ID is the document id: the SHA-256 of the account's API key.
	ID string
	// Disabled is read even from a document that fails validation, so that
	// disabling always works.
	Disabled bool
	// Account is the decoded document, nil when it could not be decoded.
	Account *account.Account
	// Compiled is the ready-to-run configuration, nil when Invalid is set.
	Compiled *account.Compiled
	// Invalid is why the document cannot be used (decoding or validation),
	// or nil. Events of an invalid account are dead-lettered by deliver
	// with this message, so that its owner can fix the config and replay.
	Invalid error
}

// Options configure a Store.
type Options struct {
	Collection  string        // ACCOUNTS_COLLECTION, default "accounts"
	TTL         time.Duration // CONFIG_CACHE_TTL, default and maximum 10m
	NegativeTTL time.Duration // how long an unknown id is remembered, default 30s
	StaleFor    time.Duration // how long the last good entry outlives a failing Firestore, default 1h
	// NegativeSize bounds how many unknown ids are remembered (default
	// 10,000, about 1 MB).
	NegativeSize int
	// UnknownReadsPerSecond, when more than 0, bounds the Firestore reads
	// of ids not known to exist (not cached as an account), with bursts of
	// UnknownReadBurst (default 4 × the rate).
	UnknownReadsPerSecond float64
	UnknownReadBurst      int
	Now                   func() time.Time
}

type cached struct {
	entry   *Entry
	fetched time.Time
}

// Store is the accounts collection with a read cache. Safe for concurrent
// use.
type Store struct {
	fs    *firestore.Client
	col   string
	opts  Options
	group singleflight.Group

	mu    sync.RWMutex
	cache map[string]cached // accounts that exist (bounded by the collection)

	// unknown holds when each unknown id was found absent; its own expiry
	// (real time) frees memory, freshness is judged with opts.Now.
	unknown *expirable.LRU[string, time.Time]
	limit   *rate.Limiter // nil: reads of unknown ids are not limited
}

// New returns a Store over client.
func New(client *firestore.Client, opts Options) *Store {
	if opts.Collection == "" {
		opts.Collection = "accounts"
	}
	if opts.TTL <= 0 || opts.TTL > MaxTTL {
		opts.TTL = MaxTTL
	}
	if opts.NegativeTTL <= 0 {
		opts.NegativeTTL = 30 * time.Second
	}
	if opts.NegativeTTL > opts.TTL {
		opts.NegativeTTL = opts.TTL
	}
	if opts.StaleFor <= 0 {
		opts.StaleFor = time.Hour
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.NegativeSize <= 0 {
		opts.NegativeSize = 10_000
	}
	s := &Store{fs: client, col: opts.Collection, opts: opts, cache: make(map[string]cached),
		unknown: expirable.NewLRU[string, time.Time](opts.NegativeSize, nil, opts.NegativeTTL)}
	if opts.UnknownReadsPerSecond > 0 {
		burst := opts.UnknownReadBurst
		if burst <= 0 {
			burst = max(1, int(4*opts.UnknownReadsPerSecond))
		}
		s.limit = rate.NewLimiter(rate.Limit(opts.UnknownReadsPerSecond), burst)
	}
	return s
}

// Unknown is how many unknown ids the store remembers now.
func (s *Store) Unknown() int { return s.unknown.Len() }

// Check reports whether the account may send events: nil, ErrUnknown,
// ErrDisabled, or another error when Firestore cannot be reached. An
// account with a broken configuration may still send: deliver
// dead-letters its events with the reason, so they can be replayed.
func (s *Store) Check(ctx context.Context, id string) error {
	e, err := s.Get(ctx, id)
	if err != nil {
		return err
	}
	if e.Disabled {
		return ErrDisabled
	}
	return nil
}

// Get returns the account's entry, from the cache when fresh. It returns
// ErrUnknown for an id with no document.
func (s *Store) Get(ctx context.Context, id string) (*Entry, error) {
	e, _, err := s.Lookup(ctx, id)
	return e, err
}

// Lookup is Get that also tells where the entry came from: SourceCache,
// SourceFirestore (read now) or SourceStale (the last good entry, Firestore
// failing).
func (s *Store) Lookup(ctx context.Context, id string) (*Entry, Source, error) {
	now := s.opts.Now()
	s.mu.RLock()
	c, ok := s.cache[id]
	s.mu.RUnlock()
	if ok && now.Sub(c.fetched) < s.opts.TTL {
		return c.entry, SourceCache, nil
	}
	if !ok {
		if at, known := s.unknown.Get(id); known && now.Sub(at) < s.opts.NegativeTTL {
			return nil, SourceCache, ErrUnknown
		}
		if s.limit != nil && !s.limit.AllowN(now, 1) {
			return nil, SourceFirestore, ErrThrottled
		}
	}
	v, err, _ := s.group.Do(id, func() (any, error) {
		return s.load(context.WithoutCancel(ctx), id)
	})
	if err != nil {
		// Serve the last good entry while Firestore is unavailable.
		if ok && c.entry != nil && now.Sub(c.fetched) < s.opts.StaleFor && !errors.Is(err, ErrUnknown) {
			return c.entry, SourceStale, nil
		}
		return nil, SourceFirestore, err
	}
	return v.(*Entry), SourceFirestore, nil
}

// Source tells where Lookup found an entry.
type Source string

// Where an entry came from.
const (
	SourceCache     Source = "cache"
	SourceFirestore Source = "firestore"
	SourceStale     Source = "stale"
)

// load reads one document and caches the result, unknown included.
func (s *Store) load(ctx context.Context, id string) (*Entry, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	snap, err := s.fs.Collection(s.col).Doc(id).Get(ctx)
	if status.Code(err) == codes.NotFound {
		s.mu.Lock()
		delete(s.cache, id) // a deleted account is unknown now
		s.mu.Unlock()
		s.unknown.Add(id, s.opts.Now())
		return nil, ErrUnknown
	}
	if err != nil {
		return nil, fmt.Errorf("read account %s: %w", abbrev.ID(id), err)
	}
	e := entryFrom(id, snap.Data())
	s.remember(id, e)
	return e, nil
}

func (s *Store) remember(id string, e *Entry) {
	s.unknown.Remove(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cache[id] = cached{entry: e, fetched: s.opts.Now()}
}

// Forget drops one account from the cache, so that the next Get reads it.
func (s *Store) Forget(id string) {
	s.unknown.Remove(id)
	s.mu.Lock()
	defer s.mu.Unlock()
	delete(s.cache, id)
}

// entryFrom decodes, validates and compiles one document.
func entryFrom(id string, data map[string]any) *Entry {
	e := &Entry{ID: id}
	if d, ok := data["disabled"].(bool); ok {
		e.Disabled = d
	}
	a, err := account.FromMap(data)
	if err != nil {
		e.Invalid = fmt.Errorf("account %s: %w", abbrev.ID(id), err)
		return e
	}
	e.Account = a
	e.Disabled = a.Disabled
	c, err := account.Compile(a)
	if err != nil {
		e.Invalid = fmt.Errorf("account %s: %w", abbrev.ID(id), err)
		return e
	}
	e.Compiled = c
	return e
}

// Put validates a and writes it as the account of apiKey's id. The key
// itself is never written.
func (s *Store) Put(ctx context.Context, id string, a *account.Account) error {
	if _, err := account.Compile(a); err != nil {
		return fmt.Errorf("account %s: %w", abbrev.ID(id), err)
	}
	doc := s.fs.Collection(s.col).Doc(id)
	err := retryIdempotent(ctx, func() error {
		_, err := doc.Set(ctx, a.Map())
		return err
	})
	if err != nil {
		return fmt.Errorf("write account %s: %w", abbrev.ID(id), err)
	}
	s.Forget(id)
	return nil
}

// Delete removes the account with id. Deleting an unknown id is not an
// error.
func (s *Store) Delete(ctx context.Context, id string) error {
	doc := s.fs.Collection(s.col).Doc(id)
	err := retryIdempotent(ctx, func() error {
		_, err := doc.Delete(ctx)
		return err
	})
	if err != nil {
		return fmt.Errorf("delete account %s: %w", abbrev.ID(id), err)
	}
	s.Forget(id)
	return nil
}

// writeAttempts is how many times Put and Delete try their one write.
const writeAttempts = 3

// retryIdempotent runs write, an idempotent whole-document write, again
// when it failed in a way that says nothing of the document: the server
// ended the call (Canceled or DeadlineExceeded while ctx itself still
// runs), Aborted, or Unavailable after the client library's own retries.
// Firestore's client retries a Commit only on Unavailable and
// ResourceExhausted, yet a set or delete of a whole document has the same
// effect however many times it lands. Anything else, and ctx's own end,
// returns at once.
func retryIdempotent(ctx context.Context, write func() error) error {
	var err error
	for attempt := 1; ; attempt++ {
		if err = write(); err == nil || attempt == writeAttempts || !transientWrite(ctx, err) {
			return err
		}
		t := time.NewTimer(time.Duration(attempt) * 50 * time.Millisecond)
		select {
		case <-ctx.Done():
			t.Stop()
			return err
		case <-t.C:
		}
	}
}

// transientWrite reports whether a failed write may pass if tried again.
func transientWrite(ctx context.Context, err error) bool {
	if ctx.Err() != nil {
		return false
	}
	switch status.Code(err) {
	case codes.Canceled, codes.DeadlineExceeded, codes.Aborted, codes.Unavailable:
		return true
	}
	return false
}

// Read reads one account from Firestore, bypassing the cache.
func (s *Store) Read(ctx context.Context, id string) (*Entry, error) {
	snap, err := s.fs.Collection(s.col).Doc(id).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return nil, ErrUnknown
	}
	if err != nil {
		return nil, fmt.Errorf("read account %s: %w", abbrev.ID(id), err)
	}
	return entryFrom(id, snap.Data()), nil
}

// List reads every account, bypassing the cache.
func (s *Store) List(ctx context.Context) ([]*Entry, error) {
	docs, err := s.fs.Collection(s.col).Documents(ctx).GetAll()
	if err != nil {
		return nil, fmt.Errorf("list accounts: %w", err)
	}
	out := make([]*Entry, 0, len(docs))
	for _, d := range docs {
		out = append(out, entryFrom(d.Ref.ID, d.Data()))
	}
	return out, nil
}

// Listen keeps the cache in step with the collection until ctx ends: a
// changed or deleted document is dropped from the cache at once, so the
// next Get reads it. The TTL stays the upper bound when the listener is
// down. It returns ctx's error, or the listener's.
func (s *Store) Listen(ctx context.Context) error {
	it := s.fs.Collection(s.col).Snapshots(ctx)
	defer it.Stop()
	for {
		snap, err := it.Next()
		if err != nil {
			if ctx.Err() != nil {
				return ctx.Err()
			}
			return fmt.Errorf("listen to accounts: %w", err)
		}
		for _, ch := range snap.Changes {
			s.Forget(ch.Doc.Ref.ID)
		}
	}
}
