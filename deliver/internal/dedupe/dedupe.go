// Package dedupe is deliver's record of events, so that a copy of an event
// (a Pub/Sub redelivery, or Segment sending it again) has no second effect
// in Startdeliver, which cannot list usage records: not after the event
// completed, and not while it runs, on this instance or another.
//
// Records live in Firestore, one document per (account, messageId), with an
// expireAt field for a TTL policy; they are kept at least 7 days, longer
// than Segment retries (4 hours) and Pub/Sub retains messages (7 days). A
// bounded process-local cache in front answers redeliveries of completed
// events to the same instance without a call.
//
// # Claims
//
// Before an event runs, Claim creates its record with status pending and
// this instance as its owner, only if no record exists (a precondition
// Firestore checks). Whoever creates it runs the event; its outcome then
// replaces the record (Complete, Failed). A copy that finds a record
// instead reads it: a live completion makes it a duplicate; a pending
// claim of another instance, written less than Stale ago by Firestore's
// own clock (the document's update time against the read time, so no
// instance's clock is trusted), makes it wait (ErrHeld); anything else (a
// stale claim whose owner vanished, this instance's own earlier claim, a
// dead letter being replayed, a retrying event, an expired record) it
// takes over, only if the record is unchanged since it read it. So two
// copies of an event never run at the same moment, even without Pub/Sub
// ordering keys and on different instances; the claim costs what the
// check it replaces cost, one document in a batched call, and a copy pays
// one read more.
//
// Concurrent claims share Firestore round trips: the claims that arrive
// while a call is in flight go together in one BatchWrite call when it
// returns (shared/batch, self-clocked; through the client's BulkWriter,
// at most 20 writes a call so that a batch is one call); a lone claim goes
// at once. A completion record is never batched: it leaves at once
// (Complete).
package dedupe

import (
	"container/list"
	"context"
	"errors"
	"fmt"
	"reflect"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startdeliver/segment-destination/shared/batch"
	"github.com/startdeliver/segment-destination/shared/journey"
)

// Retention is how long a completion is remembered.
const Retention = 8 * 24 * time.Hour

// Stale is how long, by default, a pending claim keeps other copies of its
// event waiting, after which its owner is taken to have vanished. It must be
// well past a delivery's budget and the writes of its outcome: deliver sets
// twice their sum (14 s with the defaults, 5 s and 2 s).
const Stale = 30 * time.Second

// ErrHeld means another instance holds a fresh claim on the event: a copy
// of it is running there. Wait, then claim again.
var ErrHeld = errors.New("another copy of the event is running")

// Options configure a Store.
type Options struct {
	Collection string        // default "deliveries"
	CacheSize  int           // completions remembered in process, default 100,000
	Stale      time.Duration // default Stale
	Now        func() time.Time
}

// Store records, claims and checks events. Safe for concurrent use.
type Store struct {
	client *firestore.Client
	col    *firestore.CollectionRef
	now    func() time.Time
	size   int
	stale  time.Duration
	owner  string              // this instance, in its claims
	claims *batch.Batcher[*op] // Claim's creates

	// noBatchWrite is set once Firestore answered BatchWrite with
	// Unimplemented (the npm emulator): claims are then one Create each.
	noBatchWrite atomic.Bool

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
	if opts.Stale <= 0 {
		opts.Stale = Stale
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	s := &Store{client: client, col: client.Collection(opts.Collection), now: opts.Now, size: opts.CacheSize,
		stale: opts.Stale, owner: uuid.NewString(), lru: list.New(), index: map[string]*list.Element{}}
	s.claims = batch.New(s.claim, claimOptions())
	return s
}

// Key is the document id of a completion: it names the account and the
// messageId without holding either in the clear.
func Key(accountID, messageID string) string {
	return journey.DocumentID(accountID, messageID)
}

// Claim is the caller's hold on an event (Store.Claim).
type Claim struct {
	// Completed reports that an earlier copy completed the event: the
	// caller must not run it (a duplicate), and holds nothing.
	Completed bool
	key       string
	written   time.Time // the claim document's update time as this claim wrote it
}

// Claim makes the caller the one copy of r's event that runs, on any
// instance, or reports that an earlier copy completed it (Claim.Completed).
// r is the event's record as far as it is known before the event runs; it
// is written with status pending and this instance as its owner (the
// event console shows it so). ErrHeld means another instance's copy is
// running; any other error means it cannot tell (retryable). It returns
// when its call is answered or ctx ends, whichever is first; the claim of a
// caller who stopped waiting may still be written for others in its batch,
// and is then this instance's own to take over.
func (s *Store) Claim(ctx context.Context, r *Record) (*Claim, error) {
	k := Key(r.AccountID, r.MessageID)
	if s.cached(k) {
		return &Claim{Completed: true, key: k}, nil
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("claim event %s: %w", r.MessageID, err)
	}
	r.Status, r.Owner = journey.StatusPending, s.owner
	r.CompletedAt = time.Time{}
	s.stamp(r)
	o := &op{key: k, rec: r, done: make(chan result, 1)}
	ticket, err := s.claims.Add(ctx, o)
	if err != nil {
		return nil, fmt.Errorf("claim event %s: %w", r.MessageID, err)
	}
	select {
	case res := <-o.done:
		if res.err != nil {
			return nil, fmt.Errorf("claim event %s: %w", r.MessageID, res.err)
		}
		return res.claim, nil
	case <-ctx.Done():
		s.claims.Withdraw(ticket)
		return nil, fmt.Errorf("claim event %s: %w", r.MessageID, ctx.Err())
	}
}

// Release gives up a claim whose event ended without a record of its own
// (nacked before Startdeliver answered anything), so that the next copy,
// here or on another instance, need not wait for it to go stale. Only the
// claim as this instance wrote it is deleted: a record written since stays.
func (s *Store) Release(ctx context.Context, c *Claim) error {
	if c == nil || c.Completed {
		return nil
	}
	ctx, cancel := context.WithTimeout(ctx, callTimeout)
	defer cancel()
	_, err := s.col.Doc(c.key).Delete(ctx, firestore.LastUpdateTime(c.written))
	switch status.Code(err) {
	case codes.OK, codes.NotFound, codes.FailedPrecondition:
		return nil // released, or no longer ours to release
	}
	return fmt.Errorf("release claim: %w", err)
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

// claim answers a batch of Claim calls: one BatchWrite of creates, and for
// the documents that exist already one BatchGetDocuments and, where they
// may be taken over, one conditional update each.
func (s *Store) claim(ctx context.Context, ops []*op) error {
	refs, waiting := s.byDocument(ops)
	recs := make([]*Record, len(refs))
	for i, ref := range refs {
		recs[i] = waiting[ref.ID][0].rec
		// Further ops of one document in a batch are copies running here
		// at once (the delivery guard keeps them apart; none is expected):
		// they wait and claim again.
		for _, o := range waiting[ref.ID][1:] {
			o.done <- result{err: ErrHeld}
		}
	}
	written, errs, callErr := s.create(ctx, refs, recs)
	var exist []int
	for i, ref := range refs {
		o := waiting[ref.ID][0]
		switch status.Code(errs[i]) {
		case codes.OK:
			o.done <- result{claim: &Claim{key: ref.ID, written: written[i]}}
		case codes.AlreadyExists:
			exist = append(exist, i)
		default:
			o.done <- result{err: errs[i]}
		}
	}
	if len(exist) == 0 {
		return callErr
	}
	existing := make([]*firestore.DocumentRef, len(exist))
	for n, i := range exist {
		existing[n] = refs[i]
	}
	snaps, err := s.client.GetAll(ctx, existing)
	if err == nil && len(snaps) != len(existing) {
		err = fmt.Errorf("firestore answered %d documents for %d", len(snaps), len(existing))
	}
	for n, i := range exist {
		o := waiting[refs[i].ID][0]
		if err != nil {
			o.done <- result{err: fmt.Errorf("read record: %w", err)}
			continue
		}
		o.done <- s.settle(ctx, snaps[n], recs[i])
	}
	return callErr
}

// create writes each record only if its document is absent, in one
// BatchWrite call (errs[i] is AlreadyExists where one exists), or one Create
// each where Firestore has no BatchWrite. callErr is set when the whole
// call failed.
func (s *Store) create(ctx context.Context, refs []*firestore.DocumentRef, recs []*Record) (written []time.Time, errs []error, callErr error) {
	written, errs = make([]time.Time, len(refs)), make([]error, len(refs))
	if !s.noBatchWrite.Load() {
		bw := s.client.BulkWriter(ctx)
		jobs := make([]*firestore.BulkWriterJob, len(refs))
		for i, ref := range refs {
			jobs[i], errs[i] = bw.Create(ref, recs[i])
		}
		bw.End()
		unimplemented := 0
		for i, j := range jobs {
			if j == nil {
				continue
			}
			wr, err := j.Results()
			if wr != nil {
				written[i] = wr.UpdateTime
			}
			errs[i] = err
			switch code := status.Code(err); {
			case code == codes.Unimplemented:
				unimplemented++
			case err != nil && code != codes.AlreadyExists:
				callErr = err
			}
		}
		if unimplemented < len(refs) {
			return written, errs, callErr
		}
		s.noBatchWrite.Store(true)
		callErr = nil
	}
	var wg sync.WaitGroup
	for i, ref := range refs {
		wg.Go(func() {
			wr, err := ref.Create(ctx, recs[i])
			if wr != nil {
				written[i] = wr.UpdateTime
			}
			errs[i] = err
		})
	}
	wg.Wait()
	return written, errs, nil
}

// settle decides the claim of an event whose record exists (snap): a
// duplicate, held elsewhere, or taken over by rec.
func (s *Store) settle(ctx context.Context, snap *firestore.DocumentSnapshot, rec *Record) result {
	if s.live(snap) {
		s.remember(snap.Ref.ID)
		return result{claim: &Claim{Completed: true, key: snap.Ref.ID}}
	}
	d := snap.Data()
	st, _ := d["status"].(string)
	owner, _ := d["owner"].(string)
	if st == journey.StatusPending && owner != s.owner && snap.ReadTime.Sub(snap.UpdateTime) < s.stale {
		return result{err: ErrHeld}
	}
	// Free to take, only if nobody changed it since it was read.
	wr, err := snap.Ref.Update(ctx, replacement(rec), firestore.LastUpdateTime(snap.UpdateTime))
	switch status.Code(err) {
	case codes.OK:
		return result{claim: &Claim{key: snap.Ref.ID, written: wr.UpdateTime}}
	case codes.FailedPrecondition, codes.NotFound, codes.Aborted:
		return result{err: ErrHeld} // changed (or released) since it was read: look again
	}
	return result{err: fmt.Errorf("take over record: %w", err)}
}

// replacement is every field of rec as an update, so that a takeover leaves
// the document as Create would have written rec, with nothing of the record
// it took (a dead letter's reason and calls are not this attempt's): an
// empty omitempty field is deleted. Update, unlike Set, takes the
// precondition a takeover needs.
func replacement(rec *Record) []firestore.Update {
	v := reflect.ValueOf(rec).Elem()
	t := v.Type()
	ups := make([]firestore.Update, 0, t.NumField())
	for i := range t.NumField() {
		name, opts, _ := strings.Cut(t.Field(i).Tag.Get("firestore"), ",")
		if name == "" || name == "-" {
			continue
		}
		var val any = v.Field(i).Interface()
		if opts == "omitempty" && v.Field(i).IsZero() {
			val = firestore.Delete
		}
		ups = append(ups, firestore.Update{Path: name, Value: val})
	}
	return ups
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
