package startdelivertest

// Fault is one scripted failure of an API request. Faults are decided
// before authentication, as a gateway or overloaded server would answer.
type Fault struct {
	// Status is the answer's status code (429, 500, 503, 400, ...). Ignored when Hang.
	Status int `json:"status,omitempty"`
	// RetryAfter is sent as the Retry-After header when set ("2" or an HTTP date).
	RetryAfter string `json:"retryAfter,omitempty"`
	// Hang holds the request without answering until the client gives up
	// or the server closes: a timeout as the client sees it.
	Hang bool `json:"hang,omitempty"`
	// Body is the answer body (default {"message":"<status text>"}).
	Body string `json:"body,omitempty"`
	// Route limits the fault to one route ("POST /usage"); empty means any.
	Route string `json:"route,omitempty"`
}

type nextRule struct {
	remaining int
	fault     Fault
}

type fractionRule struct {
	p, acc float64
	fault  Fault
}

// faultPlan decides which requests fail. Fractions are deterministic: a
// fraction p fails exactly ⌊n·p⌋ of n matching requests, evenly spread.
type faultPlan struct {
	next      []*nextRule
	fractions []*fractionRule
}

// FailNext makes the next n API requests (matching f.Route) fail with f.
// Rules queue: each applies to the requests after the earlier ones are used up.
func (s *Server) FailNext(n int, f Fault) {
	if n <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.next = append(s.faults.next, &nextRule{remaining: n, fault: f})
}

// FailFraction makes a fraction p (0 < p ≤ 1) of API requests (matching
// f.Route) fail with f, until ClearFaults.
func (s *Server) FailFraction(p float64, f Fault) {
	if p <= 0 {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults.fractions = append(s.faults.fractions, &fractionRule{p: min(p, 1), fault: f})
}

// ClearFaults removes every fault rule.
func (s *Server) ClearFaults() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.faults = faultPlan{}
}

// pickLocked returns the fault for a request of route, if any.
func (p *faultPlan) pickLocked(route string) (Fault, bool) {
	for i, r := range p.next {
		if r.fault.Route != "" && r.fault.Route != route {
			continue
		}
		r.remaining--
		if r.remaining <= 0 {
			p.next = append(p.next[:i], p.next[i+1:]...)
		}
		return r.fault, true
	}
	for _, r := range p.fractions {
		if r.fault.Route != "" && r.fault.Route != route {
			continue
		}
		r.acc += r.p
		if r.acc >= 1-1e-9 {
			r.acc--
			return r.fault, true
		}
	}
	return Fault{}, false
}
