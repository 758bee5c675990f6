package delivery

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
