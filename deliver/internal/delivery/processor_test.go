package delivery

import (
	"context"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/dedupe"
	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/segment"
)

const key = "sd-processor-test-key"

// fakeAccounts serves one entry per id, or err.
type fakeAccounts struct {
	entries map[string]*accountstore.Entry
	err     error
}

func (f *fakeAccounts) Lookup(_ context.Context, id string) (*accountstore.Entry, accountstore.Source, error) {
	if f.err != nil {
		return nil, accountstore.SourceFirestore, f.err
	}
	e, ok := f.entries[id]
	if !ok {
		return nil, accountstore.SourceFirestore, accountstore.ErrUnknown
	}
	return e, accountstore.SourceCache, nil
}

// fakeCompletions is an in-memory record of completed events.
type fakeCompletions struct {
	mu      sync.Mutex
	done    map[string]string
	doneErr error
	// failWrites makes the next Complete calls fail.
	failWrites int
	writes     int
	reads      int // Claim calls
	// heldElsewhere names events whose Claim answers dedupe.ErrHeld
	// (another instance runs a copy) while set; released counts Release
	// calls.
	heldElsewhere map[string]bool
	released      int
	// onComplete, when set, runs at the start of every Complete.
	onComplete func(msg string)
	// records holds every record written (Complete and Failed), by
	// messageId; duplicates counts Duplicate calls.
	records    map[string]*dedupe.Record
	duplicates int
	// claimed holds the record of each Claim call, by messageId.
	claimed map[string]*dedupe.Record
}

func (f *fakeCompletions) Claim(_ context.Context, r *dedupe.Record) (*dedupe.Claim, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.reads++
	if f.claimed == nil {
		f.claimed = map[string]*dedupe.Record{}
	}
	f.claimed[r.MessageID] = r
	if f.doneErr != nil {
		return nil, f.doneErr
	}
	if f.heldElsewhere[r.MessageID] {
		return nil, dedupe.ErrHeld
	}
	_, ok := f.done[r.AccountID+"/"+r.MessageID]
	return &dedupe.Claim{Completed: ok}, nil
}

func (f *fakeCompletions) Release(context.Context, *dedupe.Claim) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.released++
	return nil
}

func (f *fakeCompletions) Failed(_ context.Context, r *dedupe.Record) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.keep(r)
	return nil
}

func (f *fakeCompletions) Duplicate(context.Context, string, string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.duplicates++
	return nil
}

func (f *fakeCompletions) keep(r *dedupe.Record) {
	if f.records == nil {
		f.records = map[string]*dedupe.Record{}
	}
	f.records[r.MessageID] = r
}

func (f *fakeCompletions) record(msg string) *dedupe.Record {
	f.mu.Lock()
	defer f.mu.Unlock()
	return f.records[msg]
}

func (f *fakeCompletions) Complete(_ context.Context, r *dedupe.Record) error {
	acct, msg, outcome := r.AccountID, r.MessageID, r.Status
	if f.onComplete != nil {
		f.onComplete(msg)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	f.writes++
	if f.failWrites > 0 {
		f.failWrites--
		return errors.New("firestore: unavailable")
	}
	f.done[acct+"/"+msg] = outcome
	f.keep(r)
	return nil
}

// fakeClaims always lets the caller create.
type fakeClaims struct{}

func (fakeClaims) Acquire(context.Context, string) (*identity.Claim, error) {
	return &identity.Claim{}, nil
}
func (fakeClaims) Created(context.Context, *identity.Claim, int64) error { return nil }
func (fakeClaims) Release(context.Context, *identity.Claim) error        { return nil }

// fakeDeadLetters records dead letters, or fails.
type fakeDeadLetters struct {
	mu   sync.Mutex
	msgs []map[string]string
	err  error
}

func (f *fakeDeadLetters) Publish(_ context.Context, _ []byte, attrs map[string]string, _ string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if f.err != nil {
		return f.err
	}
	f.msgs = append(f.msgs, attrs)
	return nil
}

type fixture struct {
	p    *Processor
	sd   *startdelivertest.Server
	acc  *fakeAccounts
	done *fakeCompletions
	dead *fakeDeadLetters
}

func newFixture(t *testing.T, doc string) *fixture {
	t.Helper()
	sd := startdelivertest.NewServer(key)
	t.Cleanup(sd.Close)
	a, err := account.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	entry := &accountstore.Entry{ID: envelope.AccountID(key), Account: a, Disabled: a.Disabled}
	if c, err := account.Compile(a); err != nil {
		entry.Invalid = err
	} else {
		entry.Compiled = c
	}
	f := &fixture{
		sd:   sd,
		acc:  &fakeAccounts{entries: map[string]*accountstore.Entry{envelope.AccountID(key): entry}},
		done: &fakeCompletions{done: map[string]string{}},
		dead: &fakeDeadLetters{},
	}
	f.p = New(Options{
		Accounts: f.acc, Completions: f.done, Claims: fakeClaims{}, DeadLetters: f.dead,
		Client: startdeliver.New(startdeliver.Options{DefaultBaseURL: sd.URL(),
			Retry: startdeliver.Retry{BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, MinAttempt: time.Millisecond}}),
	})
	return f
}

func message(t *testing.T, event string) Message {
	t.Helper()
	ev, err := segment.Decode([]byte(event))
	if err != nil {
		t.Fatal(err)
	}
	enc, err := envelope.Encode(&envelope.Message{AccountID: envelope.AccountID(key), APIKey: key, ReceivedAt: time.Now(), Event: ev})
	if err != nil {
		t.Fatal(err)
	}
	return Message{ID: "ps-1", Data: enc.Data, Attributes: enc.Attributes, OrderingKey: enc.OrderingKey}
}

const simple = `{"name":"t","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId"}}`

func TestDecisions(t *testing.T) {
	track := `{"type":"track","userId":"u1","event":"e","messageId":"m1"}`
	tests := []struct {
		name        string
		doc         string
		event       string
		setup       func(f *fixture)
		data        []byte // replaces the message body
		want        Decision
		wantOutcome string
		wantClass   string
		wantDead    bool
	}{
		{name: "delivered", doc: simple, event: track, want: Ack, wantOutcome: OutcomeDelivered},
		{name: "duplicate", doc: simple, event: track, setup: func(f *fixture) {
			f.done.done[envelope.AccountID(key)+"/m1"] = OutcomeDelivered
		}, want: Ack, wantOutcome: OutcomeDuplicate},
		{name: "alias skipped", doc: simple, event: `{"type":"alias","userId":"u","previousId":"p","messageId":"m1"}`, want: Ack, wantOutcome: OutcomeSkipped},
		{name: "disabled account dead-lettered (replayable)", doc: `{"name":"t","disabled":true,"settings":{"startdeliverUserCustomFieldToMatchOn":"externalId"}}`, event: track, want: Ack, wantOutcome: OutcomeDeadLettered, wantClass: ClassDisabled, wantDead: true},
		{name: "anonymous skipped", doc: simple, event: `{"type":"track","anonymousId":"a","event":"e","messageId":"m1"}`, want: Ack, wantOutcome: OutcomeSkipped, wantClass: "anonymous"},
		{name: "override absent with a userId: dead letter", doc: `{"name":"t","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId","segmentOverrideMatchingField":"properties.x"}}`, event: track, want: Ack, wantOutcome: OutcomeDeadLettered, wantClass: "no-match-value", wantDead: true},
		{name: "unreadable body", doc: simple, event: track, data: []byte("garbage"), want: Ack, wantOutcome: OutcomeDeadLettered, wantClass: ClassBadMessage, wantDead: true},
		{name: "unknown account", doc: simple, event: track, setup: func(f *fixture) { f.acc.entries = nil }, want: Ack, wantOutcome: OutcomeDeadLettered, wantClass: ClassUnknown, wantDead: true},
		{name: "firestore down", doc: simple, event: track, setup: func(f *fixture) { f.acc.err = errors.New("unavailable") }, want: Nack, wantOutcome: OutcomeRetry},
		{name: "dedupe store down", doc: simple, event: track, setup: func(f *fixture) { f.done.doneErr = errors.New("unavailable") }, want: Nack, wantOutcome: OutcomeRetry},
		{name: "startdeliver 500 is retried", doc: simple, event: track, setup: func(f *fixture) {
			f.sd.FailFraction(1, startdelivertest.Fault{Status: 500})
		}, want: Nack, wantOutcome: OutcomeRetry, wantClass: "startdeliver-500"},
		{name: "startdeliver 429 is retried", doc: simple, event: track, setup: func(f *fixture) {
			f.sd.FailFraction(1, startdelivertest.Fault{Status: 429, RetryAfter: "0"})
		}, want: Nack, wantOutcome: OutcomeRetry, wantClass: "startdeliver-429"},
		{name: "startdeliver 400 is permanent", doc: simple, event: track, setup: func(f *fixture) {
			f.sd.FailNext(1, startdelivertest.Fault{Status: 400})
		}, want: Ack, wantOutcome: OutcomeDeadLettered, wantClass: ClassStartdeliver, wantDead: true},
		{name: "dead-letter publish fails: nack, nothing dropped", doc: simple, event: track, data: []byte("garbage"), setup: func(f *fixture) {
			f.dead.err = errors.New("pubsub down")
		}, want: Nack, wantOutcome: OutcomeRetry},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			f := newFixture(t, tt.doc)
			if tt.setup != nil {
				tt.setup(f)
			}
			m := message(t, tt.event)
			if tt.data != nil {
				m.Data = tt.data
			}
			res := f.p.Process(context.Background(), m)
			if res.Decision != tt.want || res.Outcome != tt.wantOutcome {
				t.Fatalf("Process = %v/%s (%v), want %v/%s", res.Decision, res.Outcome, res.Err, tt.want, tt.wantOutcome)
			}
			if tt.wantClass != "" && res.Class != tt.wantClass {
				t.Errorf("class = %q, want %q", res.Class, tt.wantClass)
			}
			if got := len(f.dead.msgs) == 1; got != tt.wantDead {
				t.Fatalf("dead letters = %d, want dead-lettered %v", len(f.dead.msgs), tt.wantDead)
			}
			if tt.wantDead {
				if len(f.done.done) != 0 {
					t.Errorf("a dead-lettered event was recorded as completed: its replay would be ignored")
				}
				d := f.dead.msgs[0]
				if d["errorClass"] != tt.wantClass || d["error"] == "" {
					t.Errorf("dead letter attributes = %v, want errorClass %q and an error", d, tt.wantClass)
				}
				for k, v := range d {
					if strings.Contains(v, key) {
						t.Errorf("dead letter attribute %s holds the API key", k)
					}
				}
			}
			if res.Err != nil && strings.Contains(res.Err.Error(), key) {
				t.Errorf("error %q holds the API key", res.Err)
			}
		})
	}
}

// TestBusyAccountWaitsItsTurn: with every slot of one account busy, its
// next event waits in process (no nack, no dedupe read yet), another
// account's event runs meanwhile, and the waiting event runs once a slot
// frees. An event whose wait ends (shutdown) before its turn is nacked as
// not started, having touched nothing.
func TestBusyAccountWaitsItsTurn(t *testing.T) {
	f := newFixture(t, simple)
	f.p.sched = newScheduler(1)
	busy, err := f.p.sched.acquire(context.Background(), envelope.AccountID(key))
	if err != nil {
		t.Fatal(err)
	}
	waited := make(chan Result, 1)
	go func() {
		waited <- f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u1","event":"e","messageId":"busy"}`))
	}()
	for {
		if _, queued := f.p.sched.load(envelope.AccountID(key)); queued == 1 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	if other, err := f.p.sched.acquire(context.Background(), "another-account"); err != nil {
		t.Errorf("another account's turn: %v, want one at once", err)
	} else {
		other.release()
	}
	f.done.mu.Lock()
	reads := f.done.reads
	f.done.mu.Unlock()
	if reads != 0 {
		t.Errorf("dedupe reads while waiting = %d, want 0 (the turn comes first)", reads)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cut := make(chan Result, 1)
	go func() {
		cut <- f.p.Process(ctx, message(t, `{"type":"track","userId":"u2","event":"e","messageId":"cut"}`))
	}()
	for {
		if _, queued := f.p.sched.load(envelope.AccountID(key)); queued == 2 {
			break
		}
		time.Sleep(time.Millisecond)
	}
	cancel()
	if res := <-cut; res.Decision != Nack || res.Class != "not-started" {
		t.Errorf("Process whose wait ended = %v %q (%v), want Nack not-started", res.Decision, res.Class, res.Err)
	}
	busy.release()
	if res := <-waited; res.Decision != Ack || res.Outcome != OutcomeDelivered {
		t.Errorf("Process after the slot freed = %v %s (%v), want delivered", res.Decision, res.Outcome, res.Err)
	}
	if n := len(f.sd.Usage(key)); n != 1 {
		t.Errorf("usage records = %d, want 1 (the cut event touched nothing)", n)
	}
}

// TestSlotFreedBeforeCompletionRecord: the account's slot bounds calls to
// Startdeliver only; while one event's completion record is being written,
// the next event of the same account already runs.
func TestSlotFreedBeforeCompletionRecord(t *testing.T) {
	f := newFixture(t, simple)
	f.p.sched = newScheduler(1)
	entered, gate := make(chan struct{}), make(chan struct{})
	f.done.onComplete = func(msg string) {
		if msg == "first" {
			close(entered)
			<-gate
		}
	}
	first := make(chan Result, 1)
	go func() {
		first <- f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u1","event":"e","messageId":"first"}`))
	}()
	<-entered
	res := f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u2","event":"e","messageId":"second"}`))
	close(gate)
	if res.Outcome != OutcomeDelivered {
		t.Errorf("second event while the first records its completion = %s %q (%v), want delivered", res.Outcome, res.Class, res.Err)
	}
	if res := <-first; res.Outcome != OutcomeDelivered {
		t.Errorf("first event = %s (%v), want delivered", res.Outcome, res.Err)
	}
	if n := len(f.sd.Usage(key)); n != 2 {
		t.Errorf("usage records = %d, want 2", n)
	}
}

// TestCopiesOfOneEventDoNotRunAtOnce: a second copy of an event (a Segment
// retry published again, a redelivery) that arrives while the first is
// still being processed waits for it and then has no second effect.
func TestCopiesOfOneEventDoNotRunAtOnce(t *testing.T) {
	f := newFixture(t, simple)
	entered, gate := make(chan struct{}), make(chan struct{})
	var calls atomic.Int32
	f.done.onComplete = func(string) {
		if calls.Add(1) == 1 {
			close(entered)
			<-gate
		}
	}
	const ev = `{"type":"track","userId":"u1","event":"e","messageId":"twice"}`
	first := make(chan Result, 1)
	go func() { first <- f.p.Process(context.Background(), message(t, ev)) }()
	<-entered
	second := make(chan Result, 1)
	go func() { second <- f.p.Process(context.Background(), message(t, ev)) }()
	// The second copy either waits for the first or (wrongly) finishes.
	var res Result
	finished := false
	for !finished && guardWaiters() == 0 {
		select {
		case res = <-second:
			finished = true
		case <-time.After(time.Millisecond):
		}
	}
	close(gate)
	if res := <-first; res.Outcome != OutcomeDelivered {
		t.Errorf("first copy = %s (%v), want delivered", res.Outcome, res.Err)
	}
	if !finished {
		res = <-second
	}
	if res.Decision != Ack || res.Outcome != OutcomeDuplicate {
		t.Errorf("second copy = %v %s (%v), want acked as duplicate", res.Decision, res.Outcome, res.Err)
	}
	if n := len(f.sd.Usage(key)); n != 1 {
		t.Errorf("usage records = %d, want 1", n)
	}
}

// TestQuickRetriesAbsorbABriefFault: two failures of the usage record are
// retried within one delivery, so no Pub/Sub attempt is spent.
func TestQuickRetriesAbsorbABriefFault(t *testing.T) {
	f := newFixture(t, simple)
	f.sd.FailNext(2, startdelivertest.Fault{Status: 503, Route: "POST /usage"})
	res := f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u1","event":"e","messageId":"brief"}`))
	if res.Decision != Ack || res.Outcome != OutcomeDelivered {
		t.Fatalf("Process = %v %s (%v), want delivered", res.Decision, res.Outcome, res.Err)
	}
	if n := len(f.sd.Usage(key)); n != 1 {
		t.Errorf("usage records = %d, want 1", n)
	}
}

func TestSettingsOverrideFromMessage(t *testing.T) {
	yes := true
	f := newFixture(t, simple)
	id := f.sd.AddUser(key, map[string]any{"email": "x@example.com"})
	ev, _ := segment.Decode([]byte(`{"type":"track","userId":"u9","event":"e","messageId":"ov","traits":{"email":"x@example.com"}}`))
	enc, _ := envelope.Encode(&envelope.Message{AccountID: envelope.AccountID(key), APIKey: key, ReceivedAt: time.Now(), Event: ev,
		Settings: &account.SettingsOverride{SyncUsingEmailInsteadOfCustomField: &yes}})
	res := f.p.Process(context.Background(), Message{Data: enc.Data, Attributes: enc.Attributes})
	if res.Outcome != OutcomeDelivered {
		t.Fatalf("Process = %s (%v)", res.Outcome, res.Err)
	}
	u := f.sd.Usage(key)
	if len(u) != 1 {
		t.Fatalf("usage = %v, want 1 record", u)
	}
	if got := fmt.Sprint(u[0]["user"]); got != strconv.FormatInt(id, 10) {
		t.Errorf("usage user = %s, want the user found by email (%d)", got, id)
	}
	if n := len(f.sd.Users(key)); n != 1 {
		t.Errorf("users = %d, want 1 (none created)", n)
	}
}

// TestCompletionWriteIsRetried: the usage record is written; a brief
// Firestore fault on the completion write must not leave the event
// unrecorded, or a redelivery elsewhere would repeat it.
func TestCompletionWriteIsRetried(t *testing.T) {
	f := newFixture(t, simple)
	f.done.failWrites = 2
	res := f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u1","event":"e","messageId":"cw"}`))
	if res.Decision != Ack || res.Outcome != OutcomeDelivered {
		t.Fatalf("Process = %v %s (%v), want delivered", res.Decision, res.Outcome, res.Err)
	}
	if _, ok := f.done.done[envelope.AccountID(key)+"/cw"]; !ok || f.done.writes != 3 {
		t.Errorf("completion recorded = %v after %d writes, want recorded on the third", ok, f.done.writes)
	}
	// The same event again (a redelivery) has no second effect.
	res = f.p.Process(context.Background(), message(t, `{"type":"track","userId":"u1","event":"e","messageId":"cw"}`))
	if res.Outcome != OutcomeDuplicate || len(f.sd.Usage(key)) != 1 {
		t.Errorf("redelivery = %s with %d usage records, want duplicate and 1", res.Outcome, len(f.sd.Usage(key)))
	}
}
