package delivery

import (
	"context"
	"sync"
)

// copies keeps two copies of one event (a Segment retry, a redelivery while
// the first still runs) from running at once in this process: the second
// waits, holding no slot, for the first to end, and its dedupe check then
// sees the first's completion record. Safe for concurrent use.
type copies struct {
	mu      sync.Mutex
	running map[string]*copyRun
}

// copyRun is one event running; done closes when it ends.
type copyRun struct {
	done chan struct{}
}

// own makes the caller the only copy of the event running, waiting for
// ctx at most. The returned function ends the ownership.
func (c *copies) own(ctx context.Context, accountID, messageID string) (func(), error) {
	key := accountID + "/" + messageID
	for {
		c.mu.Lock()
		if c.running == nil {
			c.running = map[string]*copyRun{}
		}
		cur, busy := c.running[key]
		if !busy {
			mine := &copyRun{done: make(chan struct{})}
			c.running[key] = mine
			c.mu.Unlock()
			return func() {
				c.mu.Lock()
				delete(c.running, key)
				c.mu.Unlock()
				close(mine.done)
			}, nil
		}
		c.mu.Unlock()
		select {
		case <-cur.done:
		case <-ctx.Done():
			return nil, ctx.Err()
		}
	}
}
