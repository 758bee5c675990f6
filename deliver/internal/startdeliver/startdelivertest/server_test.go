package startdelivertest

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/url"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

const key = "standin-test-key-secret"

// do sends one raw request as Startdeliver's client library would and
// returns the status, the decoded body and the headers.
func do(t *testing.T, s *Server, method, path, apiKey, body string, header http.Header) (int, any, http.Header) {
	t.Helper()
	var rd io.Reader
	if body != "" {
		rd = strings.NewReader(body)
	}
	req, err := http.NewRequest(method, s.URL()+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if apiKey != "" {
		req.Header.Set("Authorization", apiKey)
	}
	for k, vs := range header {
		req.Header[k] = vs
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var v any
	if len(bytes.TrimSpace(raw)) > 0 {
		dec := json.NewDecoder(bytes.NewReader(raw))
		dec.UseNumber()
		if err := dec.Decode(&v); err != nil {
			t.Fatalf("%s %s: answer is not JSON: %q", method, path, raw)
		}
	}
	return resp.StatusCode, v, resp.Header
}

func findPath(entity, queryJSON string) string {
	return "/" + entity + "?query=" + url.QueryEscape(queryJSON)
}

// results returns the ids in a {"result":[...]} answer, failing on any other shape.
func results(t *testing.T, v any) []string {
	t.Helper()
	obj, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("answer %v is not an object", v)
	}
	list, ok := obj["result"].([]any)
	if !ok || len(obj) != 1 {
		t.Fatalf(`answer %v is not {"result":[...]}`, v)
	}
	ids := []string{}
	for _, e := range list {
		ids = append(ids, idOf(t, e))
	}
	return ids
}

// idOf returns an entity's id, failing unless it is a JSON number.
func idOf(t *testing.T, v any) string {
	t.Helper()
	e, ok := v.(map[string]any)
	if !ok {
		t.Fatalf("entity %v is not an object", v)
	}
	n, ok := e["id"].(json.Number)
	if !ok {
		t.Fatalf("entity %v has no numeric id", v)
	}
	return n.String()
}

func TestContractShapes(t *testing.T) {
	s := NewServer(key)
	defer s.Close()

	// Create answers the entity with a numeric id.
	st, cust, _ := do(t, s, "POST", "/customer", key, `{"name":"Acme","customfieldCustomId":42}`, nil)
	if st != 200 {
		t.Fatalf("POST /customer = %d %v, want 200", st, cust)
	}
	custID := idOf(t, cust)
	st, user, _ := do(t, s, "POST", "/user", key, `{"email":"ada@example.com","customfieldExternalId":"u-1","customer":`+custID+`}`, nil)
	if st != 200 {
		t.Fatalf("POST /user = %d %v, want 200", st, user)
	}
	userID := idOf(t, user)
	do(t, s, "POST", "/user", key, `{"email":"bob@example.com","customfieldExternalId":"u-2"}`, nil)
	do(t, s, "POST", "/user", key, `{"email":"cy@example.com","customfieldExternalId":"u-3"}`, nil)

	tests := []struct {
		name, method, path, body string
		header                   http.Header
		wantStatus               int
		wantIDs                  []string // for finds
	}{
		{name: "find by custom field alias", method: "GET", path: findPath("user", `{"filter":{"customfieldExternalId":"u-1"},"limit":1}`), wantStatus: 200, wantIDs: []string{userID}},
		{name: "find by email", method: "GET", path: findPath("user", `{"filter":{"email":"ada@example.com"},"limit":1}`), wantStatus: 200, wantIDs: []string{userID}},
		{name: "find by number as number", method: "GET", path: findPath("customer", `{"filter":{"customfieldCustomId":42}}`), wantStatus: 200, wantIDs: []string{custID}},
		{name: "find by number as text", method: "GET", path: findPath("customer", `{"filter":{"customfieldCustomId":"42"}}`), wantStatus: 200, wantIDs: []string{custID}},
		{name: "find none", method: "GET", path: findPath("user", `{"filter":{"email":"nobody@example.com"},"limit":1}`), wantStatus: 200, wantIDs: []string{}},
		{name: "find by reference", method: "GET", path: findPath("user", `{"filter":{"customer":`+custID+`}}`), wantStatus: 200, wantIDs: []string{userID}},
		{name: "filter array means any of", method: "GET", path: findPath("user", `{"filter":{"customfieldExternalId":["u-1","u-3"]}}`), wantStatus: 200, wantIDs: []string{userID, next(userID, 2)}},
		{name: "limit", method: "GET", path: findPath("user", `{"filter":{},"limit":2}`), wantStatus: 200, wantIDs: []string{userID, next(userID, 1)}},
		{name: "offset", method: "GET", path: findPath("user", `{"limit":2,"offset":2}`), wantStatus: 200, wantIDs: []string{next(userID, 2)}},
		{name: "plain field parameter", method: "GET", path: "/user?customfieldExternalId=u-2", wantStatus: 200, wantIDs: []string{next(userID, 1)}},
		{name: "method override", method: "POST", path: "/user", body: `{"query":{"filter":{"email":"bob@example.com"},"limit":1}}`,
			header: http.Header{"X-Http-Method-Override": {"GET"}}, wantStatus: 200, wantIDs: []string{next(userID, 1)}},
		{name: "method override with query string", method: "POST", path: "/user", body: `{"query":"{\"filter\":{\"email\":\"cy@example.com\"}}"}`,
			header: http.Header{"X-Http-Method-Override": {"GET"}}, wantStatus: 200, wantIDs: []string{next(userID, 2)}},
		{name: "bad query JSON", method: "GET", path: findPath("user", `{"filter":`), wantStatus: 400},
		{name: "bad filter", method: "GET", path: findPath("user", `{"filter":[1]}`), wantStatus: 400},
		{name: "bad limit", method: "GET", path: findPath("user", `{"limit":"x"}`), wantStatus: 400},
		{name: "listing all usage refused", method: "GET", path: findPath("usage", `{"limit":10}`), wantStatus: 400},
		{name: "get by id", method: "GET", path: "/user/" + userID, wantStatus: 200},
		{name: "get unknown id", method: "GET", path: "/user/1", wantStatus: 404},
		{name: "get bad id", method: "GET", path: "/user/abc", wantStatus: 400},
		{name: "patch unknown id", method: "PATCH", path: "/user/1", body: `{"name":"x"}`, wantStatus: 404},
		{name: "patch bad JSON", method: "PATCH", path: "/user/" + userID, body: `{"name":`, wantStatus: 400},
		{name: "create bad JSON", method: "POST", path: "/user", body: `not json`, wantStatus: 400},
		{name: "create not an object", method: "POST", path: "/user", body: `[1]`, wantStatus: 400},
		{name: "create with unknown customer", method: "POST", path: "/user", body: `{"customer":1}`, wantStatus: 400},
		{name: "unknown entity", method: "GET", path: "/widget", wantStatus: 404},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, v, h := do(t, s, tt.method, tt.path, key, tt.body, tt.header)
			if st != tt.wantStatus {
				t.Fatalf("%s %s = %d %v, want %d", tt.method, tt.path, st, v, tt.wantStatus)
			}
			if ct := h.Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			if st >= 400 {
				if m, ok := v.(map[string]any); !ok || m["message"] == "" {
					t.Errorf(`error body = %v, want {"message":...}`, v)
				}
				return
			}
			if tt.wantIDs != nil {
				if diff := cmp.Diff(tt.wantIDs, results(t, v)); diff != "" {
					t.Errorf("result ids (-want +got):\n%s", diff)
				}
			}
		})
	}

	// PATCH merges and answers the entity.
	st, patched, _ := do(t, s, "PATCH", "/user/"+userID, key, `{"name":"Ada","id":5}`, nil)
	p, _ := patched.(map[string]any)
	if st != 200 || p["name"] != "Ada" || p["email"] != "ada@example.com" || idOf(t, patched) != userID {
		t.Errorf("PATCH = %d %v, want the merged user with its own id", st, patched)
	}
}

func next(id string, n int) string {
	var i int64
	_ = json.Unmarshal([]byte(id), &i)
	i += int64(n)
	b, _ := json.Marshal(i)
	return string(b)
}

func TestAuth(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	for _, k := range []string{"", "Bearer " + key, "other"} {
		if st, v, _ := do(t, s, "GET", findPath("user", `{}`), k, "", nil); st != 401 {
			t.Errorf("GET /user with key %q = %d %v, want 401", k, st, v)
		}
	}
	anyKey := NewServerWithOptions(Options{AcceptAnyKey: true})
	defer anyKey.Close()
	if st, _, _ := do(t, anyKey, "GET", findPath("user", `{}`), "whatever", "", nil); st != 200 {
		t.Errorf("AcceptAnyKey: GET /user = %d, want 200", st)
	}
	if st, _, _ := do(t, anyKey, "GET", findPath("user", `{}`), "", "", nil); st != 401 {
		t.Errorf("AcceptAnyKey: GET /user without key = %d, want 401", st)
	}
	// Keys do not see each other's data.
	s.AddKey("k2")
	s.AddUser(key, map[string]any{"email": "a@b"})
	if _, v, _ := do(t, s, "GET", findPath("user", `{}`), "k2", "", nil); len(results(t, v)) != 0 {
		t.Errorf("k2 sees %v, want no users", v)
	}
}

func TestUsage(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	user := s.AddUser(key, map[string]any{"email": "a@b"})
	cust := s.AddCustomer(key, map[string]any{"name": "Acme"})
	good := map[string]any{"user": user, "customer": cust, "type": "track", "name": "Signed Up",
		"timestamp": "2024-05-06T07:08:09.123Z", "properties": map[string]any{"plan": "pro"}, "externalId": "m-1"}
	with := func(k string, v any) string {
		m := map[string]any{}
		for kk, vv := range good {
			m[kk] = vv
		}
		if v == nil {
			delete(m, k)
		} else {
			m[k] = v
		}
		b, _ := json.Marshal(m)
		return string(b)
	}
	tests := []struct {
		name, body string
		want       int
	}{
		{"valid", with("", nil), 200},
		{"page without customer", with("customer", nil), 200},
		{"missing user", with("user", nil), 400},
		{"missing type", with("type", nil), 400},
		{"missing name", with("name", nil), 400},
		{"missing timestamp", with("timestamp", nil), 400},
		{"bad type", with("type", "identify"), 400},
		{"bad timestamp", with("timestamp", "yesterday"), 400},
		{"properties not an object", with("properties", []int{1}), 400},
		{"unknown user", with("user", 1), 404},
		{"unknown customer", with("customer", 2), 404},
		{"bad JSON", `{"user":`, 400},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if st, v, _ := do(t, s, "POST", "/usage", key, tt.body, nil); st != tt.want {
				t.Errorf("POST /usage %s = %d %v, want %d", tt.body, st, v, tt.want)
			}
		})
	}
	got := s.Usage(key)
	if len(got) != 2 || got[0]["externalId"] != "m-1" || got[0].ID() == 0 {
		t.Errorf("Usage() = %v, want the 2 valid records with ids", got)
	}
	if _, v, _ := do(t, s, "GET", findPath("usage", `{"filter":{"user":`+next("0", int(user))+`}}`), key, "", nil); len(results(t, v)) != 2 {
		t.Errorf("usage filtered by user = %v, want 2", v)
	}
}

func TestFaults(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	s.FailNext(1, Fault{Status: 429, RetryAfter: "3"})
	s.FailNext(1, Fault{Status: 503, Route: "POST /usage"})
	st, _, h := do(t, s, "GET", "/user/1", key, "", nil)
	if st != 429 || h.Get("Retry-After") != "3" {
		t.Errorf("first call = %d Retry-After %q, want 429 with Retry-After 3", st, h.Get("Retry-After"))
	}
	if st, _, _ := do(t, s, "GET", "/user/1", key, "", nil); st != 404 {
		t.Errorf("second call = %d, want 404 (route-limited fault skipped)", st)
	}
	if st, _, _ := do(t, s, "POST", "/usage", key, `{}`, nil); st != 503 {
		t.Errorf("POST /usage = %d, want 503", st)
	}

	s.FailFraction(0.25, Fault{Status: 500})
	failed := 0
	for range 20 {
		if st, _, _ := do(t, s, "GET", "/user/1", key, "", nil); st == 500 {
			failed++
		}
	}
	if failed != 5 {
		t.Errorf("fraction 0.25 failed %d of 20, want 5", failed)
	}
	s.ClearFaults()

	// A hang holds the request until the client gives up.
	s.FailNext(1, Fault{Hang: true})
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "GET", s.URL()+"/user/1", nil)
	errc := make(chan error, 1)
	go func() {
		resp, err := http.DefaultClient.Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	deadline := time.Now().Add(10 * time.Second)
	for s.Calls("GET /user/{id}") < 23 && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	cancel()
	if err := <-errc; err == nil {
		t.Error("hung request answered, want the client to give up")
	}

	want := map[string]int{"GET /user/{id}": 23, "POST /usage": 1}
	if diff := cmp.Diff(want, s.CallCounts()); diff != "" {
		t.Errorf("CallCounts() (-want +got):\n%s", diff)
	}
}

func TestRequestLog(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	tp := "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	do(t, s, "GET", findPath("user", `{}`), key, "", http.Header{"Traceparent": {tp}})
	got := s.Requests()
	want := []Request{{Method: "GET", Path: "/user", Route: "GET /user", RawQuery: "query=%7B%7D", KeyHash: KeyHash(key), Traceparent: tp, UserAgent: "Go-http-client/1.1", Status: 200}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("Requests() (-want +got):\n%s", diff)
	}
}

func TestControlsAndPage(t *testing.T) {
	s := NewServer(key)
	defer s.Close()
	s.AddUser(key, map[string]any{"email": "<script>alert(1)</script>", "name": key})
	for i := range 60 {
		s.AddUser(key, map[string]any{"n": i})
	}

	get := func(path string) (int, string) {
		resp, err := http.Get(s.RootURL() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	st, page := get(ControlPrefix)
	if st != 200 || !strings.Contains(page, "&lt;script&gt;") || strings.Contains(page, "<script>") {
		t.Errorf("page = %d, want 200 with the user's fields escaped", st)
	}
	if !strings.Contains(page, KeyHash(key)) {
		t.Errorf("page does not name the account by its key hash %s", KeyHash(key))
	}
	if strings.Contains(page, "&lt;no value&gt;") || strings.Contains(page, "<no value>") {
		t.Errorf("page shows <no value> for absent fields")
	}
	_, state := get(ControlPrefix + "state")
	var snap State
	if err := json.Unmarshal([]byte(state), &snap); err != nil || len(snap.Accounts) != 1 || len(snap.Accounts[0].Users) != 61 {
		t.Fatalf("state = %v (%v), want one account with 61 users", snap, err)
	}
	// The key is a user's name here only to show the controls would print it
	// as data; the controls themselves never name an account by key.
	if strings.Count(state, key) != 1 || strings.Count(page, key) != 1 {
		t.Errorf("key appears beyond the one stored field")
	}

	post := func(method, path, body string) int {
		req, _ := http.NewRequest(method, s.RootURL()+path, strings.NewReader(body))
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if st := post("POST", ControlPrefix+"faults", `{"next":1,"fault":{"status":503}}`); st != 204 {
		t.Fatalf("POST faults = %d, want 204", st)
	}
	if st, _, _ := do(t, s, "GET", "/user/1", key, "", nil); st != 503 {
		t.Errorf("after fault control: GET = %d, want 503", st)
	}
	if st := post("POST", ControlPrefix+"faults", `{}`); st != 400 {
		t.Errorf("POST empty fault = %d, want 400", st)
	}
	post("POST", ControlPrefix+"faults", `{"fraction":1,"fault":{"status":500}}`)
	if st := post("DELETE", ControlPrefix+"faults", ""); st != 204 {
		t.Errorf("DELETE faults = %d, want 204", st)
	}
	if st, _, _ := do(t, s, "GET", "/user/1", key, "", nil); st != 404 {
		t.Errorf("after clearing faults: GET = %d, want 404", st)
	}
	if st := post("POST", ControlPrefix+"latency", `{"latency":"1ms"}`); st != 204 {
		t.Errorf("POST latency = %d, want 204", st)
	}
}
