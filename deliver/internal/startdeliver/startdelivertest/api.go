package startdelivertest

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math/big"
	"net/http"
	"strconv"
	"strings"
	"time"
)

// maxBody bounds a request body.
const maxBody = 1 << 20

// defaultLimit and maxLimit are the page size rules of Startdeliver's finds.
const (
	defaultLimit = 500
	maxLimit     = 500
)

type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	if w.status == 0 {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// serveAPI serves one request below /api/v1.
func (s *Server) serveAPI(rw http.ResponseWriter, r *http.Request) {
	w := &statusWriter{ResponseWriter: rw}
	parts := strings.Split(strings.Trim(r.URL.Path, "/"), "/")
	entity := parts[0]
	method := r.Method
	override := r.Header.Get("X-HTTP-Method-Override")
	if method == http.MethodPost && strings.EqualFold(override, http.MethodGet) {
		method = http.MethodGet
	}
	route := method + " /" + entity
	if len(parts) > 1 {
		route += "/{id}"
	}
	key := r.Header.Get("Authorization")
	req := Request{
		Method: r.Method, Override: override, Path: r.URL.Path, Route: route, RawQuery: r.URL.RawQuery,
		KeyHash: KeyHash(key), Traceparent: r.Header.Get("Traceparent"), Tracestate: r.Header.Get("Tracestate"),
		Baggage:   r.Header.Get("Baggage"),
		UserAgent: r.Header.Get("User-Agent"),
	}

	s.mu.Lock()
	s.counters[route]++
	s.inFlight++
	latency := s.latency
	fault, faulted := s.faults.pickLocked(route)
	s.mu.Unlock()
	defer func() {
		req.Status, req.Fault = w.status, faulted
		s.mu.Lock()
		s.inFlight--
		s.requests = append(s.requests, req)
		if len(s.requests) > maxRequestLog {
			s.requests = s.requests[len(s.requests)-maxRequestLog:]
		}
		s.mu.Unlock()
	}()

	if !s.sleep(r.Context(), latency) {
		return
	}
	if faulted {
		s.serveFault(w, r, fault)
		return
	}
	if entity != "user" && entity != "customer" && entity != "usage" || len(parts) > 2 {
		writeError(w, http.StatusNotFound, "no such endpoint")
		return
	}

	s.mu.Lock()
	defer s.mu.Unlock()
	st, ok := s.lookupStore(key)
	if !ok {
		writeError(w, http.StatusUnauthorized, "unauthorized")
		return
	}
	var id int64
	if len(parts) == 2 {
		var err error
		if id, err = strconv.ParseInt(parts[1], 10, 64); err != nil || id <= 0 {
			writeError(w, http.StatusBadRequest, "id must be a positive integer")
			return
		}
	}
	switch {
	case method == http.MethodGet && id == 0:
		s.find(w, r, st, entity)
	case method == http.MethodGet:
		s.getOne(w, st, entity, id)
	case method == http.MethodPost && id == 0 && entity == "usage":
		s.createUsage(w, r, st)
	case method == http.MethodPost && id == 0:
		s.create(w, r, st, entity)
	case method == http.MethodPatch && id != 0 && entity != "usage":
		s.patch(w, r, st, entity, id)
	case method == http.MethodDelete && id != 0 && entity != "usage":
		s.remove(w, st, entity, id)
	default:
		writeError(w, http.StatusMethodNotAllowed, "method not allowed")
	}
}

func (s *Server) serveFault(w http.ResponseWriter, r *http.Request, f Fault) {
	if f.Hang {
		select {
		case <-r.Context().Done():
		case <-s.closing:
		case <-time.After(time.Minute):
			writeError(w, http.StatusGatewayTimeout, "stand-in hang fault ended")
		}
		return
	}
	if f.RetryAfter != "" {
		w.Header().Set("Retry-After", f.RetryAfter)
	}
	status := f.Status
	if status == 0 {
		status = http.StatusInternalServerError
	}
	if f.Body != "" {
		w.Header().Set("Content-Type", "application/json")
		w.WriteHeader(status)
		_, _ = io.WriteString(w, f.Body)
		return
	}
	writeError(w, status, "stand-in fault: "+http.StatusText(status))
}

// query is Startdeliver's find syntax: {"filter":{...},"limit":n,"offset":n,...}.
type query struct {
	filter        map[string]any
	limit, offset int
}

func parseQuery(raw []byte) (query, error) {
	q := query{limit: defaultLimit}
	obj, err := decodeObject(raw)
	if err != nil {
		return q, fmt.Errorf("query: %w", err)
	}
	if f, ok := obj["filter"]; ok && f != nil {
		m, ok := f.(map[string]any)
		if !ok {
			return q, errors.New("query: filter must be an object")
		}
		for k, v := range m {
			switch v.(type) {
			case map[string]any:
				return q, fmt.Errorf("query: filter %q: operator objects are not supported by the stand-in", k)
			}
		}
		q.filter = m
	}
	if q.limit, err = intParam(obj, "limit", defaultLimit); err != nil {
		return q, err
	}
	if q.limit > maxLimit {
		q.limit = maxLimit
	}
	if q.offset, err = intParam(obj, "offset", 0); err != nil {
		return q, err
	}
	return q, nil
}

func intParam(obj map[string]any, name string, def int) (int, error) {
	v, ok := obj[name]
	if !ok || v == nil {
		return def, nil
	}
	n, ok := v.(json.Number)
	if !ok {
		return 0, fmt.Errorf("query: %s must be a number", name)
	}
	i, err := n.Int64()
	if err != nil || i < 0 {
		return 0, fmt.Errorf("query: %s must be a non-negative integer", name)
	}
	return int(i), nil
}

// find answers GET /{entity}?query=..., the method-override POST, and the
// plain GET /{entity}?field=value form.
func (s *Server) find(w http.ResponseWriter, r *http.Request, st *store, entity string) {
	var q query
	switch {
	case r.Method == http.MethodPost: // X-HTTP-Method-Override: GET
		body, err := decodeBody(r)
		if err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
		var raw []byte
		switch v := body["query"].(type) {
		case map[string]any:
			raw, _ = json.Marshal(v)
		case string:
			raw = []byte(v)
		default:
			writeError(w, http.StatusBadRequest, `method override body must be {"query":...}`)
			return
		}
		if q, err = parseQuery(raw); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	case r.URL.Query().Has("query"):
		var err error
		if q, err = parseQuery([]byte(r.URL.Query().Get("query"))); err != nil {
			writeError(w, http.StatusBadRequest, err.Error())
			return
		}
	default:
		q = query{limit: defaultLimit, filter: map[string]any{}}
		for k, vs := range r.URL.Query() {
			q.filter[k] = vs[0]
		}
	}
	if entity == "usage" {
		if len(q.filter) == 0 {
			writeError(w, http.StatusBadRequest, "listing all usage is not allowed: give a filter")
			return
		}
		var out []Record
		for _, rec := range st.usage {
			if matches(rec, q.filter) {
				out = append(out, rec)
			}
		}
		writeJSON(w, http.StatusOK, map[string]any{"result": page(out, q)})
		return
	}
	var out []Record
	for _, rec := range sortedClone(st.table(entity)) {
		if matches(rec, q.filter) {
			out = append(out, rec)
		}
	}
	writeJSON(w, http.StatusOK, map[string]any{"result": page(out, q)})
}

func page(recs []Record, q query) []Record {
	out := []Record{}
	if q.offset < len(recs) {
		recs = recs[q.offset:]
		out = recs[:min(q.limit, len(recs))]
	}
	return out
}

// matches applies a filter: every key must equal (or, for an array, be one of) the record's value.
func matches(rec Record, filter map[string]any) bool {
	for k, want := range filter {
		have, ok := rec[k]
		if !ok {
			return false
		}
		if list, isList := want.([]any); isList {
			found := false
			for _, w := range list {
				if equalValue(have, w) {
					found = true
					break
				}
			}
			if !found {
				return false
			}
			continue
		}
		if !equalValue(have, want) {
			return false
		}
	}
	return true
}

// equalValue compares scalars as a database would: numbers numerically, a
// number and a numeric string as numbers, strings exactly, and a reference
// object by its id.
func equalValue(have, want any) bool {
	if ref, ok := have.(map[string]any); ok {
		have = ref["id"]
	}
	hn, hIsNum := asNumber(have)
	wn, wIsNum := asNumber(want)
	if hIsNum && wIsNum {
		return hn.Cmp(wn) == 0
	}
	switch h := have.(type) {
	case string:
		w, ok := want.(string)
		return ok && h == w
	case bool:
		w, ok := want.(bool)
		return ok && h == w
	case nil:
		return want == nil
	}
	return false
}

func asNumber(v any) (*big.Rat, bool) {
	var s string
	switch t := v.(type) {
	case json.Number:
		s = t.String()
	case string:
		s = strings.TrimSpace(t)
		if s == "" {
			return nil, false
		}
	default:
		return nil, false
	}
	r, ok := new(big.Rat).SetString(s)
	return r, ok
}

func (s *Server) getOne(w http.ResponseWriter, st *store, entity string, id int64) {
	if entity == "usage" {
		for _, rec := range st.usage {
			if rec.ID() == id {
				writeJSON(w, http.StatusOK, rec)
				return
			}
		}
		writeError(w, http.StatusNotFound, "usage not found")
		return
	}
	rec, ok := st.table(entity)[id]
	if !ok {
		writeError(w, http.StatusNotFound, entity+" not found")
		return
	}
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) create(w http.ResponseWriter, r *http.Request, st *store, entity string) {
	body, err := decodeBody(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if _, ok := body["id"]; ok {
		writeError(w, http.StatusBadRequest, "id is assigned by Startdeliver: use PATCH to update")
		return
	}
	if msg := checkRefs(st, entity, body); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	rec := s.insertLocked(st.table(entity), body)
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) patch(w http.ResponseWriter, r *http.Request, st *store, entity string, id int64) {
	rec, ok := st.table(entity)[id]
	if !ok {
		writeError(w, http.StatusNotFound, entity+" not found")
		return
	}
	body, err := decodeBody(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	if msg := checkRefs(st, entity, body); msg != "" {
		writeError(w, http.StatusBadRequest, msg)
		return
	}
	for k, v := range body {
		switch k {
		case "id", "createdAt", "updatedAt":
			continue
		}
		rec[k] = v
	}
	rec["updatedAt"] = s.now().UTC().Format(time.RFC3339Nano)
	writeJSON(w, http.StatusOK, rec)
}

func (s *Server) remove(w http.ResponseWriter, st *store, entity string, id int64) {
	rec, ok := st.table(entity)[id]
	if !ok {
		writeError(w, http.StatusNotFound, entity+" not found")
		return
	}
	delete(st.table(entity), id)
	writeJSON(w, http.StatusOK, rec)
}

// checkRefs rejects a user whose customer is not a known customer id.
func checkRefs(st *store, entity string, body Record) string {
	if entity != "user" {
		return ""
	}
	c, ok := body["customer"]
	if !ok || c == nil {
		return ""
	}
	n, ok := c.(json.Number)
	if !ok {
		return "customer must be a customer id (a number)"
	}
	id, err := n.Int64()
	if err != nil {
		return "customer must be a customer id (an integer)"
	}
	if _, ok := st.customers[id]; !ok {
		return fmt.Sprintf("customer %d does not exist", id)
	}
	return ""
}

// createUsage answers POST /usage: user, type, name and timestamp are
// required (400), user and customer must exist (404).
func (s *Server) createUsage(w http.ResponseWriter, r *http.Request, st *store) {
	body, err := decodeBody(r)
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	for _, k := range []string{"user", "type", "name", "timestamp"} {
		if v, ok := body[k]; !ok || v == nil || v == "" {
			writeError(w, http.StatusBadRequest, "usage: "+k+" is required")
			return
		}
	}
	if _, ok := body["id"]; ok {
		writeError(w, http.StatusBadRequest, "usage: id is assigned by Startdeliver")
		return
	}
	if t, _ := body["type"].(string); t != "track" && t != "page" {
		writeError(w, http.StatusBadRequest, `usage: type must be "track" or "page"`)
		return
	}
	if _, ok := body["name"].(string); !ok {
		writeError(w, http.StatusBadRequest, "usage: name must be a string")
		return
	}
	ts, _ := body["timestamp"].(string)
	if _, err := time.Parse(time.RFC3339Nano, ts); err != nil {
		writeError(w, http.StatusBadRequest, "usage: timestamp must be RFC 3339")
		return
	}
	if p, ok := body["properties"]; ok && p != nil {
		if _, isObj := p.(map[string]any); !isObj {
			writeError(w, http.StatusBadRequest, "usage: properties must be an object")
			return
		}
	}
	if e, ok := body["externalId"]; ok && e != nil {
		if _, isStr := e.(string); !isStr {
			writeError(w, http.StatusBadRequest, "usage: externalId must be a string")
			return
		}
	}
	for _, ref := range []struct {
		key   string
		table map[int64]Record
	}{{"user", st.users}, {"customer", st.customers}} {
		v, ok := body[ref.key]
		if !ok || v == nil {
			continue
		}
		n, isNum := v.(json.Number)
		id, err := n.Int64()
		if !isNum || err != nil {
			writeError(w, http.StatusBadRequest, "usage: "+ref.key+" must be an id (an integer)")
			return
		}
		if _, ok := ref.table[id]; !ok {
			writeError(w, http.StatusNotFound, fmt.Sprintf("usage: %s %d not found", ref.key, id))
			return
		}
	}
	s.nextID++
	body["id"] = json.Number(strconv.FormatInt(s.nextID, 10))
	body["createdAt"] = s.now().UTC().Format(time.RFC3339Nano)
	st.usage = append(st.usage, body)
	writeJSON(w, http.StatusOK, body)
}

func decodeBody(r *http.Request) (Record, error) {
	raw, err := io.ReadAll(io.LimitReader(r.Body, maxBody+1))
	if err != nil {
		return nil, fmt.Errorf("read body: %w", err)
	}
	if len(raw) > maxBody {
		return nil, errors.New("body too large")
	}
	return decodeObject(raw)
}

// decodeObject decodes exactly one JSON object, numbers as json.Number.
func decodeObject(raw []byte) (Record, error) {
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		return nil, fmt.Errorf("invalid JSON: %v", err)
	}
	if dec.More() {
		return nil, errors.New("invalid JSON: data after the object")
	}
	obj, ok := v.(map[string]any)
	if !ok {
		return nil, errors.New("invalid JSON: want an object")
	}
	return Record(obj), nil
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, status int, msg string) {
	writeJSON(w, status, map[string]string{"message": msg})
}
