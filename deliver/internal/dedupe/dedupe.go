// Package dedupe is deliver's record of completed events, so that an event
// redelivered by Pub/Sub or re-sent by Segment has no second effect in
// Startdeliver (which cannot list usage records).
//
// Records live in Firestore, one document per (account, messageId), with an
// expireAt field for a TTL policy; they are kept at least 7 days, longer
// than Segment retries (4 hours) and Pub/Sub retains messages (7 days). A
// bounded process-local cache in front answers redeliveries to the same
// instance without a read.
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
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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
	col  *firestore.CollectionRef
	now  func() time.Time
	size int

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
	return &Store{col: client.Collection(opts.Collection), now: opts.Now, size: opts.CacheSize, lru: list.New(), index: map[string]*list.Element{}}
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
// cannot tell (retryable).
func (s *Store) Done(ctx context.Context, accountID, messageID string) (bool, error) {
	k := Key(accountID, messageID)
	if s.cached(k) {
		return true, nil
	}
	s.mu.Lock()
	s.reads++
	s.mu.Unlock()
	snap, err := s.col.Doc(k).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("read completion %s: %w", messageID, err)
	}
	if exp, ok := snap.Data()["expireAt"].(time.Time); ok && exp.Before(s.now()) {
		return false, nil // expired, awaiting the TTL sweep
	}
	s.remember(k)
	return true, nil
}

// Complete records the event as done. It is remembered in process even when
// the write fails, so this instance never repeats it; the error tells the
// caller the record may not be durable.
func (s *Store) Complete(ctx context.Context, accountID, messageID, outcome string) error {
	k := Key(accountID, messageID)
	s.remember(k)
	now := s.now()
	_, err := s.col.Doc(k).Set(ctx, map[string]any{
		"accountId":   accountID,
		"messageId":   messageID,
		"outcome":     outcome,
		"completedAt": now,
		"expireAt":    now.Add(Retention),
	})
	if err != nil {
		return fmt.Errorf("record completion %s: %w", messageID, err)
	}
	return nil
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
