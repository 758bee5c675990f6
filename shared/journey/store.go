package journey

import (
	"context"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"
	"google.golang.org/api/iterator"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// ErrNotFound is the answer for an event with no record: unknown, another
// account's, expired, or not processed yet.
var ErrNotFound = errors.New("no record of this event")

// Reader reads records from Firestore. It never writes. Safe for concurrent
// use.
type Reader struct {
	col *firestore.CollectionRef
	now func() time.Time
}

// NewReader returns a Reader of collection (deliver's DELIVERIES_COLLECTION).
func NewReader(client *firestore.Client, collection string) *Reader {
	return &Reader{col: client.Collection(collection), now: time.Now}
}

// Get returns the account's record of messageID: one document read. A
// record of another account, or one past its expiry, is ErrNotFound like no
// record at all.
func (r *Reader) Get(ctx context.Context, accountID, messageID string) (*Record, error) {
	snap, err := r.col.Doc(DocumentID(accountID, messageID)).Get(ctx)
	if status.Code(err) == codes.NotFound {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("read event record: %w", err)
	}
	var rec Record
	if err := snap.DataTo(&rec); err != nil {
		return nil, fmt.Errorf("decode event record: %w", err)
	}
	if rec.AccountID != accountID || rec.MessageID != messageID || r.expired(&rec) {
		return nil, ErrNotFound
	}
	return &rec, nil
}

func (r *Reader) expired(rec *Record) bool {
	return !rec.ExpireAt.IsZero() && rec.ExpireAt.Before(r.now())
}

// Filter narrows a listing. Empty fields match everything.
type Filter struct {
	UserID string
	Type   string
	Status string
	// Limit is how many records to return (1 to MaxLimit; 0 means DefaultLimit).
	Limit int
}

// Listing limits.
const (
	DefaultLimit = 50
	MaxLimit     = 200
)

// List returns the account's records that match f, newest first. It reads
// one document per record returned (at least one read per query, as
// Firestore bills), plus the expired ones it skips. Every combination of filters is served by a composite
// index declared in infra/ (accountId, then the filters, then completedAt
// descending).
func (r *Reader) List(ctx context.Context, accountID string, f Filter) ([]*Record, error) {
	limit := f.Limit
	if limit <= 0 {
		limit = DefaultLimit
	}
	limit = min(limit, MaxLimit)
	q := r.col.Where("accountId", "==", accountID)
	if f.UserID != "" {
		q = q.Where("userId", "==", f.UserID)
	}
	if f.Type != "" {
		q = q.Where("type", "==", f.Type)
	}
	if f.Status != "" {
		q = q.Where("status", "==", f.Status)
	}
	q = q.OrderBy("completedAt", firestore.Desc).Limit(limit)
	out := make([]*Record, 0, limit)
	// Records past their expiry still wait for the TTL sweep (up to a day):
	// they are skipped, and the next page fills their place, a few pages at
	// most.
	var last *firestore.DocumentSnapshot
	for page := 0; page < maxPages && len(out) < limit; page++ {
		pq := q
		if last != nil {
			pq = q.StartAfter(last)
		}
		n, err := r.page(ctx, pq, accountID, limit, &out, &last)
		if err != nil {
			return nil, err
		}
		if n < limit {
			break // no more records
		}
	}
	return out, nil
}

// maxPages bounds the pages one listing reads.
const maxPages = 4

// page reads one page of q into out (up to limit records in all) and
// returns how many documents it read; last is set to the last one.
func (r *Reader) page(ctx context.Context, q firestore.Query, accountID string, limit int, out *[]*Record, last **firestore.DocumentSnapshot) (int, error) {
	it := q.Documents(ctx)
	defer it.Stop()
	n := 0
	for {
		snap, err := it.Next()
		if errors.Is(err, iterator.Done) {
			return n, nil
		}
		if err != nil {
			return n, fmt.Errorf("list event records: %w", err)
		}
		n++
		*last = snap
		var rec Record
		if err := snap.DataTo(&rec); err != nil {
			return n, fmt.Errorf("decode event record %s: %w", snap.Ref.ID, err)
		}
		if rec.AccountID != accountID || r.expired(&rec) || len(*out) >= limit {
			continue
		}
		*out = append(*out, &rec)
	}
}
