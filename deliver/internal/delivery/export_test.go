package delivery

import (
	"runtime"
	"strings"
)

// What the tests observe of the guard and the scheduler, kept out of the
// production types.

// load tells how many of account's events hold a slot and wait for one.
func (s *scheduler) load(account string) (running, queued int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if l := s.accounts[account]; l != nil {
		return l.running, len(l.resumed) + len(l.waiting)
	}
	return 0, 0
}

// guardWaiters counts the goroutines blocked in the guard's wait, read from
// a dump of every goroutine's stack, so that a test sees a copy waiting
// without a counter in the production type.
func guardWaiters() int {
	buf := make([]byte, 1<<16)
	for {
		n := runtime.Stack(buf, true)
		if n < len(buf) {
			buf = buf[:n]
			break
		}
		buf = make([]byte, 2*len(buf))
	}
	waiting := 0
	for _, g := range strings.Split(string(buf), "\n\n") {
		header, _, _ := strings.Cut(g, "\n")
		if strings.Contains(header, "[select") && strings.Contains(g, ".(*copies).own(") {
			waiting++
		}
	}
	return waiting
}
