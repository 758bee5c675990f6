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
// it returns (see batcher); a lone check goes at once. A completion record
// is never batched: it leaves at once (Complete).
package dedupe

import (
	"container/list"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"sync"
	"time"

	"cloud.google.com/go/firestore"
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
	gets   *batcher // Done's reads

	mu    sync.Mutex
	lru   *list.List // of string keys, most recent first
	index map[string]*list.Element
	reads int64
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
	s.gets = newBatcher(maxBatch, s.read)
	return s
}

// Key is the document id of a completion: it names the account and the
// messageId without holding either in the clear.
func Key(accountID, messageID string) string {
	sum := sha256.Sum256([]byte(accountID + "\x00" + messageID))
	return hex.EncodeToString(sum[:])
}

// Reads is how many documents Done has read from Firestore.
func (s *Store) Reads() int64 {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.reads
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
	o := newOp(ctx, k, nil)
	s.gets.add(o)
	select {
	case r := <-o.done:
		if r.err != nil {
			return false, fmt.Errorf("read completion %s: %w", messageID, r.err)
		}
		return r.completed, nil
	case <-ctx.Done():
		s.gets.drop(o)
		return false, fmt.Errorf("read completion %s: %w", messageID, ctx.Err())
	}
}

// Record is what is kept of a completed event.
type Record struct {
	AccountID string
	MessageID string
	// Outcome is delivered or skipped.
	Outcome string
	// Class says why an event was skipped (anonymous, ...); empty otherwise.
	Class string
}

// Complete records the event as done. It is remembered in process even when
// the write fails, so this instance never repeats it; the error tells the
// caller the record may not be durable: its write failed, or ctx ended
// before the write was confirmed.
//
// The write leaves at once, in a call of its own, not batched with others:
// between an event's effects in Startdeliver and its record, a crash makes a
// redelivery repeat them, so that window is kept to one Firestore write.
func (s *Store) Complete(ctx context.Context, r Record) error {
	k := Key(r.AccountID, r.MessageID)
	s.remember(k)
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("record completion %s: %w", r.MessageID, err)
	}
	now := s.now()
	doc := map[string]any{
		"accountId":   r.AccountID,
		"messageId":   r.MessageID,
		"outcome":     r.Outcome,
		"completedAt": now,
		"expireAt":    now.Add(Retention),
	}
	if r.Class != "" {
		doc["class"] = r.Class
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	if _, err := s.col.Doc(k).Set(ctx, doc); err != nil {
		return fmt.Errorf("record completion %s: %w", r.MessageID, err)
	}
	return nil
}

// read answers a batch of Done calls with one BatchGetDocuments call.
func (s *Store) read(ctx context.Context, ops []*op) error {
	refs, waiting := s.byDocument(ops)
	s.mu.Lock()
	s.reads += int64(len(refs))
	s.mu.Unlock()
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
	if exp, ok := snap.Data()["expireAt"].(time.Time); ok && exp.Before(s.now()) {
		return false // expired, awaiting the TTL sweep
	}
	return true
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
