// Package startdelivertest is an in-memory stand-in for Startdeliver's REST
// API, faithful to docs/api.md §7 and to Startdeliver's own client
// library: the same paths under /api/v1, the same query syntax and answers,
// per-key users, customers and usage records. Tests drive it in Go (faults,
// latency, counters, state read-back); the startdeliver-standin command
// serves it for `make run`, with the same controls over HTTP under
// /_standin/, a path the real API does not use.
//
// It is a test double: it keeps everything in memory, forever, and any
// stored API key is only ever shown as a short hash.
package startdelivertest

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http"
	"net/http/httptest"
	"slices"
	"strconv"
	"sync"
	"time"
)

// APIPrefix is where the API is served, as in Startdeliver's base URL.
const APIPrefix = "/api/v1"

// ControlPrefix is where the stand-in's own state and controls are served.
const ControlPrefix = "/_standin/"

// maxRequestLog bounds the request log.
const maxRequestLog = 10_000

// Options configures a Server.
type Options struct {
	// Keys are the API keys accepted from the start; more can be added with AddKey.
	Keys []string
	// AcceptAnyKey accepts every non-empty key, creating its store on first use.
	AcceptAnyKey bool
	// Now is the clock for createdAt/updatedAt (default time.Now).
	Now func() time.Time
}

// Record is one stored user, customer or usage record: top-level fields as
// JSON decoded them (numbers as json.Number), with a numeric "id".
type Record map[string]any

// ID returns the record's id.
func (r Record) ID() int64 {
	if n, ok := r["id"].(json.Number); ok {
		i, _ := n.Int64()
		return i
	}
	return 0
}

// Request is one request as the stand-in saw it, without its key.
type Request struct {
	// Method is the HTTP method; Override is X-HTTP-Method-Override, if any.
	Method, Override string
	// Path is the path below /api/v1; Route is its template ("PATCH /user/{id}").
	Path, Route string
	// RawQuery is the request's query string.
	RawQuery string
	// KeyHash is the short SHA-256 of the Authorization header ("" when absent).
	KeyHash string
	// Traceparent and Tracestate are the W3C trace context headers;
	// Baggage is the W3C baggage header, which deliver never sends.
	Traceparent, Tracestate, Baggage string
	// UserAgent is the User-Agent header.
	UserAgent string
	// Status is the answer's status code (0 when the request hung until the client left).
	Status int
	// Fault is true when the answer came from the fault plan.
	Fault bool
}

// store is one API key's data.
type store struct {
	users, customers map[int64]Record
	usage            []Record
}

// Server is the stand-in. It is an http.Handler; NewServer also starts it
// on a loopback listener. Safe for concurrent use.
type Server struct {
	opts Options
	now  func() time.Time

	mu       sync.Mutex
	stores   map[string]*store // by raw key; never exposed
	nextID   int64
	latency  time.Duration
	faults   faultPlan
	counters map[string]int
	// inFlight counts API requests whose handler has not returned.
	inFlight int
	requests []Request
	closing  chan struct{}
	closed   bool

	ts  *httptest.Server
	mux *http.ServeMux
}

// New returns a Server that is not listening: serve it with any http.Server.
func New(opts Options) *Server {
	s := &Server{
		opts:     opts,
		now:      opts.Now,
		stores:   map[string]*store{},
		nextID:   1000,
		counters: map[string]int{},
		closing:  make(chan struct{}),
	}
	if s.now == nil {
		s.now = time.Now
	}
	for _, k := range opts.Keys {
		s.AddKey(k)
	}
	s.mux = http.NewServeMux()
	s.mux.Handle(APIPrefix+"/", http.StripPrefix(APIPrefix, http.HandlerFunc(s.serveAPI)))
	s.registerControls(s.mux)
	return s
}

// NewServer starts a Server accepting keys on 127.0.0.1 and returns it;
// the caller must Close it. URL gives the API's base URL.
func NewServer(keys ...string) *Server {
	return NewServerWithOptions(Options{Keys: keys})
}

// NewServerWithOptions is NewServer with full Options.
func NewServerWithOptions(opts Options) *Server {
	s := New(opts)
	ts := httptest.NewUnstartedServer(s)
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		panic("startdelivertest: listen on loopback: " + err.Error())
	}
	ts.Listener = l
	ts.Start()
	s.ts = ts
	return s
}

// ServeHTTP serves the API under /api/v1 and the controls under /_standin/.
func (s *Server) ServeHTTP(w http.ResponseWriter, r *http.Request) { s.mux.ServeHTTP(w, r) }

// URL returns the API base URL (".../api/v1") of a server started by
// NewServer, for STARTDELIVER_API_URL or an account's BaseURL.
func (s *Server) URL() string {
	if s.ts == nil {
		return ""
	}
	return s.ts.URL + APIPrefix
}

// RootURL returns the server's root URL (controls live at RootURL()+"/_standin/").
func (s *Server) RootURL() string {
	if s.ts == nil {
		return ""
	}
	return s.ts.URL
}

// Close releases hanging requests and, for a server started by NewServer,
// stops it.
func (s *Server) Close() {
	s.mu.Lock()
	if !s.closed {
		s.closed = true
		close(s.closing)
	}
	s.mu.Unlock()
	if s.ts != nil {
		s.ts.Close()
	}
}

// AddKey makes key a known API key with an empty store (no-op when known).
func (s *Server) AddKey(key string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.storeLocked(key)
}

func (s *Server) storeLocked(key string) *store {
	st, ok := s.stores[key]
	if !ok {
		st = &store{users: map[int64]Record{}, customers: map[int64]Record{}}
		s.stores[key] = st
	}
	return st
}

// lookupStore returns the key's store, creating it when any key is accepted.
func (s *Server) lookupStore(key string) (*store, bool) {
	if key == "" {
		return nil, false
	}
	if st, ok := s.stores[key]; ok {
		return st, true
	}
	if s.opts.AcceptAnyKey {
		return s.storeLocked(key), true
	}
	return nil, false
}

// SetLatency adds d before every API answer (0 removes it).
func (s *Server) SetLatency(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.latency = d
}

// InFlight returns how many API requests are being answered now: a test
// that kills a client waits for it to reach 0 before counting what the
// client's last requests left behind.
func (s *Server) InFlight() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.inFlight
}

// Calls returns how many requests reached route ("GET /user",
// "PATCH /user/{id}", "POST /usage", ...), faulted ones included. A
// method-overridden find counts as "GET /user".
func (s *Server) Calls(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.counters[route]
}

// TotalCalls returns how many API requests arrived.
func (s *Server) TotalCalls() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, c := range s.counters {
		n += c
	}
	return n
}

// CallCounts returns a copy of every route's counter.
func (s *Server) CallCounts() map[string]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]int, len(s.counters))
	for k, v := range s.counters {
		out[k] = v
	}
	return out
}

// Requests returns the latest requests (at most 10,000), oldest first.
func (s *Server) Requests() []Request {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.requests)
}

// ResetCounters clears the call counters and the request log.
func (s *Server) ResetCounters() {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.counters = map[string]int{}
	s.requests = nil
}

// Users returns a copy of the key's users ordered by id.
func (s *Server) Users(key string) []Record { return s.entities(key, "user") }

// Customers returns a copy of the key's customers ordered by id.
func (s *Server) Customers(key string) []Record { return s.entities(key, "customer") }

// Usage returns a copy of the key's usage records in creation order.
func (s *Server) Usage(key string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.stores[key]
	if !ok {
		return nil
	}
	out := make([]Record, len(st.usage))
	for i, r := range st.usage {
		out[i] = cloneRecord(r)
	}
	return out
}

func (s *Server) entities(key, entity string) []Record {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.stores[key]
	if !ok {
		return nil
	}
	return sortedClone(st.table(entity))
}

// AddUser stores a user for key (the key is added when unknown) and returns its id.
func (s *Server) AddUser(key string, fields map[string]any) int64 { return s.add(key, "user", fields) }

// AddCustomer stores a customer for key and returns its id.
func (s *Server) AddCustomer(key string, fields map[string]any) int64 {
	return s.add(key, "customer", fields)
}

// Delete removes a user or customer ("user" or "customer") so that later
// calls with its id get 404; it reports whether it existed.
func (s *Server) Delete(key, entity string, id int64) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.stores[key]
	if !ok || st.table(entity) == nil {
		return false
	}
	_, existed := st.table(entity)[id]
	delete(st.table(entity), id)
	return existed
}

func (s *Server) add(key, entity string, fields map[string]any) int64 {
	raw, err := json.Marshal(fields)
	if err != nil {
		panic("startdelivertest: fields do not encode as JSON: " + err.Error())
	}
	rec, err := decodeObject(raw)
	if err != nil {
		panic("startdelivertest: " + err.Error())
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	st := s.storeLocked(key)
	return s.insertLocked(st.table(entity), rec).ID()
}

// insertLocked gives rec a new id and timestamps and stores it.
func (s *Server) insertLocked(table map[int64]Record, rec Record) Record {
	s.nextID++
	id := s.nextID
	now := s.now().UTC().Format(time.RFC3339Nano)
	rec["id"] = json.Number(strconv.FormatInt(id, 10))
	rec["createdAt"] = now
	rec["updatedAt"] = now
	table[id] = rec
	return rec
}

func (st *store) table(entity string) map[int64]Record {
	switch entity {
	case "user":
		return st.users
	case "customer":
		return st.customers
	}
	return nil
}

// KeyHash is how the stand-in names a key in its log, state and page: the
// first 12 hex digits of its SHA-256.
func KeyHash(key string) string {
	if key == "" {
		return ""
	}
	sum := sha256.Sum256([]byte(key))
	return hex.EncodeToString(sum[:])[:12]
}

func cloneRecord(r Record) Record {
	raw, _ := json.Marshal(r)
	out, _ := decodeObject(raw)
	return out
}

func sortedClone(table map[int64]Record) []Record {
	ids := make([]int64, 0, len(table))
	for id := range table {
		ids = append(ids, id)
	}
	slices.Sort(ids)
	out := make([]Record, len(ids))
	for i, id := range ids {
		out[i] = cloneRecord(table[id])
	}
	return out
}

// sleep waits d unless ctx ends or the server closes first.
func (s *Server) sleep(ctx context.Context, d time.Duration) bool {
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-s.closing:
		return false
	}
}
