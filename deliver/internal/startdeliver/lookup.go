package startdeliver

import (
	"context"
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
