package delivery

import (
	"container/list"
	"context"
	"encoding/json"
	"strings"
	"sync"
	"time"

	"golang.org/x/sync/singleflight"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/shared/plan"
)

// CacheConfig bounds the applier's id cache: (account, kind, field, value)
// → the Startdeliver id of the user or customer that matches.
type CacheConfig struct {
	// Disabled turns the cache off: every lookup calls Startdeliver.
	Disabled bool
	// Size is the most entries kept; the least recently used goes first (default 10,000).
	Size int
	// TTL is how long an entry is trusted (default 10 minutes).
	TTL time.Duration
	// Now is the cache's clock (default time.Now); tests move it to expire entries.
	Now func() time.Time
}

func (c CacheConfig) withDefaults() CacheConfig {
	if c.Size <= 0 {
		c.Size = 10_000
	}
	if c.TTL <= 0 {
		c.TTL = 10 * time.Minute
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// sharedFindTimeout bounds a find shared by concurrent lookups, which runs
// detached from any one caller's cancellation.
const sharedFindTimeout = 30 * time.Second

// ids is what the applier knows of Startdeliver's ids, so that a known
// person costs one call per event (its usage record): a size- and
// time-bounded LRU map. The applier puts what it finds and creates, and
// forgets an id Startdeliver answers 404 for. Concurrent lookups of one key
// share one find. Safe for concurrent use.
type ids struct {
	cfg   CacheConfig
	group singleflight.Group

	mu    sync.Mutex
	order *list.List // front = most recently used; values are *idEntry
	items map[string]*list.Element
}

type idEntry struct {
	key     string
	id      int64
	expires time.Time
}

func newIDs(cfg CacheConfig) *ids {
	return &ids{cfg: cfg.withDefaults(), order: list.New(), items: map[string]*list.Element{}}
}

// idKey names an entity by the account's id (the key's hash, never the
// key), its base URL, the kind, the field and the value's JSON form (so 5
// and "5" differ, as they do in a Startdeliver filter).
func idKey(accountID, baseURL string, kind startdeliver.Kind, m plan.Match) string {
	v, err := json.Marshal(m.Value)
	if err != nil {
		v = []byte("?")
	}
	return idPrefix(accountID, baseURL, kind) + m.Field + "\x00" + string(v)
}

func idPrefix(accountID, baseURL string, kind startdeliver.Kind) string {
	return accountID + "\x00" + baseURL + "\x00" + string(kind) + "\x00"
}

// lookup returns the id cached under key, or else runs find (once for
// concurrent callers of one key) and caches its answer. A find's error,
// startdeliver.ErrNotFound included, is returned and not cached. find runs
// detached from any one caller's cancellation (bounded by the first
// caller's deadline, its delivery's budget, and by sharedFindTimeout), so
// that one caller giving up does not fail the others; each caller still
// returns as soon as its own context ends.
func (c *ids) lookup(ctx context.Context, key string, find func(context.Context) (int64, error)) (int64, error) {
	if id, ok := c.get(key); ok {
		return id, nil
	}
	ch := c.group.DoChan(key, func() (any, error) {
		if id, ok := c.get(key); ok {
			return id, nil
		}
		deadline := time.Now().Add(sharedFindTimeout)
		if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
			deadline = d
		}
		sctx, cancel := context.WithDeadline(context.WithoutCancel(ctx), deadline)
		defer cancel()
		id, err := find(sctx)
		if err != nil {
			return int64(0), err
		}
		c.put(key, id)
		return id, nil
	})
	select {
	case <-ctx.Done():
		return 0, ctx.Err()
	case r := <-ch:
		return r.Val.(int64), r.Err
	}
}

func (c *ids) get(key string) (int64, bool) {
	if c.cfg.Disabled {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return 0, false
	}
	e := el.Value.(*idEntry)
	if !c.cfg.Now().Before(e.expires) {
		c.order.Remove(el)
		delete(c.items, key)
		return 0, false
	}
	c.order.MoveToFront(el)
	return e.id, true
}

func (c *ids) put(key string, id int64) {
	if c.cfg.Disabled {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	exp := c.cfg.Now().Add(c.cfg.TTL)
	if el, ok := c.items[key]; ok {
		e := el.Value.(*idEntry)
		e.id, e.expires = id, exp
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&idEntry{key: key, id: id, expires: exp})
	for c.order.Len() > c.cfg.Size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*idEntry).key)
	}
}

func (c *ids) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.Remove(el)
		delete(c.items, key)
	}
}

// forgetID drops every entry under prefix (account and kind) that points
// at id: Startdeliver no longer knows it, whatever matched it.
func (c *ids) forgetID(prefix string, id int64) {
	c.mu.Lock()
	defer c.mu.Unlock()
	for key, el := range c.items {
		if e := el.Value.(*idEntry); e.id == id && strings.HasPrefix(key, prefix) {
			c.order.Remove(el)
			delete(c.items, key)
		}
	}
}
