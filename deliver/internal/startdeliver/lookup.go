package startdeliver

import (
	"context"
	"errors"
	"fmt"
	"maps"
	"sync"
	"time"
)

// LookupID returns the id of the entity of kind matching m, from the cache
// when known, else by Find (then cached). Concurrent lookups of the same
// key share one request. "Not found" is ErrNotFound and is not cached.
func (c *Client) LookupID(ctx context.Context, acct Account, kind Kind, m Match) (int64, error) {
	key := cacheKey(acct, kind, m)
	if id, ok := c.cache.get(key); ok {
		return id, nil
	}
	r, err := c.shared(ctx, "lookup\x00"+key, func(ctx context.Context) (any, error) {
		if id, ok := c.cache.get(key); ok {
			return id, nil
		}
		e, err := c.Find(ctx, acct, kind, m)
		if err != nil {
			return int64(0), err
		}
		id, _ := e.ID()
		c.cache.put(key, id)
		return id, nil
	})
	if err != nil {
		return 0, err
	}
	return r.(int64), nil
}

// FindOrCreate returns the id of the entity of kind matching m, creating it
// with create (plus m.Field = m.Value) when none exists; created reports
// whether this call created it (of concurrent callers sharing one create,
// only the one whose request ran it; none if that one gave up early).
//
// The cache answers known keys without a call, and concurrent calls for the
// same key in this process share one find and at most one create (they also
// wait for an Upsert of the same key).
//
// A failed create is not repeated here: the error is returned (retryable or
// not) and the caller's next attempt finds first.
func (c *Client) FindOrCreate(ctx context.Context, acct Account, kind Kind, m Match, create Fields) (id int64, created bool, err error) {
	key := cacheKey(acct, kind, m)
	if id, ok := c.cache.get(key); ok {
		return id, false, nil
	}
	type result struct {
		id      int64
		created bool
	}
	ran := false // set only in the caller whose function runs: the one that may create
	r, err := c.shared(ctx, "create\x00"+key, func(ctx context.Context) (any, error) {
		ran = true
		unlock, err := c.locks.lock(ctx, key)
		if err != nil {
			return nil, err
		}
		defer unlock()
		if id, ok := c.cache.get(key); ok {
			return result{id: id}, nil
		}
		e, err := c.Find(ctx, acct, kind, m)
		if err == nil {
			id, _ := e.ID()
			c.cache.put(key, id)
			return result{id: id}, nil
		}
		if !errors.Is(err, ErrNotFound) {
			return nil, err
		}
		e, err = c.Create(ctx, acct, kind, withMatch(create, m))
		if err != nil {
			return nil, err
		}
		id, _ := e.ID()
		c.cache.put(key, id)
		return result{id: id, created: true}, nil
	})
	if err != nil {
		return 0, false, err
	}
	res := r.(result)
	return res.id, res.created && ran, nil
}

// UpsertResult tells what Upsert did.
type UpsertResult struct {
	// Entity is Startdeliver's latest answer for the entity.
	Entity Entity
	// ID is the entity's id.
	ID int64
	// Created is true when the entity did not exist and was created.
	Created bool
	// Updated is true when an existing entity differed and was PATCHed.
	Updated bool
}

// Upsert makes the entity of kind matching m hold desired: it finds the
// entity (always asking Startdeliver, since it needs the current fields),
// PATCHes only the fields that differ (no call when none do), or creates it
// with desired plus m.Field = m.Value. Concurrent Upserts and FindOrCreates
// of the same key in this process run one after the other, so they create
// one entity, not two. The id is cached.
func (c *Client) Upsert(ctx context.Context, acct Account, kind Kind, m Match, desired Fields) (UpsertResult, error) {
	key := cacheKey(acct, kind, m)
	unlock, err := c.locks.lock(ctx, key)
	if err != nil {
		return UpsertResult{}, fmt.Errorf("startdeliver: upsert %s: %w", kind, err)
	}
	defer unlock()
	found, err := c.Find(ctx, acct, kind, m)
	switch {
	case err == nil:
		id, _ := found.ID()
		c.cache.put(key, id)
		e, updated, err := c.UpdateChanged(ctx, acct, kind, found, desired)
		if err != nil {
			if errors.Is(err, ErrNotFound) {
				c.cache.forget(key)
			}
			return UpsertResult{}, err
		}
		return UpsertResult{Entity: e, ID: id, Updated: updated}, nil
	case errors.Is(err, ErrNotFound):
		e, err := c.Create(ctx, acct, kind, withMatch(desired, m))
		if err != nil {
			return UpsertResult{}, err
		}
		id, _ := e.ID()
		c.cache.put(key, id)
		return UpsertResult{Entity: e, ID: id, Created: true}, nil
	default:
		return UpsertResult{}, err
	}
}

// Put records that the entity of kind matching m has id (for example after
// a create made elsewhere).
func (c *Client) Put(acct Account, kind Kind, m Match, id int64) {
	c.cache.put(cacheKey(acct, kind, m), id)
}

// Forget drops the cached id of the entity of kind matching m.
func (c *Client) Forget(acct Account, kind Kind, m Match) {
	c.cache.forget(cacheKey(acct, kind, m))
}

// ForgetID drops every cached key of the account and kind that points at
// id: call it when Startdeliver answers 404 for a cached id (a PATCH or a
// usage record). It returns how many entries were dropped.
func (c *Client) ForgetID(acct Account, kind Kind, id int64) int {
	prefix := acct.KeyHash() + "\x00" + acct.BaseURL + "\x00" + string(kind) + "\x00"
	return c.cache.forgetID(prefix, id)
}

func withMatch(f Fields, m Match) Fields {
	out := make(Fields, len(f)+1)
	maps.Copy(out, f)
	if _, ok := out[m.Field]; !ok && m.Value != nil {
		out[m.Field] = m.Value
	}
	return out
}

// shared runs fn once for concurrent callers with the same key. fn runs
// detached from any one caller's cancellation (bounded by the first
// caller's deadline, and by SharedCallTimeout),
// so one caller giving up does not fail the others; each caller still
// returns as soon as its own context ends. fn happens before the result is
// received, so state fn writes is visible to the caller whose fn ran.
func (c *Client) shared(ctx context.Context, key string, fn func(context.Context) (any, error)) (any, error) {
	ch := c.group.DoChan(key, func() (any, error) {
		// Detached from the caller's cancellation, but not from its
		// deadline (its delivery's budget): retries within the call stop
		// where that caller's would, and the call never outlives it.
		deadline := time.Now().Add(c.sharedTO)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		defer cancel()
		return fn(sctx)
	})
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case r := <-ch:
		return r.Val, r.Err
	}
}

// keyLocks is a set of context-aware mutexes created on demand, one per key.
type keyLocks struct {
	mu sync.Mutex
	m  map[string]*keyLock
}

type keyLock struct {
	ch   chan struct{} // holds a token while locked
	refs int
}

// lock acquires key's mutex or returns ctx's error; unlock releases it.
func (l *keyLocks) lock(ctx context.Context, key string) (unlock func(), err error) {
	l.mu.Lock()
	if l.m == nil {
		l.m = map[string]*keyLock{}
	}
	kl, ok := l.m[key]
	if !ok {
		kl = &keyLock{ch: make(chan struct{}, 1)}
		l.m[key] = kl
	}
	kl.refs++
	l.mu.Unlock()
	release := func() {
		l.mu.Lock()
		kl.refs--
		if kl.refs == 0 {
			delete(l.m, key)
		}
		l.mu.Unlock()
	}
	select {
	case kl.ch <- struct{}{}:
		return func() { <-kl.ch; release() }, nil
	case <-ctx.Done():
		release()
		return nil, ctx.Err()
	}
}
