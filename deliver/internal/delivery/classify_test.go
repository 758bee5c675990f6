package delivery

import (
	"bytes"
	"context"
	"errors"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// TestClassification: every way an event can fail, and what becomes of it:
// permanent failures are dead-lettered once with their class, retryable
// ones nacked, and the dead letter's attributes are always valid (UTF-8,
// bounded, no key).
func TestClassification(t *testing.T) {
	const track = `{"type":"track","userId":"u1","event":"e","messageId":"m1"}`
	// A field path of about 2,000 bytes of two-byte characters: the error
	// that quotes it must be cut on a character boundary.
	longPath := "properties." + strings.Repeat("é", 1000)
	tests := []struct {
		name      string
		doc       string
		settings  string // the message's X-Segment-Settings
		fault     *startdelivertest.Fault
		setup     func(f *fixture)
		want      Decision
		outcome   string
		class     string
		wantCalls int // Startdeliver requests, -1: not checked
	}{
		{name: "2xx that is not JSON (find)", fault: &startdelivertest.Fault{Status: 200, Body: "<html>maintenance</html>", Route: "GET /user"},
			want: Ack, outcome: OutcomeDeadLettered, class: startdeliver.ClassMalformed, wantCalls: 1},
		{name: "2xx that is not JSON (usage)", fault: &startdelivertest.Fault{Status: 201, Body: "ok", Route: "POST /usage"},
			want: Ack, outcome: OutcomeDeadLettered, class: startdeliver.ClassMalformed, wantCalls: 3},
		{name: "found user without an id", fault: &startdelivertest.Fault{Status: 200, Body: `{"result":[{"name":"no id"}]}`, Route: "GET /user"},
			want: Ack, outcome: OutcomeDeadLettered, class: startdeliver.ClassMalformed, wantCalls: 1},
		{name: "created user without an id", fault: &startdelivertest.Fault{Status: 201, Body: `{"name":"no id"}`, Route: "POST /user"},
			want: Ack, outcome: OutcomeDeadLettered, class: startdeliver.ClassMalformed, wantCalls: 2},
		{name: "400", fault: &startdelivertest.Fault{Status: 400, Route: "POST /usage"}, want: Ack, outcome: OutcomeDeadLettered, class: ClassStartdeliver, wantCalls: 3},
		{name: "401", fault: &startdelivertest.Fault{Status: 401}, want: Ack, outcome: OutcomeDeadLettered, class: ClassStartdeliver, wantCalls: 1},
		{name: "403", fault: &startdelivertest.Fault{Status: 403}, want: Ack, outcome: OutcomeDeadLettered, class: ClassStartdeliver, wantCalls: 1},
		{name: "422", fault: &startdelivertest.Fault{Status: 422, Route: "POST /user"}, want: Ack, outcome: OutcomeDeadLettered, class: ClassStartdeliver, wantCalls: 2},
		{name: "a redirect is refused", fault: &startdelivertest.Fault{Status: 307}, want: Ack, outcome: OutcomeDeadLettered, class: ClassStartdeliver, wantCalls: 1},
		{name: "408 retried", fault: &startdelivertest.Fault{Status: 408}, want: Nack, outcome: OutcomeRetry, class: "startdeliver-408", wantCalls: 4},
		{name: "500 retried", fault: &startdelivertest.Fault{Status: 500}, want: Nack, outcome: OutcomeRetry, class: "startdeliver-500", wantCalls: 4},
		{name: "503 retried", fault: &startdelivertest.Fault{Status: 503}, want: Nack, outcome: OutcomeRetry, class: "startdeliver-503", wantCalls: 4},
		{name: "429 retried", fault: &startdelivertest.Fault{Status: 429, RetryAfter: "0"}, want: Nack, outcome: OutcomeRetry, class: "startdeliver-429", wantCalls: 4},
		{name: "config unavailable", setup: func(f *fixture) { f.acc.err = errors.New("firestore unavailable") },
			want: Nack, outcome: OutcomeRetry, class: "unavailable", wantCalls: 0},
		{name: "unknown account", setup: func(f *fixture) { f.acc.entries = nil }, want: Ack, outcome: OutcomeDeadLettered, class: ClassUnknown, wantCalls: 0},
		{name: "disabled account", doc: `{"name":"t","disabled":true,"settings":{"startdeliverUserCustomFieldToMatchOn":"externalId"}}`,
			want: Ack, outcome: OutcomeDeadLettered, class: ClassDisabled, wantCalls: 0},
		{name: "invalid stored config", doc: `{"name":"t","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId","segmentOverrideMatchingField":"properties["}}`,
			want: Ack, outcome: OutcomeDeadLettered, class: ClassInvalid, wantCalls: 0},
		{name: "settings in the message that are not JSON", settings: `{"x":`, want: Ack, outcome: OutcomeDeadLettered, class: ClassBadMessage, wantCalls: 0},
		{name: "a 2,000-byte override path the event lacks", settings: `{"segmentOverrideMatchingField":"` + longPath + `"}`,
			want: Ack, outcome: OutcomeDeadLettered, class: "no-match-value", wantCalls: 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			doc := tt.doc
			if doc == "" {
				doc = simple
			}
			f := newFixture(t, doc)
			if tt.setup != nil {
				tt.setup(f)
			}
			if tt.fault != nil {
				f.sd.FailFraction(1, *tt.fault)
			}
			m := messageWithSettings(t, track, tt.settings)
			res := f.p.Process(context.Background(), m)
			if res.Decision != tt.want || res.Outcome != tt.outcome || res.Class != tt.class {
				t.Fatalf("Process = %v %s %q (%v), want %v %s %q", res.Decision, res.Outcome, res.Class, res.Err, tt.want, tt.outcome, tt.class)
			}
			if n := f.sd.TotalCalls(); tt.wantCalls >= 0 && n != tt.wantCalls {
				t.Errorf("Startdeliver calls = %d (%v), want %d", n, f.sd.CallCounts(), tt.wantCalls)
			}
			wantDead := tt.outcome == OutcomeDeadLettered
			if got := len(f.dead.msgs); got != map[bool]int{true: 1, false: 0}[wantDead] {
				t.Fatalf("dead letters = %d, want dead-lettered %v", got, wantDead)
			}
			if !wantDead {
				return
			}
			d := f.dead.msgs[0]
			if d[envelope.AttrErrorClass] != tt.class || d[envelope.AttrError] == "" || d[envelope.AttrFailedAt] == "" {
				t.Errorf("dead letter attributes = %v, want errorClass %q, an error and failedAt", d, tt.class)
			}
			for k, v := range d {
				if !utf8.ValidString(v) {
					t.Errorf("dead letter attribute %s is not valid UTF-8", k)
				}
				if strings.Contains(v, key) {
					t.Errorf("dead letter attribute %s holds the API key", k)
				}
			}
			if n := len(d[envelope.AttrError]); n > envelope.MaxErrorAttr {
				t.Errorf("error attribute is %d bytes, want at most %d", n, envelope.MaxErrorAttr)
			}
			if tt.settings != "" && strings.Contains(tt.settings, longPath) && len(res.Err.Error()) <= envelope.MaxErrorAttr {
				t.Errorf("error %q is short: the case does not test cutting", res.Err)
			}
		})
	}
}

// messageWithSettings is message with an X-Segment-Settings object.
func messageWithSettings(t *testing.T, event, settings string) Message {
	t.Helper()
	if settings == "" {
		return message(t, event)
	}
	ev, err := segment.Decode([]byte(event))
	if err != nil {
		t.Fatal(err)
	}
	enc, err := envelope.Encode(&envelope.Message{AccountID: envelope.AccountID(key), APIKey: key, ReceivedAt: time.Now(), Event: ev})
	if err != nil {
		t.Fatal(err)
	}
	// Encode checks the settings are JSON; the test wants what an older
	// or foreign writer may have put there, so it splices them in.
	data := bytes.Replace(enc.Data, []byte(`{"v":1,`), []byte(`{"v":1,"settings":`+settings+`,`), 1)
	if !bytes.Contains(data, []byte(`"settings":`)) {
		t.Fatal("settings not spliced into the body")
	}
	return Message{ID: "ps-1", Data: data, Attributes: enc.Attributes, OrderingKey: enc.OrderingKey}
}

// panickingAccounts panics on the first lookup.
type panickingAccounts struct {
	once sync.Once
	next accounts
}

func (p *panickingAccounts) Lookup(ctx context.Context, id string) (*accountstore.Entry, accountstore.Source, error) {
	p.once.Do(func() { panic("lookup exploded") })
	return p.next.Lookup(ctx, id)
}

// TestPanicIsRecoveredAndNacked: a panic in processing is recovered,
// logged with its stack, and nacked; the account's slot and the event's
// guard are given back, so the redelivery is processed.
func TestPanicIsRecoveredAndNacked(t *testing.T) {
	f := newFixture(t, simple)
	var logs bytes.Buffer
	f.p.log = slog.New(slog.NewJSONHandler(&logs, nil))
	f.p.opts.Accounts = &panickingAccounts{next: f.acc}
	f.p.sched = newScheduler(1)
	const ev = `{"type":"track","userId":"u1","event":"e","messageId":"boom"}`
	res := f.p.Process(context.Background(), message(t, ev))
	if res.Decision != Nack || res.Class != ClassPanic {
		t.Fatalf("Process with a panic = %v %q (%v), want Nack %q", res.Decision, res.Class, res.Err, ClassPanic)
	}
	if !strings.Contains(logs.String(), "lookup exploded") || !strings.Contains(logs.String(), "classify_test.go") {
		t.Errorf("log = %s, want the panic and its stack", logs.String())
	}
	if running, queued := f.p.sched.load(envelope.AccountID(key)); running != 0 || queued != 0 {
		t.Errorf("after the panic the account has %d running, %d queued; want its slot back", running, queued)
	}
	if res := f.p.Process(context.Background(), message(t, ev)); res.Outcome != OutcomeDelivered {
		t.Errorf("redelivery after the panic = %s (%v), want delivered", res.Outcome, res.Err)
	}
}
