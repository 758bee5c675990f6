package delivery

import (
	"context"
	"sync"
)

// scheduler gives the events of each account their turns: at most
// perAccount of one account's events run at once, the others wait in
// process, first come first served, for as long as their context allows
// (the intake's, which ends at shutdown or, in push mode, before the ack
// deadline). Accounts never share slots, so one account's backlog never
// delays another's events once they are held. An event that pauses (it
// waits for another event's creation of the same person) gives its slot
// back, and gets one again ahead of events that have not started. Safe for
// concurrent use.
type scheduler struct {
	perAccount int

	mu       sync.Mutex
	accounts map[string]*lane
}

// lane is one account's slots and queue.
type lane struct {
	running int
	resumed []chan struct{} // paused turns waiting to run again, served first
	waiting []chan struct{} // events waiting for their first turn
	refs    int             // turns and waiters, so that an idle lane goes
}

func newScheduler(perAccount int) *scheduler {
	return &scheduler{perAccount: perAccount, accounts: map[string]*lane{}}
}

// turn is one event's right to run. release must be called once; pause and
// resume may be called in pairs in between.
type turn struct {
	s       *scheduler
	account string
	holding bool
}

// acquire waits for a slot of account's, or for ctx to end.
func (s *scheduler) acquire(ctx context.Context, account string) (*turn, error) {
	s.mu.Lock()
	l := s.accounts[account]
	if l == nil {
		l = &lane{}
		s.accounts[account] = l
	}
	l.refs++
	s.mu.Unlock()
	t := &turn{s: s, account: account}
	if err := s.take(ctx, l, false); err != nil {
		s.unref(account, l)
		return nil, err
	}
	t.holding = true
	return t, nil
}

// take gets a slot of l: at once when one is free and nobody queues ahead,
// else in queue order.
func (s *scheduler) take(ctx context.Context, l *lane, resumed bool) error {
	s.mu.Lock()
	ahead := len(l.resumed)
	if !resumed {
		ahead += len(l.waiting)
	}
	if l.running < s.perAccount && ahead == 0 {
		l.running++
		s.mu.Unlock()
		return nil
	}
	ready := make(chan struct{})
	if resumed {
		l.resumed = append(l.resumed, ready)
	} else {
		l.waiting = append(l.waiting, ready)
	}
	s.mu.Unlock()
	select {
	case <-ready:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		if remove(&l.resumed, ready) || remove(&l.waiting, ready) {
			return ctx.Err()
		}
		// Granted just as ctx ended: the slot is ours, pass it on.
		s.handOnLocked(l)
		return ctx.Err()
	}
}

// handOnLocked gives a freed slot to the next in line, or frees it.
func (s *scheduler) handOnLocked(l *lane) {
	for _, q := range []*[]chan struct{}{&l.resumed, &l.waiting} {
		if len(*q) > 0 {
			next := (*q)[0]
			*q = (*q)[1:]
			close(next)
			return
		}
	}
	l.running--
}

func remove(q *[]chan struct{}, c chan struct{}) bool {
	for i, x := range *q {
		if x == c {
			*q = append((*q)[:i], (*q)[i+1:]...)
			return true
		}
	}
	return false
}

func (s *scheduler) unref(account string, l *lane) {
	s.mu.Lock()
	defer s.mu.Unlock()
	l.refs--
	if l.refs == 0 && l.running == 0 {
		delete(s.accounts, account)
	}
}

func (s *scheduler) lane(account string) *lane {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.accounts[account]
}

// pause gives the slot back while the event waits for something that is
// not Startdeliver work of its own.
func (t *turn) pause() {
	if !t.holding {
		return
	}
	t.holding = false
	l := t.s.lane(t.account)
	t.s.mu.Lock()
	t.s.handOnLocked(l)
	t.s.mu.Unlock()
}

// resume takes a slot again, ahead of events that have not started.
func (t *turn) resume(ctx context.Context) error {
	if t.holding {
		return nil
	}
	if err := t.s.take(ctx, t.s.lane(t.account), true); err != nil {
		return err
	}
	t.holding = true
	return nil
}

// release ends the turn. It may be called more than once.
func (t *turn) release() {
	if t == nil || t.account == "" {
		return
	}
	t.pause()
	l := t.s.lane(t.account)
	t.s.unref(t.account, l)
	t.account = ""
}
