package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/protobuf/types/known/timestamppb"

	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/gcpclient"
)

func TestParse(t *testing.T) {
	env := func(k string) string { return map[string]string{"GOOGLE_CLOUD_PROJECT": "p"}[k] }
	tests := []struct {
		args    []string
		getenv  func(string) string
		wantErr string
	}{
		{args: []string{"-all"}, getenv: env},
		{args: []string{"-dry-run"}, getenv: env},
		{args: []string{"-account", "ABC"}, getenv: env},
		{args: []string{"-class", "invalid-config", "-limit", "10"}, getenv: env},
		{args: nil, getenv: env, wantErr: "no filter"},
		{args: []string{"-all", "-account", "abc"}, getenv: env, wantErr: "cannot be combined"},
		{args: []string{"-all", "-limit", "-1"}, getenv: env, wantErr: "-limit -1"},
		{args: []string{"-all", "-wait", "0s"}, getenv: env, wantErr: "-wait 0s"},
		{args: []string{"-all", "extra"}, getenv: env, wantErr: "unexpected arguments"},
		{args: []string{"-all"}, getenv: func(string) string { return "" }, wantErr: "GOOGLE_CLOUD_PROJECT is required"},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			_, err := parse(tt.args, tt.getenv, io.Discard)
			if tt.wantErr == "" && err != nil || tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
				t.Errorf("parse(%q) = %v, want error containing %q", tt.args, err, tt.wantErr)
			}
		})
	}

	c, err := parse([]string{"-account", " ABC "}, func(k string) string {
		return map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_TOPIC": "t", "DEAD_LETTER_SUBSCRIPTION": "s"}[k]
	}, io.Discard)
	if err != nil {
		t.Fatal(err)
	}
	if c.filter.account != "abc" || c.Topic != "t" || c.Subscription != "s" {
		t.Errorf("parse = account %q, topic %q, subscription %q; want abc, t, s", c.filter.account, c.Topic, c.Subscription)
	}
	if got, want := gcpclient.SubscriptionName("p", "s"), "projects/p/subscriptions/s"; got != want {
		t.Errorf("subscriptionName(p, s) = %q, want %q", got, want)
	}
	if got, want := gcpclient.SubscriptionName("p", "projects/q/subscriptions/s"), "projects/q/subscriptions/s"; got != want {
		t.Errorf("subscriptionName(p, full) = %q, want %q", got, want)
	}
}

func TestFilterMatch(t *testing.T) {
	l := &letter{accountID: "abcdef0123", class: "invalid-config", messageID: "m1"}
	tests := []struct {
		f    filter
		want bool
	}{
		{filter{}, true},
		{filter{account: "abc"}, true},
		{filter{account: "abcdef0123"}, true},
		{filter{account: "bcd"}, false},
		{filter{class: "invalid-config"}, true},
		{filter{class: "invalid"}, false},
		{filter{message: "m1"}, true},
		{filter{message: "m"}, false},
		{filter{account: "abc", class: "invalid-config", message: "m1"}, true},
		{filter{account: "abc", class: "config"}, false},
	}
	for _, tt := range tests {
		if got := tt.f.match(l); got != tt.want {
			t.Errorf("%+v.match(%+v) = %v, want %v", tt.f, l, got, tt.want)
		}
	}
}

func TestDescribeAndRepublish(t *testing.T) {
	enc := encode(t, keyA, `{"type":"track","event":"E","anonymousId":"anon-1","messageId":"m1"}`)
	published := time.Date(2026, 3, 4, 5, 6, 7, 0, time.UTC)
	received := func(data []byte, attrs map[string]string) *pubsubpb.ReceivedMessage {
		return &pubsubpb.ReceivedMessage{AckId: "ack", Message: &pubsubpb.PubsubMessage{
			MessageId: "99", Data: data, Attributes: attrs, PublishTime: timestamppb.New(published),
		}}
	}
	attrs := func(extra ...string) map[string]string {
		a := map[string]string{}
		for k, v := range enc.Attributes {
			a[k] = v
		}
		for i := 0; i < len(extra); i += 2 {
			a[extra[i]] = extra[i+1]
		}
		return a
	}

	t.Run("deliver's dead letter", func(t *testing.T) {
		l := describe(received(enc.Data, attrs("error", "boom", "errorClass", "config", "failedAt", "2026-01-01T00:00:00Z", "sourceMessageId", "7")))
		got := []string{l.id, l.messageID, l.accountID, l.typ, l.class, l.reason, l.failedAt}
		want := []string{"99", "m1", envelope.AccountID(keyA), "track", "config", "boom", "2026-01-01T00:00:00Z"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("describe (-want +got):\n%s", diff)
		}
	})
	t.Run("forwarded by Pub/Sub", func(t *testing.T) {
		l := describe(received(enc.Data, attrs("CloudPubSubDeadLetterSourceDeliveryCount", "5", "CloudPubSubDeadLetterSourceSubscription", "s")))
		got := []string{l.class, l.reason, l.failedAt}
		want := []string{"max-delivery-attempts", "Pub/Sub's dead-letter policy forwarded it after 5 delivery attempts", "2026-03-04T05:06:07Z"}
		if diff := cmp.Diff(want, got); diff != "" {
			t.Errorf("describe (-want +got):\n%s", diff)
		}
		m := republished(l, published.Add(time.Hour))
		wantAttrs := attrs("replayedAt", "2026-03-04T06:06:07Z")
		if diff := cmp.Diff(wantAttrs, m.Attributes); diff != "" {
			t.Errorf("republished attributes (-want +got):\n%s", diff)
		}
		if want := envelope.OrderingKey(envelope.AccountID(keyA), "anon-1"); m.OrderingKey != want {
			t.Errorf("republished ordering key = %q, want %q", m.OrderingKey, want)
		}
	})
	t.Run("dead-letter and tracing attributes removed", func(t *testing.T) {
		l := describe(received(enc.Data, attrs("error", "x", "errorClass", "c", "failedAt", "f", "sourceMessageId", "s",
			"CloudPubSubDeadLetterSourceDeliveryCount", "5", "googclient_traceparent", "00-x", "replayedAt", "old", "custom", "kept")))
		m := republished(l, published)
		if diff := cmp.Diff(attrs("replayedAt", "2026-03-04T05:06:07Z", "custom", "kept"), m.Attributes); diff != "" {
			t.Errorf("republished attributes (-want +got):\n%s", diff)
		}
	})
	t.Run("undecodable body", func(t *testing.T) {
		l := describe(received([]byte("{}"), map[string]string{"accountId": "acc", "messageId": "m9", "type": "page"}))
		var de *envelope.DecodeError
		if !errors.As(l.decodeErr, &de) {
			t.Errorf("describe(undecodable).decodeErr = %v, want *envelope.DecodeError", l.decodeErr)
		}
		if got := []string{l.accountID, l.messageID, l.typ, l.class}; !cmp.Equal(got, []string{"acc", "m9", "page", ""}) {
			t.Errorf("describe(undecodable) = %q, want the attributes' values", got)
		}
	})
}

// fakeSubscription hands out batches, one per pull, then nothing, and logs
// every call in order with the calls of its publisher.
type fakeSubscription struct {
	mu      sync.Mutex
	batches [][]*pubsubpb.ReceivedMessage
	log     []string
	// refuse are the messageIds whose publish fails.
	refuse map[string]bool
	// onPull runs before each pull.
	onPull func()
}

func (f *fakeSubscription) record(format string, args ...any) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.log = append(f.log, fmt.Sprintf(format, args...))
}

func (f *fakeSubscription) GetSubscription(_ context.Context, req *pubsubpb.GetSubscriptionRequest) (*pubsubpb.Subscription, error) {
	return &pubsubpb.Subscription{Name: req.GetSubscription()}, nil
}

func (f *fakeSubscription) Pull(ctx context.Context, _ *pubsubpb.PullRequest) (*pubsubpb.PullResponse, error) {
	if f.onPull != nil {
		f.onPull()
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if len(f.batches) == 0 {
		return &pubsubpb.PullResponse{}, nil
	}
	b := f.batches[0]
	f.batches = f.batches[1:]
	f.log = append(f.log, fmt.Sprintf("pull %d", len(b)))
	return &pubsubpb.PullResponse{ReceivedMessages: b}, nil
}

func (f *fakeSubscription) Acknowledge(_ context.Context, req *pubsubpb.AcknowledgeRequest) error {
	f.record("ack %s", strings.Join(req.GetAckIds(), ","))
	return nil
}

func (f *fakeSubscription) ModifyAckDeadline(_ context.Context, req *pubsubpb.ModifyAckDeadlineRequest) error {
	f.record("modack %d %s", req.GetAckDeadlineSeconds(), strings.Join(req.GetAckIds(), ","))
	return nil
}

func (f *fakeSubscription) publish(_ context.Context, msgs []*pubsub.Message) []error {
	errs := make([]error, len(msgs))
	var ids []string
	for i, m := range msgs {
		id := m.Attributes["messageId"]
		ids = append(ids, id)
		if f.refuse[id] {
			errs[i] = errors.New("refused")
		}
	}
	f.record("publish %s", strings.Join(ids, ","))
	return errs
}

// dl is a dead letter of account A with messageId id, class "c", received
// with ackID.
func dl(t *testing.T, pubsubID, ackID, id string) *pubsubpb.ReceivedMessage {
	enc := encode(t, keyA, fmt.Sprintf(`{"type":"track","event":"E","userId":"u","messageId":%q}`, id))
	a := enc.Attributes
	a["errorClass"] = "c"
	a["error"] = "e"
	return &pubsubpb.ReceivedMessage{AckId: ackID, Message: &pubsubpb.PubsubMessage{MessageId: pubsubID, Data: enc.Data, Attributes: a}}
}

func newReplayer(f *fakeSubscription, flt filter) (*replayer, *bytes.Buffer, *bytes.Buffer) {
	var stdout, stderr bytes.Buffer
	return &replayer{
		subs: f, publisher: f, subscription: "projects/p/subscriptions/dead", topic: "main",
		filter: flt, wait: time.Millisecond, progress: time.Hour,
		stdout: &stdout, stderr: &stderr, now: time.Now,
	}, &stdout, &stderr
}

// TestReplayerAcksOnlyConfirmed checks the order of calls: a batch is
// leased, published, and only then are the confirmed messages acked; the
// refused one and the ones that do not match are released at the end, and
// a message seen again is not published twice.
func TestReplayerAcksOnlyConfirmed(t *testing.T) {
	other := dl(t, "4", "ack-x", "x")
	other.Message.Attributes["errorClass"] = "other"
	f := &fakeSubscription{
		batches: [][]*pubsubpb.ReceivedMessage{
			{dl(t, "1", "ack-1", "m1"), dl(t, "2", "ack-2", "m2"), other},
			// Redelivered in the same run (their earlier ack or lease was
			// lost): 1 moved, 4 kept.
			{dl(t, "1", "ack-1b", "m1"), dl(t, "4", "ack-xb", "x")},
		},
		refuse: map[string]bool{"m2": true},
	}
	r, stdout, stderr := newReplayer(f, filter{class: "c"})
	err := r.run(context.Background())
	if err == nil || !strings.Contains(err.Error(), "1 refused by the topic") {
		t.Errorf("run = %v, want an error about 1 refused message", err)
	}
	want := []string{
		"pull 3",
		"modack 120 ack-1,ack-2,ack-x",
		"publish m1,m2",
		"ack ack-1",
		"pull 2",
		"modack 120 ack-1b,ack-xb",
		"ack ack-1b",
		"modack 0 ack-x,ack-2",
		"modack 0 ack-xb",
	}
	if diff := cmp.Diff(want, f.log); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if want := "moved 1 to main, 1 did not match, 0 over -limit, 0 cannot be decoded, 1 refused by the topic, 0 not acked; 3 seen"; !strings.Contains(stdout.String(), want) {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
	if want := `kept message 2 (messageId "m2", account ` + envelope.AccountID(keyA)[:12] + `): publish to main: refused`; !strings.Contains(stderr.String(), want) {
		t.Errorf("stderr = %q, want %q", stderr, want)
	}
}

// TestReplayerLimitAndDryRun checks that a dry run publishes and acks
// nothing, lists only up to -limit, and releases everything.
func TestReplayerLimitAndDryRun(t *testing.T) {
	f := &fakeSubscription{batches: [][]*pubsubpb.ReceivedMessage{
		{dl(t, "1", "ack-1", "m1"), dl(t, "2", "ack-2", "m2"), dl(t, "3", "ack-3", "m3")},
		{dl(t, "4", "ack-4", "m4")},
	}}
	r, stdout, _ := newReplayer(f, filter{})
	r.dryRun, r.limit = true, 2
	if err := r.run(context.Background()); err != nil {
		t.Fatalf("run = %v", err)
	}
	want := []string{"pull 3", "modack 120 ack-1,ack-2,ack-3", "modack 0 ack-1,ack-2,ack-3"}
	if diff := cmp.Diff(want, f.log); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
	if got := strings.Count(stdout.String(), envelope.AccountID(keyA)[:12]); got != 2 {
		t.Errorf("dry run listed %d messages, want 2:\n%s", got, stdout)
	}
	if want := "dry run: 2 would move to main, 0 did not match, 1 over -limit"; !strings.Contains(stdout.String(), want) {
		t.Errorf("stdout = %q, want %q", stdout, want)
	}
}

// TestReplayerRenewsAndProgress runs through 2,500 messages on a clock that
// advances a minute per pull: held messages get their lease renewed, and a
// progress line appears at each thousand.
func TestReplayerRenewsAndProgress(t *testing.T) {
	var batches [][]*pubsubpb.ReceivedMessage
	var b []*pubsubpb.ReceivedMessage
	msg := dl(t, "0", "ack", "m")
	for i := range 2500 {
		b = append(b, &pubsubpb.ReceivedMessage{AckId: fmt.Sprintf("a%d", i), Message: &pubsubpb.PubsubMessage{
			MessageId: fmt.Sprint(i), Data: msg.Message.Data, Attributes: msg.Message.Attributes,
		}})
		if len(b) == 500 {
			batches = append(batches, b)
			b = nil
		}
	}
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	f := &fakeSubscription{batches: batches}
	f.onPull = func() { now = now.Add(time.Minute) }
	r, _, stderr := newReplayer(f, filter{class: "no such class"})
	r.now = func() time.Time { return now }
	if err := r.run(context.Background()); err != nil {
		t.Fatalf("run = %v", err)
	}
	renewals := 0
	for _, c := range f.log {
		if strings.HasPrefix(c, "modack 120 a0,") {
			renewals++
		}
	}
	// The first batch is leased on arrival (at minute 1) and renewed before
	// each pull once half the lease has passed: before pulls 3 to 7 (five
	// batches, then two empty pulls end the run).
	if renewals != 1+5 {
		t.Errorf("first batch leased %d times, want 6:\n%s", renewals, strings.Join(f.log, "\n"))
	}
	if got := strings.Count(stderr.String(), "replay: moved 0, skipped "); got != 2 {
		t.Errorf("stderr has %d progress lines, want 2 (at 1,000 and 2,000):\n%s", got, stderr)
	}
}

// TestReplayerInterrupted checks that an interrupted run releases what it
// holds and says so.
func TestReplayerInterrupted(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	f := &fakeSubscription{batches: [][]*pubsubpb.ReceivedMessage{{dl(t, "1", "ack-1", "m1")}, {dl(t, "2", "ack-2", "m2")}}}
	pulls := 0
	f.onPull = func() {
		if pulls++; pulls == 2 {
			cancel()
		}
	}
	r, _, _ := newReplayer(f, filter{class: "other"})
	err := r.run(ctx)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("run = %v, want context.Canceled", err)
	}
	want := []string{"pull 1", "modack 120 ack-1", "modack 0 ack-1"}
	if diff := cmp.Diff(want, f.log); diff != "" {
		t.Errorf("calls (-want +got):\n%s", diff)
	}
}
