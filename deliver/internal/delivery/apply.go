package delivery

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/shared/lookup"
	"github.com/startdeliver/segment-destination/shared/plan"
)

// applier carries a plan out in Startdeliver: the customer first (so that
// the user can link to it), then the user, then the usage record. It finds
// before it creates, creates a new person once across concurrent events
// (in process) and instances (claims), and owns the id cache: what it finds
// or creates it remembers, an id Startdeliver answers 404 for it forgets.
// The client it calls is HTTP calls only. Safe for concurrent use.
type applier struct {
	client *startdeliver.Client
	claims claims
	ids    *ids
	log    *slog.Logger

	mu       sync.Mutex
	creating map[string]*creation // by identity key, in this process
}

// creation is one entity being created in this process; done closes when
// id or err is set.
type creation struct {
	done chan struct{}
	id   int64
	err  error
}

func newApplier(c *startdeliver.Client, cl claims, cache CacheConfig, log *slog.Logger) *applier {
	return &applier{client: c, claims: cl, ids: newIDs(cache), log: log, creating: map[string]*creation{}}
}

// job is one plan to apply: the account, its turn (given back while the
// event waits for another event's creation), the plan.
type job struct {
	acct      startdeliver.Account
	accountID string
	turn      *turn
	plan      *plan.Plan
	received  time.Time // the usage's time when the event has none
}

// apply runs j's plan and returns the user and customer ids it resolved.
func (a *applier) apply(ctx context.Context, j job) (userID, customerID int64, err error) {
	pl := j.plan
	if pl.Customer != nil {
		if customerID, err = a.upsert(ctx, j, startdeliver.KindCustomer, pl.Customer, nil); err != nil {
			return 0, 0, fmt.Errorf("customer: %w", err)
		}
	}
	if pl.User != nil {
		var link startdeliver.Fields
		if pl.Link && customerID != 0 {
			link = startdeliver.Fields{"customer": customerID}
		}
		if userID, err = a.upsert(ctx, j, startdeliver.KindUser, pl.User, link); err != nil {
			return 0, customerID, fmt.Errorf("user: %w", err)
		}
	}
	if pl.Usage == nil {
		return userID, customerID, nil
	}
	u := startdeliver.Usage{
		User: userID, Customer: customerID, Type: pl.Usage.Type, Name: pl.Usage.Name,
		Timestamp: pl.Usage.Timestamp, Properties: pl.Usage.Properties, ExternalID: pl.Usage.ExternalID,
	}
	if u.Timestamp.IsZero() {
		u.Timestamp = j.received
	}
	_, err = a.client.RecordUsage(ctx, j.acct, u)
	if errors.Is(err, startdeliver.ErrNotFound) {
		// The cached user is gone from Startdeliver: forget it, resolve the
		// user again (creating it if need be), and record once more.
		a.ids.forgetID(idPrefix(j.accountID, j.acct.BaseURL, startdeliver.KindUser), userID)
		if u.User, err = a.upsert(ctx, j, startdeliver.KindUser, pl.User, nil); err != nil {
			return 0, customerID, fmt.Errorf("user: %w", err)
		}
		userID = u.User
		_, err = a.client.RecordUsage(ctx, j.acct, u)
	}
	if err != nil {
		return userID, customerID, fmt.Errorf("record usage: %w", err)
	}
	return userID, customerID, nil
}

// upsert finds the entity, updates what changed, or creates it. extra are
// fields to set on top of the plan's (the user's link to its customer).
func (a *applier) upsert(ctx context.Context, j job, kind startdeliver.Kind, e *plan.Upsert, extra startdeliver.Fields) (int64, error) {
	m := e.Match
	key := idKey(j.accountID, j.acct.BaseURL, kind, m)
	update := merge(startdeliver.Fields(e.Update), extra)
	if len(update) == 0 {
		// Nothing to change: the cached id is all that is needed.
		id, err := a.ids.lookup(ctx, key, func(ctx context.Context) (int64, error) {
			found, err := a.client.Find(ctx, j.acct, kind, m)
			if err != nil {
				return 0, err
			}
			id, _ := found.ID() // Find answers only entities with an id
			return id, nil
		})
		if !errors.Is(err, startdeliver.ErrNotFound) {
			return id, err
		}
	} else {
		found, err := a.client.Find(ctx, j.acct, kind, m)
		if err == nil {
			id, _ := found.ID() // Find answers only entities with an id
			// Only what changed is sent (lookup.Diff, the rule explain predicts with).
			if changed := lookup.Diff(found, update); len(changed) > 0 {
				if _, err := a.client.Update(ctx, j.acct, kind, id, changed); err != nil {
					return 0, err
				}
			}
			a.ids.put(key, id)
			return id, nil
		}
		if !errors.Is(err, startdeliver.ErrNotFound) {
			return 0, err
		}
	}
	id, mine, err := a.create(ctx, j, kind, key, m, merge(startdeliver.Fields(e.Create), extra))
	if err != nil {
		return 0, err
	}
	if !mine && len(update) > 0 {
		// Another event created it with its own fields: apply ours.
		if _, err := a.client.Update(ctx, j.acct, kind, id, update); err != nil {
			return 0, err
		}
	}
	return id, nil
}

// create makes a new entity once: in this process the first event to need
// it creates it and the others wait for its result without holding a slot;
// across instances a claim does the same. mine reports whether this event's
// fields made it.
func (a *applier) create(ctx context.Context, j job, kind startdeliver.Kind, idKey string, m plan.Match, fields startdeliver.Fields) (id int64, mine bool, err error) {
	key := identity.Key(j.accountID, string(kind), m.Field, m.Value)
	a.mu.Lock()
	c, waiting := a.creating[key]
	if !waiting {
		c = &creation{done: make(chan struct{})}
		a.creating[key] = c
	}
	a.mu.Unlock()
	if waiting {
		j.turn.pause()
		select {
		case <-c.done:
		case <-ctx.Done():
			return 0, false, fmt.Errorf("wait for another event's new %s: %w", kind, ctx.Err())
		}
		if err := j.turn.resume(ctx); err != nil {
			return 0, false, fmt.Errorf("resume after another event's new %s: %w", kind, err)
		}
		return c.id, false, c.err
	}
	c.id, mine, c.err = a.createOnce(ctx, j, key, kind, m, fields)
	if c.err == nil {
		a.ids.put(idKey, c.id)
	}
	a.mu.Lock()
	delete(a.creating, key)
	a.mu.Unlock()
	close(c.done)
	return c.id, mine, c.err
}

func (a *applier) createOnce(ctx context.Context, j job, key string, kind startdeliver.Kind, m plan.Match, fields startdeliver.Fields) (int64, bool, error) {
	// A claim another instance holds is waited for without a slot.
	j.turn.pause()
	cl, err := a.claims.Acquire(ctx, key)
	if rerr := j.turn.resume(ctx); rerr != nil && err == nil {
		_ = a.claims.Release(context.WithoutCancel(ctx), cl)
		err = rerr
	}
	if err != nil {
		return 0, false, fmt.Errorf("claim new %s: %w", kind, err)
	}
	if cl.ID != 0 {
		// Another instance created it moments ago.
		return cl.ID, false, nil
	}
	if cl.TakenOver {
		// Its previous creator vanished, perhaps after creating it.
		if found, err := a.client.Find(ctx, j.acct, kind, m); err == nil {
			id, _ := found.ID()
			_ = a.claims.Created(ctx, cl, id)
			return id, false, nil
		}
	}
	created, err := a.client.Create(ctx, j.acct, kind, fields)
	if err != nil {
		_ = a.claims.Release(context.WithoutCancel(ctx), cl)
		return 0, false, err
	}
	id, _ := created.ID() // Create answers only entities with an id
	if err := a.claims.Created(context.WithoutCancel(ctx), cl, id); err != nil {
		a.log.WarnContext(ctx, "identity claim not updated; others wait for it to go stale", "error", err)
	}
	return id, true, nil
}

func merge(a, b startdeliver.Fields) startdeliver.Fields {
	if len(b) == 0 {
		return a
	}
	out := make(startdeliver.Fields, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
