package main

import (
	"encoding/base64"
	"encoding/json"
	"io"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// The event console's end-to-end tests: events go through the real
// pipeline, and their journeys are read back from ingest's
// GET /v1/events, as a customer would.

// eventJSON is an event's journey as GET /v1/events answers it.
type eventJSON struct {
	MessageID  string `json:"messageId"`
	Status     string `json:"status"`
	Type       string `json:"type"`
	Name       string `json:"name"`
	UserID     string `json:"userId"`
	Reason     string `json:"reason"`
	ErrorClass string `json:"errorClass"`
	User       *int64 `json:"user"`
	Customer   *int64 `json:"customer"`
	UserMatch  *struct {
		Rule  string `json:"rule"`
		Field string `json:"field"`
		Value any    `json:"value"`
	} `json:"userMatch"`
	UserCreated bool `json:"userCreated"`
	Calls       []struct {
		Method  string `json:"method"`
		Route   string `json:"route"`
		Status  int    `json:"status"`
		Attempt int    `json:"attempt"`
	} `json:"calls"`
	Attempts    int        `json:"attempts"`
	Duplicates  int        `json:"duplicates"`
	ReceivedAt  time.Time  `json:"receivedAt"`
	CompletedAt time.Time  `json:"completedAt"`
	DeliveredAt *time.Time `json:"deliveredAt"`
	TraceID     string     `json:"traceId"`
}

// routes is the journey's calls as "METHOD /route status".
func (e eventJSON) routes() []string {
	out := []string{}
	for _, c := range e.Calls {
		out = append(out, c.Method+" "+c.Route+" "+http.StatusText(c.Status))
	}
	return out
}

// getEvents GETs an events path from ingest with key.
func (p *pipeline) getEvents(key, path string) (int, []byte) {
	p.t.Helper()
	req, _ := http.NewRequest(http.MethodGet, p.ingestURL+path, nil)
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(key+":")))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("GET %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, b
}

// journey waits until the event's record has status, and returns it.
func (p *pipeline) journey(key, messageID, status string) eventJSON {
	p.t.Helper()
	var ev eventJSON
	var last string
	waitfor.Within(p.t, 30*time.Second, "journey of "+messageID+" to be "+status, func() bool {
		code, body := p.getEvents(key, "/v1/events/"+messageID)
		last = string(body)
		if code != http.StatusOK {
			return false
		}
		ev = eventJSON{}
		return json.Unmarshal(body, &ev) == nil && ev.Status == status
	})
	if ev.Status != status {
		p.t.Fatalf("journey of %s: %s", messageID, last)
	}
	return ev
}

func sameStrings(a, b []string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

// sorted returns a sorted copy of a.
func sorted(a []string) []string {
	return slices.Sorted(slices.Values(a))
}

func TestConsoleJourneys(t *testing.T) {
	p := newPipeline(t, pipelineOptions{maxAttempts: 5})
	key, otherKey := "sd-journey-key", "sd-journey-other-key"
	p.addAccount(key, `{"name":"Journeys","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId"}}`)
	p.addAccount(otherKey, `{"name":"Someone else","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId"}}`)
	known := p.sd.AddUser(key, map[string]any{"externalId": "known-1", "email": "ada@example.com"})

	// Delivered, known user: found, then the usage record.
	p.send(key, `{"type":"track","event":"Login","userId":"known-1","messageId":"j-known","properties":{"plan":"pro"}}`, "")
	ev := p.journey(key, "j-known", "delivered")
	if want := []string{"GET /user OK", "POST /usage OK"}; !sameStrings(ev.routes(), want) {
		t.Errorf("known user's calls = %v, want %v", ev.routes(), want)
	}
	if ev.User == nil || *ev.User != known || ev.UserCreated || ev.Type != "track" || ev.Name != "Login" || ev.UserID != "known-1" {
		t.Errorf("known user's journey = %+v, want user %d matched, track Login", ev, known)
	}
	if ev.UserMatch == nil || ev.UserMatch.Field != "externalId" || ev.UserMatch.Value != "known-1" || ev.UserMatch.Rule != "userId" {
		t.Errorf("match = %+v, want userId rule on externalId = known-1", ev.UserMatch)
	}
	if ev.Attempts < 1 || len(ev.TraceID) != 32 || ev.ReceivedAt.IsZero() || ev.DeliveredAt == nil || ev.Calls[0].Attempt != 1 {
		t.Errorf("journey facts: attempts %d, trace %q, received %v, delivered %v, calls %+v", ev.Attempts, ev.TraceID, ev.ReceivedAt, ev.DeliveredAt, ev.Calls)
	}

	// Delivered, new user: found nothing, created, then the usage record.
	p.send(key, `{"type":"track","event":"Signup","userId":"new-1","messageId":"j-new"}`, "")
	ev = p.journey(key, "j-new", "delivered")
	if want := []string{"GET /user OK", "POST /user OK", "POST /usage OK"}; !sameStrings(ev.routes(), want) {
		t.Errorf("new user's calls = %v, want %v", ev.routes(), want)
	}
	var created int64
	for _, u := range p.sd.Users(key) {
		if u["externalId"] == "new-1" {
			created = u.ID()
		}
	}
	if ev.User == nil || *ev.User != created || created == 0 || !ev.UserCreated {
		t.Errorf("new user's journey: user %v created %v, want the stand-in's new user %d", ev.User, ev.UserCreated, created)
	}

	// Duplicate: the same messageId again has no effect, and says so.
	p.send(key, `{"type":"track","event":"Login","userId":"known-1","messageId":"j-known","properties":{"plan":"pro"}}`, "")
	ev = p.journey(key, "j-known", "duplicate")
	if ev.Duplicates != 1 || !sameStrings(ev.routes(), []string{"GET /user OK", "POST /usage OK"}) || ev.DeliveredAt == nil {
		t.Errorf("duplicate's journey = %+v, want the first delivery's calls and one duplicate", ev)
	}
	if n := len(p.usageByExternalID(key)["j-known"]); n != 1 {
		t.Errorf("%d usage records for j-known, want 1", n)
	}

	// Skipped: alias, and identify while the Segment app is off.
	p.send(key, `{"type":"alias","userId":"known-1","previousId":"anon-1","messageId":"j-alias"}`, "")
	p.send(key, `{"type":"identify","userId":"known-1","traits":{"name":"Ada"},"messageId":"j-identify"}`, "")
	for _, id := range []string{"j-alias", "j-identify"} {
		ev = p.journey(key, id, "skipped")
		if ev.Reason == "" || len(ev.Calls) != 0 {
			t.Errorf("%s: reason %q calls %v, want a reason and no calls", id, ev.Reason, ev.routes())
		}
	}

	// Dead-lettered: no value to match on (the override is absent and the
	// event has a userId, so a fixed config and a replay could deliver it).
	p.send(key, `{"type":"track","event":"Login","userId":"known-1","messageId":"j-nomatch"}`, `{"segmentOverrideMatchingField":"properties.customId"}`)
	ev = p.journey(key, "j-nomatch", "dead_lettered")
	if ev.ErrorClass != "no-match-value" || ev.Reason == "" || len(ev.Calls) != 0 {
		t.Errorf("no match value: %+v, want class no-match-value, a reason, no calls", ev)
	}

	// Dead-lettered: Startdeliver refuses the usage record with 400.
	p.sd.FailNext(1, startdelivertest.Fault{Status: 400, Route: "POST /usage"})
	p.send(key, `{"type":"track","event":"Login","userId":"known-1","messageId":"j-400"}`, "")
	ev = p.journey(key, "j-400", "dead_lettered")
	if ev.ErrorClass != "startdeliver-rejected" || !strings.Contains(strings.Join(ev.routes(), ","), "POST /usage Bad Request") {
		t.Errorf("Startdeliver 400: class %q calls %v, want startdeliver-rejected with POST /usage 400", ev.ErrorClass, ev.routes())
	}
	p.deadLetters(2, 30*time.Second)

	// The listing: newest first, filtered.
	ids := func(path string) []string {
		t.Helper()
		code, body := p.getEvents(key, path)
		var got struct{ Events []eventJSON }
		if code != http.StatusOK || json.Unmarshal(body, &got) != nil {
			t.Fatalf("GET %s = %d %s", path, code, body)
		}
		out := []string{}
		for _, e := range got.Events {
			out = append(out, e.MessageID)
		}
		return out
	}
	all := ids("/v1/events?limit=50")
	if len(all) != 6 || all[0] != "j-400" {
		t.Errorf("listing = %v, want the 6 events, newest (j-400) first", all)
	}
	// The two skipped events were sent together and, without ordering
	// keys, finish in either order: the filter is what is checked here
	// (newest first is, above).
	if got := ids("/v1/events?status=skipped"); !sameStrings(sorted(got), []string{"j-alias", "j-identify"}) {
		t.Errorf("skipped = %v, want j-identify and j-alias", got)
	}
	if got := ids("/v1/events?userId=new-1"); !sameStrings(got, []string{"j-new"}) {
		t.Errorf("userId=new-1 = %v, want j-new", got)
	}
	if got := ids("/v1/events?type=alias"); !sameStrings(got, []string{"j-alias"}) {
		t.Errorf("type=alias = %v, want j-alias", got)
	}
	if got := ids("/v1/events?limit=2"); !sameStrings(got, all[:2]) {
		t.Errorf("limit=2 = %v, want %v", got, all[:2])
	}

	// Another account's key sees none of them, and cannot tell them from
	// messageIds that never existed.
	_, unknown := p.getEvents(otherKey, "/v1/events/never-sent")
	for _, id := range all {
		code, body := p.getEvents(otherKey, "/v1/events/"+id)
		if code != http.StatusNotFound || string(body) != string(unknown) {
			t.Errorf("other account GET %s = %d %s; want the unknown messageId's 404 %s", id, code, body, unknown)
		}
	}
	code, body := p.getEvents(otherKey, "/v1/events")
	if code != http.StatusOK || strings.Contains(string(body), "j-") {
		t.Errorf("other account's listing = %d %s, want none of these events", code, body)
	}
}
