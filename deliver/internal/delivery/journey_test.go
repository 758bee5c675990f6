package delivery

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/journey"
	"github.com/startdeliver/segment-destination/shared/segment"
)

func TestJourneyCallsNumberAttempts(t *testing.T) {
	got := journeyCalls([]startdeliver.Call{
		{Method: "GET", Route: "/user", Status: 200},
		{Method: "POST", Route: "/usage", Status: 503},
		{Method: "POST", Route: "/usage", Status: 0},
		{Method: "POST", Route: "/usage", Status: 200},
		{Method: "POST", Route: "/usage", Status: 200},
	})
	want := []journey.Call{
		{Method: "GET", Route: "/user", Status: 200, Attempt: 1},
		{Method: "POST", Route: "/usage", Status: 503, Attempt: 1},
		{Method: "POST", Route: "/usage", Status: 0, Attempt: 2},
		{Method: "POST", Route: "/usage", Status: 200, Attempt: 3},
		{Method: "POST", Route: "/usage", Status: 200, Attempt: 1},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("journeyCalls (-want +got):\n%s", diff)
	}
}

func TestPayloadHoldsPropertiesAndTraitsOnly(t *testing.T) {
	ev, err := segment.Decode([]byte(`{"type":"identify","userId":"u","messageId":"m","traits":{"plan":"pro"},"context":{"ip":"203.0.113.7"}}`))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := payload(ev), `{"traits":{"plan":"pro"}}`; got != want {
		t.Errorf("payload = %s, want %s", got, want)
	}
}

// TestDeliveredEventCostsOneWrite: the journey rides in the one record a
// delivered event always had (docs/benchmarks.md: 0 extra writes per
// delivered event), and the record says what happened, including a brief
// fault's retried call.
func TestDeliveredEventCostsOneWrite(t *testing.T) {
	f := newFixture(t, simple)
	f.sd.FailNext(1, startdelivertest.Fault{Status: 503, Route: "POST /usage"})
	res := f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u1","event":"Login","messageId":"one","properties":{"plan":"pro"}}`))
	if res.Outcome != OutcomeDelivered {
		t.Fatalf("Process = %s (%v)", res.Outcome, res.Err)
	}
	if f.done.writes != 1 || f.done.duplicates != 0 || len(f.done.records) != 1 {
		t.Errorf("a delivered event cost %d completion writes, %d duplicate notes, %d records; want 1, 0, 1", f.done.writes, f.done.duplicates, len(f.done.records))
	}
	r := f.done.record("one")
	uid := f.sd.Users(key)[0].ID()
	want := []journey.Call{
		{Method: "GET", Route: "/user", Status: 200, Attempt: 1},
		{Method: "POST", Route: "/user", Status: 200, Attempt: 1},
		{Method: "POST", Route: "/usage", Status: 503, Attempt: 1},
		{Method: "POST", Route: "/usage", Status: 200, Attempt: 2},
	}
	if diff := cmp.Diff(want, r.Calls); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if r.Status != journey.StatusDelivered || r.Type != "track" || r.Name != "Login" || r.UserID != "u1" || r.User == nil || *r.User != uid ||
		!r.UserCreated || r.UserMatch == nil || r.UserMatch.Value != "u1" || r.DeliveredAt == nil || r.Attempts != 1 || r.Payload != "" {
		t.Errorf("record = %+v, want delivered track Login of u1, user %d created, no payload", r, uid)
	}
}

func TestPayloadKeptWhenTurnedOn(t *testing.T) {
	f := newFixture(t, simple)
	f.p.out.payloads = true
	f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u1","event":"Login","messageId":"pl","properties":{"plan":"pro"}}`))
	if r := f.done.record("pl"); r == nil || r.Payload != `{"properties":{"plan":"pro"}}` {
		t.Errorf("record = %+v, want the properties kept", r)
	}
	// The claim written before the event ran does not carry them too.
	f.done.mu.Lock()
	claim := f.done.claimed["pl"]
	f.done.mu.Unlock()
	if claim == nil || claim.Status != journey.StatusPending || claim.Payload != "" {
		t.Errorf("claim record = %+v, want pending without a payload", claim)
	}
}

func TestStartdeliverFailureRecordedAsRetrying(t *testing.T) {
	f := newFixture(t, simple)
	f.sd.FailNext(100, startdelivertest.Fault{Status: 503, Route: "POST /usage"})
	res := f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u1","event":"Login","messageId":"rt"}`))
	if res.Decision != Nack {
		t.Fatalf("Process = %v %s, want a nack", res.Decision, res.Outcome)
	}
	r := f.done.record("rt")
	if r == nil || r.Status != journey.StatusRetrying || r.ErrorClass != "startdeliver-503" || len(r.Calls) == 0 {
		t.Errorf("record = %+v, want retrying startdeliver-503 with its calls", r)
	}
	if _, done := f.done.done[envelope.AccountID(key)+"/rt"]; done {
		t.Error("a retrying event counts as completed")
	}
}
