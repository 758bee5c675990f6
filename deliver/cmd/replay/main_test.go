package main

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"maps"
	"slices"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/google/go-cmp/cmp"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/gcpclient"
	"github.com/startdeliver/segment-destination/shared/segment"
)

const (
	keyA = "replay-test-key-a"
	keyB = "replay-test-key-b"
)

// deadLetter is a message as it sits in the dead-letter topic, with what
// the replay must make of it.
type deadLetter struct {
	messageID string
	data      []byte
	attrs     map[string]string
	// original is what ingest published: the attributes and ordering key
	// the replayed message must carry (replayedAt aside).
	original *envelope.Encoded
}

// encode builds ingest's message for one event.
func encode(t *testing.T, key, event string) *envelope.Encoded {
	t.Helper()
	ev, err := segment.Decode([]byte(event))
	if err != nil {
		t.Fatalf("segment.Decode(%q): %v", event, err)
	}
	enc, err := envelope.Encode(&envelope.Message{AccountID: envelope.AccountID(key), APIKey: key, ReceivedAt: time.Now(), Event: ev})
	if err != nil {
		t.Fatalf("envelope.Encode: %v", err)
	}
	return enc
}

// failed is enc as deliver dead-letters it.
func failed(enc *envelope.Encoded, class, reason string) map[string]string {
	a := maps.Clone(enc.Attributes)
	a["error"] = reason
	a["errorClass"] = class
	a["failedAt"] = "2026-01-02T03:04:05Z"
	a["sourceMessageId"] = "1234567"
	return a
}

// deadLetters are the test's dead-letter topic: two accounts, several
// classes, one forwarded by Pub/Sub's dead-letter policy and one whose
// body cannot be decoded.
func deadLetters(t *testing.T) []deadLetter {
	t.Helper()
	a1 := encode(t, keyA, `{"type":"track","event":"Report Exported","userId":"ua1","messageId":"a1"}`)
	a2 := encode(t, keyA, `{"type":"identify","userId":"ua2","traits":{"email":"ua2@example.com"},"messageId":"a2"}`)
	b1 := encode(t, keyB, `{"type":"track","event":"Login","userId":"ub1","messageId":"b1"}`)
	b2 := encode(t, keyB, `{"type":"page","name":"Home","anonymousId":"anon-b2","messageId":"b2"}`)
	forwarded := maps.Clone(b2.Attributes)
	forwarded["CloudPubSubDeadLetterSourceDeliveryCount"] = "5"
	forwarded["CloudPubSubDeadLetterSourceSubscription"] = "segment-events-deliver"
	forwarded["CloudPubSubDeadLetterSourceSubscriptionProject"] = "local-project"
	return []deadLetter{
		{messageID: "a1", data: a1.Data, attrs: failed(a1, "invalid-config", "config: field\n\"plan\" unknown"), original: a1},
		{messageID: "a2", data: a2.Data, attrs: failed(a2, "startdeliver-rejected", "startdeliver: 422 Unprocessable Entity"), original: a2},
		{messageID: "b1", data: b1.Data, attrs: failed(b1, "invalid-config", "config: no usage mapping"), original: b1},
		{messageID: "b2", data: b2.Data, attrs: forwarded, original: b2},
		{messageID: "bad", data: []byte("not an envelope"), attrs: map[string]string{
			"v": "1", "type": "track", "accountId": envelope.AccountID(keyA), "messageId": "bad",
			"error": "decode envelope: invalid character", "errorClass": "invalid-config",
		}},
	}
}

// pubsubEnv is a main topic with a subscription and a dead-letter topic
// with its inspection subscription, filled with deadLetters.
type pubsubEnv struct {
	client  *pubsub.Client
	getenv  func(string) string
	project string
	mainSub string
	deadSub string
}

func setup(t *testing.T, letters []deadLetter) *pubsubEnv {
	t.Helper()
	env := emulatortest.Require(t)
	ctx := context.Background()
	c, err := gcpclient.PubSub(ctx, env.Project, env.Getenv(nil), &pubsub.ClientConfig{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	e := &pubsubEnv{
		client:  c,
		project: env.Project,
		mainSub: emulatortest.Name(t, "main-sub"),
		deadSub: emulatortest.Name(t, "dead-inspect"),
	}
	mainTopic, deadTopic := emulatortest.Name(t, "main"), emulatortest.Name(t, "dead")
	emulatortest.CreateTopic(t, c, env.Project, mainTopic)
	emulatortest.CreateTopic(t, c, env.Project, deadTopic)
	emulatortest.CreateSubscription(t, c, env.Project, mainTopic, e.mainSub, emulatortest.SubscriptionOptions{Ordering: true})
	emulatortest.CreateSubscription(t, c, env.Project, deadTopic, e.deadSub, emulatortest.SubscriptionOptions{})
	e.getenv = env.Getenv(map[string]string{"PUBSUB_TOPIC": mainTopic, "DEAD_LETTER_SUBSCRIPTION": e.deadSub})

	p := c.Publisher(deadTopic)
	defer p.Stop()
	var results []*pubsub.PublishResult
	for _, l := range letters {
		results = append(results, p.Publish(ctx, &pubsub.Message{Data: l.data, Attributes: l.attrs}))
	}
	for _, r := range results {
		if _, err := r.Get(ctx); err != nil {
			t.Fatalf("publish dead letter: %v", err)
		}
	}
	return e
}

// drain returns every message left in sub by messageId attribute, acking
// them: it waits until want have arrived (or 10 s passed), then checks
// with an immediate pull that nothing else is there.
func (e *pubsubEnv) drain(t *testing.T, sub string, want int) map[string]*pubsub.Message {
	t.Helper()
	got := map[string]*pubsub.Message{}
	if want > 0 {
		for _, m := range emulatortest.Receive(t, e.client, sub, want, 10*time.Second) {
			got[m.Attributes["messageId"]] = m
		}
	}
	resp, err := e.client.SubscriptionAdminClient.Pull(context.Background(), &pubsubpb.PullRequest{
		Subscription: gcpclient.SubscriptionName(e.project, sub), MaxMessages: 100, ReturnImmediately: true,
	})
	if err != nil {
		t.Fatalf("pull %s: %v", sub, err)
	}
	for _, rm := range resp.GetReceivedMessages() {
		got[rm.GetMessage().GetAttributes()["messageId"]] = &pubsub.Message{
			Data: rm.GetMessage().GetData(), Attributes: rm.GetMessage().GetAttributes(), OrderingKey: rm.GetMessage().GetOrderingKey(),
		}
	}
	return got
}

func TestReplay(t *testing.T) {
	prefixA := envelope.AccountID(keyA)[:8]
	all := []string{"a1", "a2", "b1", "b2", "bad"}
	tests := []struct {
		name string
		args []string
		// moved are n of candidates (all of them when n is 0).
		candidates []string
		n          int
		wantErr    bool
		// wantListed are the messageIds a dry run lists.
		wantListed []string
		// wantStderr is part of what stderr must say.
		wantStderr string
		wantStdout string
	}{
		{
			name:       "dry run lists and moves nothing",
			args:       []string{"-dry-run"},
			wantListed: []string{"a1", "a2", "b1", "b2"},
			wantStderr: `kept message`,
			wantStdout: "dry run: 4 would move",
		},
		{
			name:       "dry run of one class",
			args:       []string{"-dry-run", "-class", "startdeliver-rejected"},
			wantListed: []string{"a2"},
			wantStdout: "dry run: 1 would move",
		},
		{
			name:       "account prefix and class",
			args:       []string{"-account", prefixA, "-class", "invalid-config"},
			candidates: []string{"a1"},
			wantErr:    true, // "bad" matches and cannot be decoded
			wantStderr: `(messageId "bad", account ` + envelope.AccountID(keyA)[:12] + `): decode envelope`,
			wantStdout: "moved 1 to",
		},
		{
			name:       "all",
			args:       []string{"-all"},
			candidates: []string{"a1", "a2", "b1", "b2"},
			wantErr:    true,
			wantStdout: "moved 4 to",
		},
		{
			name:       "full account id",
			args:       []string{"-account", envelope.AccountID(keyB)},
			candidates: []string{"b1", "b2"},
			wantStdout: "moved 2 to",
		},
		{
			name:       "forwarded by the dead-letter policy",
			args:       []string{"-class", "max-delivery-attempts"},
			candidates: []string{"b2"},
		},
		{
			name:       "message",
			args:       []string{"-message", "a2"},
			candidates: []string{"a2"},
		},
		{
			name:       "limit",
			args:       []string{"-account", envelope.AccountID(keyB)[:20], "-limit", "1"},
			candidates: []string{"b1", "b2"},
			n:          1,
			wantStdout: "moved 1 to",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			t.Parallel()
			letters := deadLetters(t)
			e := setup(t, letters)
			var stdout, stderr bytes.Buffer
			args := append([]string{"-wait", "300ms"}, tt.args...)
			start := time.Now()
			err := run(context.Background(), args, e.getenv, &stdout, &stderr)
			if (err != nil) != tt.wantErr {
				t.Fatalf("run(%q) = %v, want error %v\nstdout:\n%s\nstderr:\n%s", args, err, tt.wantErr, &stdout, &stderr)
			}
			if !strings.Contains(stdout.String(), tt.wantStdout) {
				t.Errorf("run(%q) stdout = %q, want it to contain %q", args, &stdout, tt.wantStdout)
			}
			if !strings.Contains(stderr.String(), tt.wantStderr) {
				t.Errorf("run(%q) stderr = %q, want it to contain %q", args, &stderr, tt.wantStderr)
			}
			if tt.wantListed != nil {
				var listed []string
				for _, line := range strings.Split(stdout.String(), "\n")[1:] {
					if f := strings.Fields(line); len(f) > 0 && !strings.HasPrefix(line, "dry run:") {
						listed = append(listed, f[0])
					}
				}
				slices.Sort(listed)
				if diff := cmp.Diff(tt.wantListed, listed); diff != "" {
					t.Errorf("run(%q) listed (-want +got):\n%s", args, diff)
				}
			}

			n := tt.n
			if n == 0 {
				n = len(tt.candidates)
			}
			moved := e.drain(t, e.mainSub, n)
			if len(moved) != n {
				t.Errorf("run(%q) moved %v, want %d of %v", args, slices.Sorted(maps.Keys(moved)), n, tt.candidates)
			}
			byID := map[string]deadLetter{}
			for _, l := range letters {
				byID[l.messageID] = l
			}
			for id, m := range moved {
				if !slices.Contains(tt.candidates, id) {
					t.Errorf("run(%q) moved %s, want only %v", args, id, tt.candidates)
					continue
				}
				orig := byID[id].original
				at, err := time.Parse(time.RFC3339, m.Attributes["replayedAt"])
				if err != nil || at.Before(start.Add(-time.Second)) {
					t.Errorf("moved %s: replayedAt = %q, want the time of the run", id, m.Attributes["replayedAt"])
				}
				want := maps.Clone(orig.Attributes)
				want["replayedAt"] = m.Attributes["replayedAt"]
				if diff := cmp.Diff(want, m.Attributes); diff != "" {
					t.Errorf("moved %s: attributes (-want +got):\n%s", id, diff)
				}
				if m.OrderingKey != orig.OrderingKey {
					t.Errorf("moved %s: ordering key = %q, want %q", id, m.OrderingKey, orig.OrderingKey)
				}
				if !bytes.Equal(m.Data, orig.Data) {
					t.Errorf("moved %s: body = %s, want %s", id, m.Data, orig.Data)
				}
			}

			var wantLeft []string
			for _, id := range all {
				if _, ok := moved[id]; !ok {
					wantLeft = append(wantLeft, id)
				}
			}
			left := e.drain(t, e.deadSub, len(wantLeft))
			if diff := cmp.Diff(wantLeft, slices.Sorted(maps.Keys(left))); diff != "" {
				t.Errorf("run(%q) left in the dead-letter subscription (-want +got):\n%s", args, diff)
			}
			for id, m := range left {
				if diff := cmp.Diff(byID[id].attrs, m.Attributes); diff != "" {
					t.Errorf("left %s: attributes changed (-want +got):\n%s", id, diff)
				}
			}
		})
	}
}

// TestReplayDryRunListing checks the columns of a dry run's line.
func TestReplayDryRunListing(t *testing.T) {
	e := setup(t, deadLetters(t)[:1])
	var stdout, stderr bytes.Buffer
	if err := run(context.Background(), []string{"-dry-run", "-wait", "300ms"}, e.getenv, &stdout, &stderr); err != nil {
		t.Fatalf("run: %v\n%s", err, &stderr)
	}
	lines := strings.Split(strings.TrimSpace(stdout.String()), "\n")
	if len(lines) != 3 {
		t.Fatalf("run -dry-run printed %d lines, want header, one message and summary:\n%s", len(lines), &stdout)
	}
	got := strings.Fields(lines[1])
	want := []string{"a1", envelope.AccountID(keyA)[:12], "track", "invalid-config", "2026-01-02T03:04:05Z", "config:", "field", `"plan"`, "unknown"}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("dry-run line (-want +got):\n%s", diff)
	}
	if want := fmt.Sprintf("dry run: 1 would move to %s", e.getenv("PUBSUB_TOPIC")); !strings.HasPrefix(lines[2], want) {
		t.Errorf("summary = %q, want prefix %q", lines[2], want)
	}
}

// TestReplayMissingSubscription checks that a wrong subscription name fails
// at once rather than looking like an empty subscription.
func TestReplayMissingSubscription(t *testing.T) {
	env := emulatortest.Require(t)
	getenv := env.Getenv(map[string]string{"DEAD_LETTER_SUBSCRIPTION": emulatortest.Name(t, "missing")})
	err := run(context.Background(), []string{"-all"}, getenv, io.Discard, io.Discard)
	if status.Code(err) != codes.NotFound {
		t.Errorf("run with a missing subscription = %v, want NotFound", err)
	}
}
