package main

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"maps"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	analytics "github.com/segmentio/analytics-go/v3"

	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/keyseal"
)

// stack is one ingest process under test, publishing to a fresh topic with
// a subscription to read what it published.
type stack struct {
	env   emulatortest.Env
	url   string
	key   string
	sub   string
	stop  func()
	topic string
	// deliveries is the collection of event records ingest reads.
	deliveries string
}

const demoAccount = `{
  "name": "Acme Inc",
  "settings": {"startdeliverUserCustomFieldToMatchOn": "externalId"}
}`

// startIngest runs ingest on the emulators; extra adds to or overrides its
// environment.
func startIngest(t *testing.T, pubsubHost string, extra ...map[string]string) *stack {
	t.Helper()
	env := emulatortest.Require(t)
	ps := emulatortest.PubSub(t, env)
	fs := emulatortest.Firestore(t, env)
	topic := emulatortest.Name(t, "events")
	sub := topic + "-sub"
	emulatortest.CreateTopic(t, ps, env.Project, topic)
	emulatortest.CreateSubscription(t, ps, env.Project, topic, sub, emulatortest.SubscriptionOptions{Ordering: true})
	collection := emulatortest.Name(t, "accounts")
	deliveries := emulatortest.Name(t, "deliveries")
	key := "sd-key-" + collection
	a, err := account.Parse([]byte(demoAccount))
	if err != nil {
		t.Fatal(err)
	}
	if err := accountstore.New(fs, accountstore.Options{Collection: collection}).Put(context.Background(), envelope.AccountID(key), a); err != nil {
		t.Fatal(err)
	}
	if pubsubHost == "" {
		pubsubHost = env.PubSubHost
	}
	vars := map[string]string{
		"HOST":                   "127.0.0.1",
		"PORT":                   "0",
		"PUBSUB_TOPIC":           topic,
		"ACCOUNTS_COLLECTION":    collection,
		"DELIVERIES_COLLECTION":  deliveries,
		"PUBSUB_EMULATOR_HOST":   pubsubHost,
		"PUBSUB_PUBLISH_TIMEOUT": "3s",
		"OTEL_TRACES_EXPORTER":   "none",
		"OTEL_METRICS_EXPORTER":  "none",
		"LOG_LEVEL":              "error",
	}
	for _, m := range extra {
		maps.Copy(vars, m)
	}
	getenv := env.Getenv(vars)
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	done := make(chan error, 1)
	go func() { done <- run(ctx, getenv, ready) }()
	var addr string
	select {
	case addr = <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("ingest did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("ingest did not start within 30s")
	}
	s := &stack{env: env, url: "http://" + addr, key: key, sub: sub, topic: topic, deliveries: deliveries}
	var once sync.Once
	s.stop = func() {
		once.Do(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("ingest run: %v", err)
			}
		})
	}
	t.Cleanup(s.stop)
	return s
}

func (s *stack) post(t *testing.T, path, body string) (int, string) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.url+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(s.key+":")))
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// TestOrderingKeyWhenEnabled: with PUBSUB_ORDERING=true each message
// carries its account and person as its ordering key.
func TestOrderingKeyWhenEnabled(t *testing.T) {
	s := startIngest(t, "", map[string]string{"PUBSUB_ORDERING": "true"})
	if code, b := s.post(t, "/", `{"type":"track","userId":"97980cfea0067","event":"Opened","messageId":"m-ord-1"}`); code != 200 {
		t.Fatalf("POST / = %d %s, want 200", code, b)
	}
	msgs := emulatortest.Receive(t, emulatortest.PubSub(t, s.env), s.sub, 1, 20*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("received %d messages, want 1", len(msgs))
	}
	if want := envelope.AccountID(s.key) + ":97980cfea0067"; msgs[0].OrderingKey != want {
		t.Errorf("ordering key = %q, want %q", msgs[0].OrderingKey, want)
	}
}

func TestPublishedEventArrivesIntact(t *testing.T) {
	s := startIngest(t, "")
	body := `{"type":"track","userId":"97980cfea0067","event":"Login Button Clicked","messageId":"m-int-1","properties":{"plan":"pro","n":1.25},"sentAt":null,"version":"2","integrations":{"Warehouses":{"all":false}}}`
	if code, b := s.post(t, "/", body); code != 200 {
		t.Fatalf("POST / = %d %s, want 200", code, b)
	}
	ps := emulatortest.PubSub(t, s.env)
	msgs := emulatortest.Receive(t, ps, s.sub, 1, 20*time.Second)
	if len(msgs) != 1 {
		t.Fatalf("received %d messages, want 1", len(msgs))
	}
	m := msgs[0]
	want := map[string]string{envelope.AttrType: "track", envelope.AttrMessageID: "m-int-1", envelope.AttrAccountID: envelope.AccountID(s.key), envelope.AttrVersion: "2"}
	for k, v := range want {
		if m.Attributes[k] != v {
			t.Errorf("attribute %s = %q, want %q", k, m.Attributes[k], v)
		}
	}
	if m.OrderingKey != "" {
		t.Errorf("ordering key = %q, want none by default (PUBSUB_ORDERING)", m.OrderingKey)
	}
	got, err := envelope.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	var orig map[string]any
	_ = json.Unmarshal([]byte(body), &orig)
	for k := range orig {
		if _, ok := got.Event.Raw[k]; !ok {
			t.Errorf("field %s lost on the way", k)
		}
	}
	if p := got.Event.Properties; p["plan"] != "pro" || p["n"] != json.Number("1.25") {
		t.Errorf("properties = %v, want plan=pro n=1.25", p)
	}
	// The key is sealed (version 2), not in the body; with no keyset
	// configured ingest sealed it with the emulator's development keyset,
	// whose private half (deliver's) opens it for this message only.
	if strings.Contains(string(m.Data), s.key) || got.APIKey != "" || len(got.SealedKey) == 0 {
		t.Fatalf("message body holds the plain key or no sealed key")
	}
	priv, err := keyseal.DevelopmentPrivate(context.Background(), emulatortest.Firestore(t, s.env), keyseal.DevelopmentCollection)
	if err != nil {
		t.Fatal(err)
	}
	o, err := keyseal.NewOpener(priv)
	if err != nil {
		t.Fatal(err)
	}
	if k, err := o.Open(got.SealedKey, got.AccountID, "m-int-1"); err != nil || k != s.key {
		t.Errorf("Open(sealed key) = %q, %v; want the account's key", k, err)
	}
}

func TestPubSubOutageAnswers503(t *testing.T) {
	env := emulatortest.Require(t)
	px := newProxy(t, env.PubSubHost)
	s := startIngest(t, px.ln.Addr().String())
	if code, b := s.post(t, "/", `{"type":"track","userId":"u","event":"before","messageId":"before"}`); code != 200 {
		t.Fatalf("before the outage: %d %s, want 200", code, b)
	}
	px.down()
	for i := range 3 {
		code, b := s.post(t, "/", fmt.Sprintf(`{"type":"track","userId":"u%d","event":"during"}`, i))
		if code != http.StatusServiceUnavailable {
			t.Errorf("during the outage: %d %s, want 503", code, b)
		}
		if !strings.Contains(b, `"message"`) {
			t.Errorf("503 body %s has no message", b)
		}
	}
	resp, err := http.Get(s.url + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable {
		t.Errorf("/readyz during the outage = %d, want 503", resp.StatusCode)
	}
}

// TestSegmentLibrary drives ingest with Segment's own Go library and checks
// every event it sent is on the topic.
func TestSegmentLibrary(t *testing.T) {
	s := startIngest(t, "")
	client, err := analytics.NewWithConfig(s.key, analytics.Config{Endpoint: s.url, BatchSize: 25, Interval: 50 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	const n = 60
	sent := map[string]bool{}
	for i := range n {
		id := fmt.Sprintf("lib-%d", i)
		sent[id] = true
		var msg analytics.Message
		switch i % 4 {
		case 0:
			msg = analytics.Identify{MessageId: id, UserId: "97980cfea0067", Traits: analytics.NewTraits().SetEmail("ada@example.com")}
		case 1:
			msg = analytics.Track{MessageId: id, UserId: "97980cfea0067", Event: "Login Button Clicked", Properties: analytics.NewProperties().Set("n", i)}
		case 2:
			msg = analytics.Page{MessageId: id, AnonymousId: "anon-1", Name: "Home"}
		case 3:
			msg = analytics.Group{MessageId: id, UserId: "97980cfea0067", GroupId: "acme", Traits: analytics.NewTraits().SetName("Acme")}
		}
		if err := client.Enqueue(msg); err != nil {
			t.Fatal(err)
		}
	}
	if err := client.Close(); err != nil {
		t.Fatalf("flush: %v", err)
	}
	ps := emulatortest.PubSub(t, s.env)
	msgs := emulatortest.Receive(t, ps, s.sub, n, 30*time.Second)
	got := map[string]bool{}
	for _, m := range msgs {
		got[m.Attributes[envelope.AttrMessageID]] = true
	}
	for id := range sent {
		if !got[id] {
			t.Errorf("event %s sent by analytics-go is not on the topic", id)
		}
	}
}

func TestGracefulShutdownFlushes(t *testing.T) {
	s := startIngest(t, "")
	var wg sync.WaitGroup
	codes := make([]int, 20)
	for i := range codes {
		wg.Go(func() {
			codes[i], _ = s.post(t, "/v1/batch", fmt.Sprintf(`{"batch":[{"type":"track","userId":"u%d","event":"e","messageId":"sd-%d"}]}`, i, i))
		})
	}
	wg.Wait()
	start := time.Now()
	s.stop()
	if d := time.Since(start); d > 8*time.Second {
		t.Errorf("shutdown took %v, want within 8s", d)
	}
	ok := 0
	for _, c := range codes {
		if c == 200 {
			ok++
		}
	}
	ps := emulatortest.PubSub(t, s.env)
	msgs := emulatortest.Receive(t, ps, s.sub, ok, 20*time.Second)
	if len(msgs) < ok {
		t.Errorf("%d events answered 200 but %d reached the topic", ok, len(msgs))
	}
}

// TestBatchKeepsEachPersonsOrder: with ordering on, a /v1/batch's events
// reach the topic in the batch's order for each person (ordering key), so
// deliver applies a person's identify and track calls in the order Segment
// sent them.
func TestBatchKeepsEachPersonsOrder(t *testing.T) {
	s := startIngest(t, "", map[string]string{"PUBSUB_ORDERING": "true"})
	const n = 120
	var b strings.Builder
	b.WriteString(`{"batch":[`)
	for i := range n {
		if i > 0 {
			b.WriteByte(',')
		}
		who := []string{"ada", "bob", "cy"}[i%3]
		fmt.Fprintf(&b, `{"type":"track","userId":%q,"event":"e","messageId":"ord-%s-%03d"}`, who, who, i)
	}
	b.WriteString(`]}`)
	if code, body := s.post(t, "/v1/batch", b.String()); code != 200 {
		t.Fatalf("POST /v1/batch = %d %s, want 200", code, body)
	}
	msgs := emulatortest.Receive(t, emulatortest.PubSub(t, s.env), s.sub, n, 30*time.Second)
	if len(msgs) != n {
		t.Fatalf("received %d messages, want %d", len(msgs), n)
	}
	last := map[string]string{}
	for _, m := range msgs {
		id := m.Attributes[envelope.AttrMessageID]
		if prev := last[m.OrderingKey]; id <= prev {
			t.Errorf("key %s: %s arrived after %s", m.OrderingKey, id, prev)
		}
		last[m.OrderingKey] = id
	}
	if len(last) != 3 {
		t.Errorf("%d ordering keys, want 3", len(last))
	}
}
