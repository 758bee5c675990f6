package receive

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/startdeliver/segment-destination/ingest/internal/explain"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/journey"
	"github.com/startdeliver/segment-destination/shared/lookup"
)

const otherKey = "sd-live-other-key"

// twoAccounts knows goodKey and otherKey.
type twoAccounts struct{ fakeAccounts }

func (a twoAccounts) Check(ctx context.Context, id string) error {
	if id == envelope.AccountID(otherKey) {
		return nil
	}
	return a.fakeAccounts.Check(ctx, id)
}

// fakeRecords holds records by account and messageId, and the last filter
// it was asked to list with.
type fakeRecords struct {
	mu   sync.Mutex
	recs map[string]*journey.Record
	last journey.Filter
}

func (f *fakeRecords) Get(_ context.Context, accountID, messageID string) (*journey.Record, error) {
	if r, ok := f.recs[journey.DocumentID(accountID, messageID)]; ok {
		return r, nil
	}
	return nil, journey.ErrNotFound
}

func (f *fakeRecords) List(_ context.Context, accountID string, flt journey.Filter) ([]*journey.Record, error) {
	f.mu.Lock()
	f.last = flt
	f.mu.Unlock()
	var out []*journey.Record
	for _, r := range f.recs {
		if r.AccountID == accountID && (flt.Status == "" || r.Status == flt.Status) {
			out = append(out, r)
		}
	}
	return out, nil
}

type fakeConfigs map[string]*accountstore.Entry

func (f fakeConfigs) Get(_ context.Context, id string) (*accountstore.Entry, error) {
	if e, ok := f[id]; ok {
		return e, nil
	}
	return nil, accountstore.ErrUnknown
}

// fakeFinder answers finds from a table keyed "kind field=value".
type fakeFinder struct {
	found map[string]lookup.Entity
	err   error
	calls []string
}

func (f *fakeFinder) Find(_ context.Context, key, _, kind, field string, value any) (lookup.Entity, bool, error) {
	k := kind + " " + field + "=" + findKey(value)
	f.calls = append(f.calls, key+" "+k)
	if f.err != nil {
		return nil, false, f.err
	}
	e, ok := f.found[k]
	return e, ok, nil
}

func findKey(v any) string { b, _ := json.Marshal(v); return string(b) }

func entry(t *testing.T, a *account.Account) *accountstore.Entry {
	t.Helper()
	c, err := account.Compile(a)
	if err != nil {
		t.Fatal(err)
	}
	return &accountstore.Entry{Account: a, Compiled: c}
}

func consoleHandlerForTest(t *testing.T, recs *fakeRecords, finder *fakeFinder) (*Handler, *fakePublisher) {
	pub := &fakePublisher{}
	acct := &account.Account{Name: "Acme", Settings: account.Settings{StartdeliverUserCustomFieldToMatchOn: "externalId"}}
	h := New(Options{
		Publisher: pub,
		Accounts:  twoAccounts{},
		Records:   recs,
		Configs:   fakeConfigs{envelope.AccountID(goodKey): entry(t, acct)},
		Explainer: explain.New(finder),
		NewID:     func() string { return "generated-1" },
	})
	return h, pub
}

func get(h http.Handler, path, key string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodGet, path, nil)
	if key != "" {
		r.Header.Set("Authorization", basic(key))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

func TestEventByMessageID(t *testing.T) {
	good := envelope.AccountID(goodKey)
	uid := int64(1234)
	recs := &fakeRecords{recs: map[string]*journey.Record{
		journey.DocumentID(good, "m-1"): {AccountID: good, MessageID: "m-1", Status: journey.StatusDelivered, Type: "track", User: &uid,
			Calls: []journey.Call{{Method: "GET", Route: "/user", Status: 200, Attempt: 1}}, Attempts: 1, TraceID: "0af7651916cd43dd8448eb211c80319c"},
	}}
	h, _ := consoleHandlerForTest(t, recs, nil)

	w := get(h, "/v1/events/m-1", goodKey)
	if w.Code != http.StatusOK {
		t.Fatalf("GET own event = %d %s", w.Code, w.Body)
	}
	var got map[string]any
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	for k, want := range map[string]any{"messageId": "m-1", "status": "delivered", "type": "track", "user": 1234.0, "customer": nil,
		"attempts": 1.0, "traceId": "0af7651916cd43dd8448eb211c80319c", "reason": "", "errorClass": "",
		"traceCommand": `bin/tracetree -message "m-1"`} {
		if diff := cmp.Diff(want, got[k]); diff != "" {
			t.Errorf("field %s (-want +got):\n%s", k, diff)
		}
	}
	if calls, _ := got["calls"].([]any); len(calls) != 1 {
		t.Errorf("calls = %v, want one", got["calls"])
	}
	if _, ok := got["accountId"]; ok {
		t.Error("the answer names the account id")
	}

	// Another account's key and an unknown messageId get the same answer.
	other := get(h, "/v1/events/m-1", otherKey)
	unknown := get(h, "/v1/events/no-such-id", goodKey)
	if other.Code != http.StatusNotFound || unknown.Code != http.StatusNotFound {
		t.Fatalf("other account = %d, unknown = %d; want 404 both", other.Code, unknown.Code)
	}
	if other.Body.String() != unknown.Body.String() {
		t.Errorf("another account's event answers %q, an unknown one %q: the difference leaks existence", other.Body, unknown.Body)
	}
	if !strings.Contains(unknown.Body.String(), "may still be queued") {
		t.Errorf("404 body = %s, want it to say the event may still be queued", unknown.Body)
	}
	for _, tc := range []struct{ key string }{{""}, {"sd-no-such-key"}} {
		if w := get(h, "/v1/events/m-1", tc.key); w.Code != http.StatusUnauthorized {
			t.Errorf("GET with key %q = %d, want 401", tc.key, w.Code)
		}
	}
}

func TestEventPendingAfterPublish(t *testing.T) {
	h, _ := consoleHandlerForTest(t, &fakeRecords{}, nil)
	r := httptest.NewRequest(http.MethodPost, "/v1/track", strings.NewReader(`{"userId":"u1","event":"Login","messageId":"m-pending"}`))
	r.Header.Set("Authorization", basic(goodKey))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != http.StatusOK {
		t.Fatalf("track = %d %s", w.Code, w.Body)
	}
	w = get(h, "/v1/events/m-pending", goodKey)
	if w.Code != http.StatusOK || !strings.Contains(w.Body.String(), `"status":"pending"`) {
		t.Errorf("GET just published = %d %s, want 200 pending", w.Code, w.Body)
	}
	if w := get(h, "/v1/events/m-pending", otherKey); w.Code != http.StatusNotFound {
		t.Errorf("another account sees the pending event: %d %s", w.Code, w.Body)
	}
}

func TestEventsListing(t *testing.T) {
	good, other := envelope.AccountID(goodKey), envelope.AccountID(otherKey)
	recs := &fakeRecords{recs: map[string]*journey.Record{
		"a": {AccountID: good, MessageID: "m-1", Status: journey.StatusSkipped},
		"b": {AccountID: other, MessageID: "m-2", Status: journey.StatusSkipped},
	}}
	h, _ := consoleHandlerForTest(t, recs, nil)
	w := get(h, "/v1/events?limit=5&userId=ada&type=track&status=skipped", goodKey)
	if w.Code != http.StatusOK {
		t.Fatalf("list = %d %s", w.Code, w.Body)
	}
	var got struct {
		Events []struct {
			MessageID string `json:"messageId"`
		} `json:"events"`
	}
	if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Events) != 1 || got.Events[0].MessageID != "m-1" {
		t.Errorf("listing = %+v, want only the account's own m-1", got.Events)
	}
	if want := (journey.Filter{Limit: 5, UserID: "ada", Type: "track", Status: "skipped"}); recs.last != want {
		t.Errorf("filter = %+v, want %+v", recs.last, want)
	}
	for _, q := range []string{"limit=0", "limit=201", "limit=x", "status=lost", "type=purchase"} {
		if w := get(h, "/v1/events?"+q, goodKey); w.Code != http.StatusBadRequest {
			t.Errorf("GET /v1/events?%s = %d, want 400", q, w.Code)
		}
	}
	if w := get(h, "/v1/events", ""); w.Code != http.StatusUnauthorized {
		t.Errorf("list without a key = %d, want 401", w.Code)
	}
}

func postExplain(h http.Handler, path, body, settings string) *httptest.ResponseRecorder {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r.Header.Set("Authorization", basic(goodKey))
	if settings != "" {
		r.Header.Set("X-Segment-Settings", base64.StdEncoding.EncodeToString([]byte(settings)))
	}
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	return w
}

type explained struct {
	Status     string `json:"status"`
	Reason     string `json:"reason"`
	ErrorClass string `json:"errorClass"`
	Match      *struct {
		Field string `json:"field"`
		Value any    `json:"value"`
	} `json:"match"`
	Calls []struct {
		Method string         `json:"method"`
		Route  string         `json:"route"`
		Body   map[string]any `json:"body"`
		When   string         `json:"when"`
	} `json:"calls"`
	FromHeader []string `json:"settingsFromHeader"`
	Lookups    []struct {
		Says string `json:"says"`
	} `json:"lookups"`
}

func (e explained) routes() []string {
	var out []string
	for _, c := range e.Calls {
		s := c.Method + " " + c.Route
		if c.When != "" {
			s += " if " + c.When
		}
		out = append(out, s)
	}
	return out
}

func TestExplain(t *testing.T) {
	finder := &fakeFinder{found: map[string]lookup.Entity{
		`user externalId="ada"`: {"id": json.Number("1234"), "externalId": "ada"},
	}}
	tests := []struct {
		name, path, body, settings string
		finderErr                  error
		want                       explained
		wantRoutes                 []string
	}{
		{name: "track, no lookup", path: "/v1/explain", body: `{"type":"track","event":"Login","userId":"ada"}`,
			want:       explained{Status: explain.WouldDeliver},
			wantRoutes: []string{"GET /user", "POST /user if not_found", "POST /usage"}},
		{name: "track, user found", path: "/v1/explain?lookup=true", body: `{"type":"track","event":"Login","userId":"ada"}`,
			want:       explained{Status: explain.WouldDeliver},
			wantRoutes: []string{"GET /user", "POST /usage"}},
		{name: "track, user new", path: "/v1/explain?lookup=true", body: `{"type":"track","event":"Login","userId":"bob"}`,
			want:       explained{Status: explain.WouldDeliver},
			wantRoutes: []string{"GET /user", "POST /user", "POST /usage"}},
		{name: "alias", path: "/v1/explain", body: `{"type":"alias","userId":"ada","previousId":"old"}`,
			want: explained{Status: explain.WouldSkip}},
		{name: "identify, segment app off", path: "/v1/explain", body: `{"type":"identify","userId":"ada"}`,
			want: explained{Status: explain.WouldSkip}},
		{name: "override absent, no fallback", path: "/v1/explain", body: `{"type":"track","event":"Login","userId":"ada"}`,
			settings: `{"segmentOverrideMatchingField":"properties.customId"}`,
			want:     explained{Status: explain.WouldDeadLetter, ErrorClass: "no-match-value", FromHeader: []string{"segmentOverrideMatchingField"}}},
		{name: "startdeliver refuses the key", path: "/v1/explain?lookup=true", body: `{"type":"track","event":"Login","userId":"ada"}`,
			finderErr: &lookup.APIError{StatusCode: 401, Route: "/user"},
			want:      explained{Status: explain.WouldDeadLetter, ErrorClass: explain.ClassStartdeliver}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			finder.err = tc.finderErr
			h, pub := consoleHandlerForTest(t, &fakeRecords{}, finder)
			w := postExplain(h, tc.path, tc.body, tc.settings)
			if w.Code != http.StatusOK {
				t.Fatalf("explain = %d %s", w.Code, w.Body)
			}
			var got explained
			if err := json.Unmarshal(w.Body.Bytes(), &got); err != nil {
				t.Fatal(err)
			}
			if got.Status != tc.want.Status || (tc.want.ErrorClass != "" && got.ErrorClass != tc.want.ErrorClass) {
				t.Errorf("explain = %s/%s (%s), want %s/%s", got.Status, got.ErrorClass, got.Reason, tc.want.Status, tc.want.ErrorClass)
			}
			if tc.want.FromHeader != nil {
				if diff := cmp.Diff(tc.want.FromHeader, got.FromHeader); diff != "" {
					t.Errorf("settingsFromHeader (-want +got):\n%s", diff)
				}
			}
			if tc.wantRoutes != nil {
				if diff := cmp.Diff(tc.wantRoutes, got.routes()); diff != "" {
					t.Errorf("calls (-want +got):\n%s", diff)
				}
			}
			if got.Status == explain.WouldSkip && got.Reason == "" {
				t.Error("a skip without a reason")
			}
			if n := len(pub.published()); n != 0 {
				t.Errorf("explain published %d messages", n)
			}
		})
	}
	// The found user's id goes into the usage record; the lookup says so.
	finder.err = nil
	h, _ := consoleHandlerForTest(t, &fakeRecords{}, finder)
	var got explained
	_ = json.Unmarshal(postExplain(h, "/v1/explain?lookup=true", `{"type":"track","event":"Login","userId":"ada"}`, "").Body.Bytes(), &got)
	if n := len(got.Calls); n == 0 || got.Calls[n-1].Body["user"] != 1234.0 {
		t.Errorf("usage call = %+v, want user 1234", got.Calls)
	}
	if len(got.Lookups) != 1 || got.Lookups[0].Says != "matches user 1234" {
		t.Errorf("lookups = %+v, want matches user 1234", got.Lookups)
	}
	if got.Match == nil || got.Match.Field != "externalId" || got.Match.Value != "ada" {
		t.Errorf("match = %+v, want externalId = ada", got.Match)
	}
	// A bad event or settings header is a 400, as on POST /.
	for _, tc := range []struct{ body, settings string }{{`{"type":"track"}`, ""}, {`not json`, ""}, {`{"type":"track","event":"x","userId":"a"}`, `{"segmentOverrideMatchingField":"a[["}`}} {
		if w := postExplain(h, "/v1/explain", tc.body, tc.settings); w.Code != http.StatusBadRequest {
			t.Errorf("explain %s (settings %s) = %d, want 400", tc.body, tc.settings, w.Code)
		}
	}
}

func TestConsolePage(t *testing.T) {
	h, _ := consoleHandlerForTest(t, &fakeRecords{}, nil)
	for path, ctype := range map[string]string{"/console/": "text/html", "/console/console.js": "javascript", "/console/console.css": "text/css"} {
		w := get(h, path, "")
		if w.Code != http.StatusOK || !strings.Contains(w.Header().Get("Content-Type"), ctype) {
			t.Errorf("GET %s = %d %s, want 200 %s", path, w.Code, w.Header().Get("Content-Type"), ctype)
		}
		if csp := w.Header().Get("Content-Security-Policy"); !strings.Contains(csp, "script-src 'self'") {
			t.Errorf("GET %s CSP = %q", path, csp)
		}
	}
	if w := get(h, "/console", ""); w.Code != http.StatusMovedPermanently {
		t.Errorf("GET /console = %d, want a redirect to /console/", w.Code)
	}
}

// TestRecentRemembersTheNewest checks the memory of recent publications:
// an account's own publication only, the newest limit of them, a
// republished one moved to the newest slot, none past recentTTL.
func TestRecentRemembersTheNewest(t *testing.T) {
	now := time.Date(2026, 12, 1, 12, 0, 0, 0, time.UTC)
	c := newRecentLimit(func() time.Time { return now }, 3)
	known := func(account, id string) bool {
		_, ok := c.published(account, id)
		return ok
	}
	c.add("acct-a", "m1")
	c.add("acct-a", "m2")
	if at, ok := c.published("acct-a", "m1"); !ok || !at.Equal(now) {
		t.Errorf("published(acct-a, m1) = %v, %v; want %v, true", at, ok, now)
	}
	for _, k := range [][2]string{{"acct-b", "m1"}, {"acct-a", "m3"}, {"acct-a\x00m", "1"}, {"acct-", "am1"}} {
		if known(k[0], k[1]) {
			t.Errorf("published(%q, %q) = true for a publication never added", k[0], k[1])
		}
	}
	c.add("acct-a", "m1") // moves m1 to the newest slot
	c.add("acct-a", "m3")
	c.add("acct-a", "m4") // the ring holds 3: m2, the oldest, goes
	for id, want := range map[string]bool{"m1": true, "m2": false, "m3": true, "m4": true} {
		if got := known("acct-a", id); got != want {
			t.Errorf("after m1 again, m3, m4: published(acct-a, %s) = %v, want %v", id, got, want)
		}
	}
	if len(c.index) != 3 {
		t.Errorf("index holds %d entries for a ring of 3", len(c.index))
	}
	now = now.Add(recentTTL)
	if known("acct-a", "m4") {
		t.Error("a publication recentTTL old still answers pending")
	}
}
