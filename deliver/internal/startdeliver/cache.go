package startdeliver

import (
	"container/list"
	"encoding/json"
	"sync"
	"time"
)

// CacheConfig bounds the lookup cache of (account, kind, field, value) → id.
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
	return c
}

// idCache is a size- and time-bounded LRU map. Safe for concurrent use.
type idCache struct {
	cfg   CacheConfig
	now   func() time.Time
	mu    sync.Mutex
	order *list.List // front = most recently used; values are *cacheEntry
	items map[string]*list.Element
}

type cacheEntry struct {
	key     string
	id      int64
	expires time.Time
}

func newIDCache(cfg CacheConfig) *idCache {
	cfg = cfg.withDefaults()
	now := cfg.Now
	if now == nil {
		now = time.Now
	}
	return &idCache{cfg: cfg, now: now, order: list.New(), items: map[string]*list.Element{}}
}

// cacheKey builds the key from the account's key hash (never the key), the
// kind, the field and the value's JSON form (so 5 and "5" differ, as they
// do in a Startdeliver filter).
func cacheKey(acct Account, kind Kind, m Match) string {
	v, err := json.Marshal(m.Value)
	if err != nil {
		v = []byte("?")
	}
	return acct.KeyHash() + "\x00" + acct.BaseURL + "\x00" + string(kind) + "\x00" + m.Field + "\x00" + string(v)
}

func (c *idCache) get(key string) (int64, bool) {
	if c.cfg.Disabled {
		return 0, false
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	el, ok := c.items[key]
	if !ok {
		return 0, false
	}
	e := el.Value.(*cacheEntry)
	if !c.now().Before(e.expires) {
		c.order.Remove(el)
		delete(c.items, key)
		return 0, false
	}
	c.order.MoveToFront(el)
	return e.id, true
}

func (c *idCache) put(key string, id int64) {
	if c.cfg.Disabled {
		return
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	exp := c.now().Add(c.cfg.TTL)
	if el, ok := c.items[key]; ok {
		e := el.Value.(*cacheEntry)
		e.id, e.expires = id, exp
		c.order.MoveToFront(el)
		return
	}
	c.items[key] = c.order.PushFront(&cacheEntry{key: key, id: id, expires: exp})
	for c.order.Len() > c.cfg.Size {
		last := c.order.Back()
		c.order.Remove(last)
		delete(c.items, last.Value.(*cacheEntry).key)
	}
}

func (c *idCache) forget(key string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if el, ok := c.items[key]; ok {
		c.order.Remove(el)
		delete(c.items, key)
	}
}

// forgetID drops every entry of the prefix (account and kind) that points at id.
func (c *idCache) forgetID(prefix string, id int64) int {
	c.mu.Lock()
	defer c.mu.Unlock()
	n := 0
	for key, el := range c.items {
		if e := el.Value.(*cacheEntry); e.id == id && len(key) >= len(prefix) && key[:len(prefix)] == prefix {
			c.order.Remove(el)
			delete(c.items, key)
			n++
		}
	}
	return n
}

func (c *idCache) len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.order.Len()
}
