// Package dedupe is deliver's record of completed events, so that an event
// redelivered by Pub/Sub or re-sent by Segment has no second effect in
// Startdeliver (which cannot list usage records).
//
// Records live in Firestore, one document per (account, messageId), with an
// expireAt field for a TTL policy; they are kept at least 7 days, longer
// than Segment retries (4 hours) and Pub/Sub retains messages (7 days). A
// bounded process-local cache in front answers redeliveries to the same
// instance without a read.
//
// Concurrent checks share Firestore round trips: the checks that arrive
// while a read is in flight go together in one BatchGetDocuments call when
// it returns (shared/batch, self-clocked); a lone check goes at once. A
// completion record is never batched: it leaves at once (Complete).
package dedupe

import (
	"container/list"
	"context"
	"fmt"
	"sync"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startdeliver/segment-destination/shared/batch"
	"github.com/startdeliver/segment-destination/shared/journey"
)

// Retention is how long a completion is remembered.
const Retention = 8 * 24 * time.Hour

// Options configure a Store.
type Options struct {
	Collection string // default "deliveries"
	CacheSize  int    // completions remembered in process, default 100,000
	Now        func() time.Time
}

// Store records and checks completed events. Safe for concurrent use.
type Store struct {
	client *firestore.Client
	col    *firestore.CollectionRef
	now    func() time.Time
	size   int
	gets   *batch.Batcher[*op] // Done's reads

	mu    sync.Mutex
	lru   *list.List // of string keys, most recent first
	index map[string]*list.Element
}

// New returns a Store over client.
func New(client *firestore.Client, opts Options) *Store {
	if opts.Collection == "" {
		opts.Collection = "deliveries"
	}
	if opts.CacheSize <= 0 {
		opts.CacheSize = 100_000
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{client: client, col: client.Collection(opts.Collection), now: opts.Now, size: opts.CacheSize, lru: list.New(), index: map[string]*list.Element{}}
	s.gets = batch.New(s.read, readOptions())
	return s
}

// Key is the document id of a completion: it names the account and the
// messageId without holding either in the clear.
func Key(accountID, messageID string) string {
	return journey.DocumentID(accountID, messageID)
}

// Done reports whether the event was completed before. An error means it
// cannot tell (retryable). It returns when its read is answered or ctx ends,
// whichever is first; the read of a caller who stopped waiting may still be
// made for others in its batch.
func (s *Store) Done(ctx context.Context, accountID, messageID string) (bool, error) {
	k := Key(accountID, messageID)
	if s.cached(k) {
		return true, nil
	}
	if err := ctx.Err(); err != nil {
		return false, fmt.Errorf("read completion %s: %w", messageID, err)
	}
	o := &op{key: k, done: make(chan result, 1)}
	ticket, err := s.gets.Add(ctx, o)
	if err != nil {
		return false, fmt.Errorf("read completion %s: %w", messageID, err)
	}
	select {
	case r := <-o.done:
		if r.err != nil {
			return false, fmt.Errorf("read completion %s: %w", messageID, r.err)
		}
		return r.completed, nil
	case <-ctx.Done():
		s.gets.Withdraw(ticket)
		return false, fmt.Errorf("read completion %s: %w", messageID, ctx.Err())
	}
}

// Record is what is kept of a processed event: its journey
// (shared/journey), which ingest's event console reads back. A delivered or
// skipped record makes later copies duplicates; a dead-lettered or retrying
// one does not (journey.Completed).
type Record = journey.Record

// Complete writes the event's record, its one write when it is finished
// (delivered or skipped). It is remembered in process even when the write
// fails, so this instance never repeats it; the error tells the caller the
// record may not be durable: its write failed, or ctx ended before the write
// was confirmed. CompletedAt and ExpireAt are set here.
//
// The write leaves at once, in a call of its own, not batched with others:
// between an event's effects in Startdeliver and its record, a crash makes a
// redelivery repeat them, so that window is kept to one Firestore write.
func (s *Store) Complete(ctx context.Context, r *Record) error {
	k := Key(r.AccountID, r.MessageID)
	if journey.Completed(r.Status) {
		s.remember(k)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("record completion %s: %w", r.MessageID, err)
	}
	s.stamp(r)
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := s.col.Doc(k).Set(ctx, r); err != nil {
		return fmt.Errorf("record completion %s: %w", r.MessageID, err)
	}
	return nil
}

func (s *Store) stamp(r *Record) {
	now := s.now()
	if r.CompletedAt.IsZero() {
		r.CompletedAt = now
	}
	r.ExpireAt = r.CompletedAt.Add(Retention)
}

// Failed writes the record of an event that did not complete: dead-lettered
// or retrying. It never replaces a completed record (another copy of the
// event may have completed meanwhile, on another instance): it creates the
// document, and only where one exists already reads it in a transaction and
// replaces it unless it is completed. It is not remembered in process.
func (s *Store) Failed(ctx context.Context, r *Record) error {
	if journey.Completed(r.Status) {
		return fmt.Errorf("record failure %s: status %q is a completion", r.MessageID, r.Status)
	}
	s.stamp(r)
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	ref := s.col.Doc(Key(r.AccountID, r.MessageID))
	_, err := ref.Create(ctx, r)
	if status.Code(err) != codes.AlreadyExists {
		if err != nil {
			return fmt.Errorf("record failure %s: %w", r.MessageID, err)
		}
		return nil
	}
	err = s.client.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		snap, err := tx.Get(ref)
		if err != nil {
			return err
		}
		if st, _ := snap.Data()["status"].(string); journey.Completed(st) {
			return nil
		}
		return tx.Set(ref, r)
	})
	if err != nil {
		return fmt.Errorf("record failure %s: %w", r.MessageID, err)
	}
	return nil
}

// Duplicate notes on a completed event's record that another copy came and
// had no effect: its status becomes duplicate, the journey stays. A record
// that is gone (expired, or its write failed) is left alone.
func (s *Store) Duplicate(ctx context.Context, accountID, messageID string) error {
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := s.col.Doc(Key(accountID, messageID)).Update(ctx, []firestore.Update{
		{Path: "status", Value: journey.StatusDuplicate},
		{Path: "duplicates", Value: firestore.Increment(1)},
		{Path: "lastDuplicateAt", Value: s.now()},
	})
	if err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("record duplicate %s: %w", messageID, err)
	}
	return nil
}

// read answers a batch of Done calls with one BatchGetDocuments call.
func (s *Store) read(ctx context.Context, ops []*op) error {
	refs, waiting := s.byDocument(ops)
	snaps, err := s.client.GetAll(ctx, refs)
	if err == nil && len(snaps) != len(refs) {
		err = fmt.Errorf("firestore answered %d documents for %d", len(snaps), len(refs))
	}
	for i, ref := range refs {
		r := result{err: err}
		if err == nil && s.live(snaps[i]) {
			r.completed = true
			s.remember(ref.ID)
		}
		for _, o := range waiting[ref.ID] {
			o.done <- r
		}
	}
	return err
}

// live reports whether snap records a completion that has not expired.
func (s *Store) live(snap *firestore.DocumentSnapshot) bool {
	if !snap.Exists() {
		return false
	}
	data := snap.Data()
	if exp, ok := data["expireAt"].(time.Time); ok && exp.Before(s.now()) {
		return false // expired, awaiting the TTL sweep
	}
	st, _ := data["status"].(string)
	return journey.Completed(st) // a dead letter's replay must take effect
}

// byDocument returns the documents of ops, each once, in the order of the
// first op that names it, and the ops waiting for each by document id.
func (s *Store) byDocument(ops []*op) ([]*firestore.DocumentRef, map[string][]*op) {
	refs := make([]*firestore.DocumentRef, 0, len(ops))
	waiting := make(map[string][]*op, len(ops))
	for _, o := range ops {
		if _, ok := waiting[o.key]; !ok {
			refs = append(refs, s.col.Doc(o.key))
		}
		waiting[o.key] = append(waiting[o.key], o)
	}
	return refs, waiting
}

func (s *Store) cached(k string) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.index[k]; ok {
		s.lru.MoveToFront(el)
		return true
	}
	return false
}

func (s *Store) remember(k string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if el, ok := s.index[k]; ok {
		s.lru.MoveToFront(el)
		return
	}
	s.index[k] = s.lru.PushFront(k)
	for s.lru.Len() > s.size {
		last := s.lru.Back()
		s.lru.Remove(last)
		delete(s.index, last.Value.(string))
	}
}
