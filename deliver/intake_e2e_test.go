package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"net/http"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/gcpclient"
	"github.com/startdeliver/segment-destination/shared/segment"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// TestPushMode runs deliver as on Cloud Run: the emulator pushes each
// message to /pubsub/push.
func TestPushMode(t *testing.T) {
	p := newPipeline(t, pipelineOptions{mode: "push"})
	key := "sd-push-key"
	p.addAccount(key, simpleAccount)
	p.send(key, `{"type":"track","userId":"push-user","event":"Pushed","messageId":"push-1"}`, "")
	// The override field is absent and the event has a userId: a dead
	// letter, since a config fix and a replay can deliver it.
	p.send(key, `{"type":"track","userId":"push-user","event":"Pushed","messageId":"push-2"}`, `{"segmentOverrideMatchingField":"properties.missing"}`)
	waitfor.Within(t, 60*time.Second, "pushed usage", func() bool { return len(p.sd.Usage(key)) == 1 })
	dead := p.deadLetters(1, 60*time.Second)
	if len(dead) != 1 || dead[0].Attributes["errorClass"] != "no-match-value" {
		t.Fatalf("dead letters = %v, want push-2 with no-match-value", dead)
	}
	if u := p.sd.Usage(key)[0]; u["externalId"] != "push-1" {
		t.Errorf("usage = %v, want push-1", u)
	}
}

// TestPushRequiresToken: with PUSH_AUDIENCE set, a push request without a
// valid Google OIDC token is refused and has no effect.
func TestPushRequiresToken(t *testing.T) {
	p := newPipeline(t, pipelineOptions{mode: "push", noSubscription: true,
		deliverEnv: map[string]string{"PUSH_AUDIENCE": "https://deliver.example.run.app"}})
	key := "sd-oidc-key"
	p.addAccount(key, simpleAccount)
	body := pushBody(t, key, `{"type":"track","userId":"u","event":"e","messageId":"oidc-1"}`)
	for name, auth := range map[string]string{"no token": "", "not a JWT": "Bearer not-a-token", "basic": "Basic eDp5"} {
		req, _ := http.NewRequest(http.MethodPost, p.deliverURL+"/pubsub/push", strings.NewReader(body))
		if auth != "" {
			req.Header.Set("Authorization", auth)
		}
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusUnauthorized {
			t.Errorf("%s: status %d, want 401", name, resp.StatusCode)
		}
	}
	if n := p.sd.TotalCalls(); n != 0 {
		t.Errorf("refused pushes made %d Startdeliver calls, want 0", n)
	}
}

// TestPushBadRequests: a body that is not a push request gets 400, so that
// Pub/Sub's dead-letter policy takes it instead of retrying forever.
func TestPushBadRequests(t *testing.T) {
	p := newPipeline(t, pipelineOptions{mode: "push", noSubscription: true})
	for _, body := range []string{`not json`, `{"message":{"data":"%%%"}}`} {
		resp, err := http.Post(p.deliverURL+"/pubsub/push", "application/json", strings.NewReader(body))
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusBadRequest {
			t.Errorf("push %q = %d, want 400", body, resp.StatusCode)
		}
	}
}

// TestCloudEventMode feeds deliver Eventarc CloudEvents built from the
// messages ingest really published.
func TestCloudEventMode(t *testing.T) {
	p := newPipeline(t, pipelineOptions{mode: "push", noSubscription: true})
	tap := p.topic + "-tap"
	emulatortest.CreateSubscription(t, p.ps, p.env.Project, p.topic, tap, emulatortest.SubscriptionOptions{})
	key := "sd-ce-key"
	p.addAccount(key, simpleAccount)
	p.send(key, `{"type":"page","userId":"ce-user","name":"Docs","messageId":"ce-1"}`, "")
	msgs := emulatortest.Receive(t, p.ps, tap, 1, 20*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("tap received %d, want 1", len(msgs))
	}
	m := msgs[0]
	data, _ := json.Marshal(map[string]any{
		"subscription": gcpclient.SubscriptionName(p.env.Project, tap),
		"message": map[string]any{
			"data": base64.StdEncoding.EncodeToString(m.Data), "attributes": m.Attributes,
			"messageId": m.ID, "publishTime": m.PublishTime.Format(time.RFC3339Nano),
		},
	})
	post := func() int {
		req, _ := http.NewRequest(http.MethodPost, p.deliverURL+"/", strings.NewReader(string(data)))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("ce-specversion", "1.0")
		req.Header.Set("ce-id", m.ID)
		req.Header.Set("ce-source", "//pubsub.googleapis.com/"+gcpclient.TopicName(p.env.Project, p.topic))
		req.Header.Set("ce-type", "google.cloud.pubsub.topic.v1.messagePublished")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		return resp.StatusCode
	}
	if code := post(); code != 200 {
		t.Fatalf("CloudEvent = %d, want 200", code)
	}
	if code := post(); code != 200 { // Eventarc retries: no second effect
		t.Fatalf("repeated CloudEvent = %d, want 200", code)
	}
	u := p.sd.Usage(key)
	if len(u) != 1 || u[0]["type"] != "page" || u[0]["name"] != "Docs" {
		t.Errorf("usage = %v, want one page 'Docs'", u)
	}
	resp, err := http.Post(p.deliverURL+"/", "application/json", strings.NewReader(`{}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest {
		t.Errorf("non-CloudEvent POST / = %d, want 400", resp.StatusCode)
	}
}

// pushBody builds a push request for an event of key, as ingest would have
// published it.
func pushBody(t *testing.T, key, event string) string {
	t.Helper()
	msg := envelopeFor(t, key, event)
	b, _ := json.Marshal(map[string]any{
		"subscription":    "projects/p/subscriptions/s",
		"deliveryAttempt": 1,
		"message":         map[string]any{"data": base64.StdEncoding.EncodeToString(msg.Data), "attributes": msg.Attributes, "messageId": "1"},
	})
	return string(b)
}

func envelopeFor(t *testing.T, key, event string) *envelope.Encoded {
	t.Helper()
	ev, err := segment.Decode([]byte(event))
	if err != nil {
		t.Fatal(err)
	}
	enc, err := envelope.Encode(&envelope.Message{AccountID: envelope.AccountID(key), APIKey: key, ReceivedAt: time.Now(), Event: ev})
	if err != nil {
		t.Fatal(err)
	}
	return enc
}

// TestAccountIsolation interleaves two accounts: each Startdeliver sees only
// its own data, and one whose Startdeliver fails does not hold back the
// other.
func TestAccountIsolation(t *testing.T) {
	p := newPipeline(t, pipelineOptions{deliverEnv: map[string]string{"ACCOUNT_CONCURRENCY": "2"}})
	good, bad := "sd-good-key", "sd-bad-key"
	p.addAccount(good, simpleAccount)
	other := startdelivertest.NewServer(bad)
	defer other.Close()
	other.FailFraction(1, startdelivertest.Fault{Status: 503})
	p.addAccount(bad, fmt.Sprintf(`{"name":"Bad","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId"},"startdeliverApiUrl":%q}`, other.URL()))
	for i := range 20 {
		p.send(bad, fmt.Sprintf(`{"type":"track","userId":"b-%d","event":"e","messageId":"bad-%d"}`, i, i), "")
		p.send(good, fmt.Sprintf(`{"type":"track","userId":"g-%d","event":"e","messageId":"good-%d"}`, i%3, i), "")
	}
	waitfor.Within(t, 60*time.Second, "all 20 events of the healthy account", func() bool { return len(p.sd.Usage(good)) == 20 })
	if n := len(other.Usage(bad)); n != 0 {
		t.Errorf("failing account has %d usage records, want 0", n)
	}
	if other.TotalCalls() == 0 {
		t.Errorf("the failing account's Startdeliver was never called: the test proves nothing")
	}
	if n := len(p.sd.Users(bad)) + len(p.sd.Usage(bad)); n != 0 {
		t.Errorf("the healthy Startdeliver holds %d records of the other account", n)
	}
	if n := len(other.Users(good)); n != 0 {
		t.Errorf("the other Startdeliver holds %d users of the healthy account", n)
	}
}

// TestInvalidConfigIsDeadLettered: an account whose stored config cannot
// apply has its events dead-lettered with the validation message; other
// accounts are unaffected.
func TestInvalidConfigIsDeadLettered(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	broken, fine := "sd-broken-key", "sd-fine-key"
	p.addAccount(fine, simpleAccount)
	p.sd.AddKey(broken)
	// Written past the accounts command's validation, as a hand edit would.
	_, err := p.fs.Collection(p.accounts).Doc(envelope.AccountID(broken)).Set(context.Background(), map[string]any{
		"name": "Broken", "settings": map[string]any{"startdeliverUserCustomFieldToMatchOn": "externalId"},
		"segmentApp": map[string]any{"enabled": true, "externalMatchingField": map[string]any{"field": "userId"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	p.send(broken, `{"type":"track","userId":"u","event":"e","messageId":"broken-1"}`, "")
	p.send(fine, `{"type":"track","userId":"u","event":"e","messageId":"fine-1"}`, "")
	waitfor.Within(t, 30*time.Second, "the fine account's event", func() bool { return len(p.sd.Usage(fine)) == 1 })

	// The dead letter waits in the inspection subscription, with its reason.
	replay := buildBinary(t, "replay", "./cmd/replay")
	var listing string
	waitfor.Within(t, 60*time.Second, "the dead letter in a dry run", func() bool {
		listing = p.runReplay(replay, "-dry-run")
		return strings.Contains(listing, "broken-1")
	})
	if !strings.Contains(listing, "invalid-config") || !strings.Contains(listing, "startdeliverMatchingField") {
		t.Errorf("dry run = %q, want broken-1 with invalid-config naming startdeliverMatchingField", listing)
	}
	if strings.Contains(listing, broken) {
		t.Errorf("dry run shows the API key")
	}
	if n := len(p.sd.Usage(broken)); n != 0 {
		t.Fatalf("broken account has %d usage records before the fix", n)
	}

	// The owner fixes the config and replays: the event arrives.
	p.addAccount(broken, simpleAccount)
	p.runReplay(replay, "-class", "invalid-config", "-account", envelope.AccountID(broken)[:12])
	waitfor.Within(t, 60*time.Second, "the replayed event", func() bool { return len(p.sd.Usage(broken)) == 1 })
	if u := p.sd.Usage(broken)[0]; u["externalId"] != "broken-1" {
		t.Errorf("replayed usage = %v, want broken-1", u)
	}
}

// runReplay runs the replay command against the pipeline's topics.
func (p *pipeline) runReplay(bin string, args ...string) string {
	p.t.Helper()
	cmd := exec.Command(bin, append(args, "-wait", "1s")...)
	dieWithTest(cmd)
	cmd.Env = []string{
		"GOOGLE_CLOUD_PROJECT=" + p.env.Project,
		"PUBSUB_EMULATOR_HOST=" + p.env.PubSubHost,
		"PUBSUB_TOPIC=" + p.topic,
		"DEAD_LETTER_SUBSCRIPTION=" + p.deadSub,
	}
	out, err := cmd.CombinedOutput()
	if err != nil {
		p.t.Fatalf("replay %v: %v\n%s", args, err, out)
	}
	return string(out)
}
