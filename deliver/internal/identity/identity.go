// Package identity makes sure two events for the same new person create one
// Startdeliver user (or customer), also when they are processed at once by
// different streams or instances. Before creating, a creator claims the
// (account, kind, field, value) key in Firestore (a document created only if
// absent); others wait for the claim's result instead of creating a second
// entity.
//
// A claim is short-lived: once the entity exists, Startdeliver's own search
// finds it, so a claim's result is trusted for Retention only, and a claim
// whose creator vanished is taken over after Stale (the new creator looks
// the entity up first, in case the vanished one did create it).
package identity

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startdeliver/segment-destination/deliver/internal/retry"
)

// Durations of a claim.
const (
	// Stale is how long a pending claim blocks others.
	Stale = 30 * time.Second
	// Retention is how long a created entity's id is served from its claim.
	Retention = 15 * time.Minute
)

// ErrBusy means another creator holds the claim and has not finished within
// the wait: retry later.
var ErrBusy = errors.New("identity: another creator holds the claim")

// Options configure a Registry.
type Options struct {
	Collection string        // default "identities"
	Wait       time.Duration // how long Acquire waits for another creator, default 5s
	Now        func() time.Time
}

// Registry holds the creation claims of every instance, in Firestore, and
// coordinates creations through them. Safe for concurrent use.
type Registry struct {
	col   *firestore.CollectionRef
	wait  time.Duration
	now   func() time.Time
	owner string
}

// New returns a Registry over client.
func New(client *firestore.Client, opts Options) *Registry {
	if opts.Collection == "" {
		opts.Collection = "identities"
	}
	if opts.Wait <= 0 {
		opts.Wait = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Registry{col: client.Collection(opts.Collection), wait: opts.Wait, now: opts.Now, owner: uuid.NewString()}
}

// Key names one identity: the account, the entity kind, and the match.
func Key(accountID, kind, field string, value any) string {
	v, _ := json.Marshal(value)
	sum := sha256.Sum256([]byte(accountID + "\x00" + kind + "\x00" + field + "\x00" + string(v)))
	return hex.EncodeToString(sum[:])
}

// Claim is the result of Acquire.
type Claim struct {
	// ID is the entity's id when another creator already made it; zero when
	// the caller holds the claim and must create the entity.
	ID int64
	// TakenOver reports that the caller took over a claim whose creator
	// vanished: it must look the entity up before creating it.
	TakenOver bool
	key       string
}

// Acquire claims key for creation, or returns the id another creator made.
// It waits up to the configured wait for a pending claim, then returns
// ErrBusy.
func (c *Registry) Acquire(ctx context.Context, key string) (*Claim, error) {
	// The wait is real time (its pauses are), whatever clock dates claims.
	deadline := time.Now().Add(c.wait)
	for n := 1; ; n++ {
		cl, pending, err := c.try(ctx, key)
		if err != nil {
			return nil, err
		}
		if !pending {
			return cl, nil
		}
		if time.Now().After(deadline) {
			return nil, ErrBusy
		}
		if err := retry.Sleep(ctx, retry.Backoff(n, 50*time.Millisecond, time.Second)); err != nil {
			return nil, err
		}
	}
}

// try makes one attempt: take the claim when free or stale, return the id
// when created, or report pending. It uses no transaction: a claim is
// created only if absent and taken over only if unchanged since it was
// read (preconditions the server checks), so many instances contending for
// one new person never hold locks on it, and whoever loses a race simply
// waits and looks again.
func (c *Registry) try(ctx context.Context, key string) (cl *Claim, pending bool, err error) {
	ref := c.col.Doc(key)
	now := c.now()
	snap, err := ref.Get(ctx)
	if status.Code(err) == codes.NotFound {
		_, err = ref.Create(ctx, c.pending(now))
		switch {
		case status.Code(err) == codes.AlreadyExists:
			return nil, true, nil
		case err != nil:
			return nil, false, fmt.Errorf("claim identity: %w", err)
		}
		return &Claim{key: key}, false, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("claim identity: read: %w", err)
	}
	d := snap.Data()
	state, _ := d["state"].(string)
	at, _ := d["at"].(time.Time)
	switch {
	case state == "created" && now.Sub(at) < Retention:
		id, _ := d["id"].(int64)
		return &Claim{ID: id, key: key}, false, nil
	case state == "pending" && now.Sub(at) < Stale && d["owner"] != c.owner:
		return nil, true, nil
	}
	// Free to take: a stale claim (its creator vanished), an expired
	// result, or our own earlier claim. Only if nobody changed it since.
	fields := c.pending(now)
	updates := make([]firestore.Update, 0, len(fields)+1)
	for k, v := range fields {
		updates = append(updates, firestore.Update{Path: k, Value: v})
	}
	updates = append(updates, firestore.Update{Path: "id", Value: firestore.Delete})
	_, err = ref.Update(ctx, updates, firestore.LastUpdateTime(snap.UpdateTime))
	switch code := status.Code(err); {
	case code == codes.FailedPrecondition || code == codes.NotFound || code == codes.Aborted:
		// Changed (or released) since we read it: look again.
		return nil, true, nil
	case err != nil:
		return nil, false, fmt.Errorf("claim identity: take over: %w", err)
	}
	return &Claim{TakenOver: state == "pending", key: key}, false, nil
}

// pending is a claim document held by this owner from now.
func (c *Registry) pending(now time.Time) map[string]any {
	return map[string]any{"state": "pending", "owner": c.owner, "at": now, "expireAt": now.Add(Retention)}
}

// Created records the id the claim holder made, for those waiting.
func (c *Registry) Created(ctx context.Context, cl *Claim, id int64) error {
	now := c.now()
	_, err := c.col.Doc(cl.key).Set(ctx, map[string]any{"state": "created", "id": id, "owner": c.owner, "at": now, "expireAt": now.Add(Retention)})
	if err != nil {
		return fmt.Errorf("record created identity: %w", err)
	}
	return nil
}

// Release gives up a claim whose creation failed, so that the next attempt
// need not wait for it to go stale.
func (c *Registry) Release(ctx context.Context, cl *Claim) error {
	_, err := c.col.Doc(cl.key).Delete(ctx, firestore.Exists)
	if err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("release identity claim: %w", err)
	}
	return nil
}
