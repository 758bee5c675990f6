// Package identity makes sure two events for the same new person create one
// Startdeliver user (or customer), also when they are processed at once by
// different streams or instances. Before creating, a creator claims the
// (account, kind, field, value) key in Firestore in a transaction; others
// wait for the claim's result instead of creating a second entity.
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
	"math/rand/v2"
	"time"

	"cloud.google.com/go/firestore"
	"github.com/google/uuid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
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

// Options configure Claims.
type Options struct {
	Collection string        // default "identities"
	Wait       time.Duration // how long Acquire waits for another creator, default 5s
	Now        func() time.Time
}

// Claims coordinates creations. Safe for concurrent use.
type Claims struct {
	fs    *firestore.Client
	col   *firestore.CollectionRef
	wait  time.Duration
	now   func() time.Time
	owner string
}

// New returns Claims over client.
func New(client *firestore.Client, opts Options) *Claims {
	if opts.Collection == "" {
		opts.Collection = "identities"
	}
	if opts.Wait <= 0 {
		opts.Wait = 5 * time.Second
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Claims{fs: client, col: client.Collection(opts.Collection), wait: opts.Wait, now: opts.Now, owner: uuid.NewString()}
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
func (c *Claims) Acquire(ctx context.Context, key string) (*Claim, error) {
	deadline := c.now().Add(c.wait)
	backoff := 50 * time.Millisecond
	for {
		cl, pending, err := c.try(ctx, key)
		if err != nil {
			return nil, err
		}
		if !pending {
			return cl, nil
		}
		if c.now().After(deadline) {
			return nil, ErrBusy
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(backoff/2 + rand.N(backoff/2+1)):
		}
		backoff = min(backoff*2, time.Second)
	}
}

// try runs one transaction: take the claim when free or stale, return the
// id when created, or report pending.
func (c *Claims) try(ctx context.Context, key string) (cl *Claim, pending bool, err error) {
	ref := c.col.Doc(key)
	err = c.fs.RunTransaction(ctx, func(ctx context.Context, tx *firestore.Transaction) error {
		cl, pending = nil, false
		now := c.now()
		snap, err := tx.Get(ref)
		takeover := false
		if err != nil && status.Code(err) != codes.NotFound {
			return err
		}
		if err == nil {
			d := snap.Data()
			state, _ := d["state"].(string)
			at, _ := d["at"].(time.Time)
			switch {
			case state == "created" && now.Sub(at) < Retention:
				id, _ := d["id"].(int64)
				cl = &Claim{ID: id, key: key}
				return nil
			case state == "pending" && now.Sub(at) < Stale && d["owner"] != c.owner:
				pending = true
				return nil
			case state == "pending":
				takeover = true
			}
		}
		cl = &Claim{TakenOver: takeover, key: key}
		return tx.Set(ref, map[string]any{"state": "pending", "owner": c.owner, "at": now, "expireAt": now.Add(Retention)})
	})
	if status.Code(err) == codes.Aborted {
		// Contention on the claim (its transactions kept being aborted, or
		// the emulator's lock timed out): others are at it, so wait as for
		// a pending claim rather than fail the event.
		return nil, true, nil
	}
	if err != nil {
		return nil, false, fmt.Errorf("claim identity: %w", err)
	}
	return cl, pending, nil
}

// Created records the id the claim holder made, for those waiting.
func (c *Claims) Created(ctx context.Context, cl *Claim, id int64) error {
	now := c.now()
	_, err := c.col.Doc(cl.key).Set(ctx, map[string]any{"state": "created", "id": id, "owner": c.owner, "at": now, "expireAt": now.Add(Retention)})
	if err != nil {
		return fmt.Errorf("record created identity: %w", err)
	}
	return nil
}

// Release gives up a claim whose creation failed, so that the next attempt
// need not wait for it to go stale.
func (c *Claims) Release(ctx context.Context, cl *Claim) error {
	_, err := c.col.Doc(cl.key).Delete(ctx, firestore.Exists)
	if err != nil && status.Code(err) != codes.NotFound {
		return fmt.Errorf("release identity claim: %w", err)
	}
	return nil
}
