package main

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
)

// The end-to-end tests run the real pipeline: events go to the ingest
// binary over HTTP, through Google's Pub/Sub emulator, to deliver, which
// reads accounts from the Firestore emulator and writes to the Startdeliver
// stand-in over HTTP.

var binaries struct {
	once sync.Once
	dir  string
	err  error
}

// buildBinary builds one of the repository's commands once per test run.
func buildBinary(t *testing.T, name, pkgDir string) string {
	t.Helper()
	binaries.once.Do(func() {
		binaries.dir, binaries.err = os.MkdirTemp("", "deliver-e2e-bin")
	})
	if binaries.err != nil {
		t.Fatal(binaries.err)
	}
	out := filepath.Join(binaries.dir, name)
	if _, err := os.Stat(out); err == nil {
		return out
	}
	cmd := exec.Command("go", "build", "-o", out, ".")
	cmd.Dir = pkgDir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("build %s: %v\n%s", name, err, b)
	}
	return out
}

func freePort(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return fmt.Sprint(ln.Addr().(*net.TCPAddr).Port)
}

// pipeline is one isolated instance of the whole system.
type pipeline struct {
	t           *testing.T
	env         emulatortest.Env
	ps          *pubsub.Client
	fs          *firestore.Client
	sd          *startdelivertest.Server
	topic       string
	sub         string
	deadTopic   string
	deadSub     string
	accounts    string
	deliveries  string
	identities  string
	ingestURL   string
	deliverURL  string
	stopDeliver func()
	deliverEnv  map[string]string
	ingestEnv   map[string]string
	// ingestLogs holds what the ingest process wrote.
	ingestLogs *syncBuffer
}

// syncBuffer is a bytes.Buffer safe for a process's writes and a test's
// reads at once.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

type pipelineOptions struct {
	// mode is pull (default) or push.
	mode string
	// noDeliver leaves deliver to the test.
	noDeliver bool
	// deliverEnv adds to deliver's environment.
	deliverEnv map[string]string
	// maxAttempts is the subscription's dead-letter policy (default 10).
	maxAttempts int32
	// noRetryPolicy leaves the subscription without a retry policy
	// (Pub/Sub redelivers a nack at once).
	noRetryPolicy bool
	// noOrdering makes a subscription without message ordering.
	noOrdering bool
	// ackDeadline is the subscription's (default 20s).
	ackDeadline time.Duration
	// ingestEnv adds to ingest's environment.
	ingestEnv map[string]string
	// pubsubHost replaces the Pub/Sub emulator (for the pstest fallback).
	pubsubHost string
	// noSubscription leaves deliver's subscription out: the test feeds
	// deliver itself.
	noSubscription bool
}

func newPipeline(t *testing.T, o pipelineOptions) *pipeline {
	t.Helper()
	env := emulatortest.Require(t)
	if o.pubsubHost != "" {
		env.PubSubHost = o.pubsubHost
	}
	p := &pipeline{t: t, env: env, ps: emulatortest.PubSub(t, env), fs: emulatortest.Firestore(t, env)}
	p.topic = emulatortest.Name(t, "events")
	p.sub = p.topic + "-deliver"
	p.deadTopic = p.topic + "-dead"
	p.deadSub = p.deadTopic + "-inspect"
	p.accounts = emulatortest.Name(t, "accounts")
	p.deliveries = p.accounts + "-deliveries"
	p.identities = p.accounts + "-identities"
	p.sd = startdelivertest.NewServer()
	t.Cleanup(p.sd.Close)

	emulatortest.CreateTopic(t, p.ps, env.Project, p.topic)
	emulatortest.CreateTopic(t, p.ps, env.Project, p.deadTopic)
	emulatortest.CreateSubscription(t, p.ps, env.Project, p.deadTopic, p.deadSub, emulatortest.SubscriptionOptions{})
	if o.maxAttempts == 0 {
		o.maxAttempts = 10
	}
	if o.ackDeadline == 0 {
		o.ackDeadline = 20 * time.Second
	}
	subOpts := emulatortest.SubscriptionOptions{Ordering: !o.noOrdering, AckDeadline: o.ackDeadline, DeadLetterTopic: p.deadTopic,
		MaxDeliveryAttempts: o.maxAttempts, MinBackoff: time.Second}
	if o.noRetryPolicy {
		subOpts.MinBackoff = 0
	}
	deliverPort := freePort(t)
	p.deliverURL = "http://127.0.0.1:" + deliverPort
	if o.mode == "push" {
		subOpts.PushEndpoint = p.deliverURL + "/pubsub/push"
	}
	if !o.noSubscription {
		emulatortest.CreateSubscription(t, p.ps, env.Project, p.topic, p.sub, subOpts)
	}

	p.ingestEnv = o.ingestEnv
	p.startIngest()
	p.deliverEnv = map[string]string{
		"HOST":                  "127.0.0.1",
		"PORT":                  deliverPort,
		"DELIVER_MODE":          o.mode,
		"PUBSUB_TOPIC":          p.topic,
		"PUBSUB_SUBSCRIPTION":   p.sub,
		"DEAD_LETTER_TOPIC":     p.deadTopic,
		"ACCOUNTS_COLLECTION":   p.accounts,
		"DELIVERIES_COLLECTION": p.deliveries,
		"IDENTITIES_COLLECTION": p.identities,
		"STARTDELIVER_API_URL":  p.sd.URL(),
		"OTEL_TRACES_EXPORTER":  "none",
		"OTEL_METRICS_EXPORTER": "none",
		"LOG_LEVEL":             "error",
	}
	for k, v := range o.deliverEnv {
		p.deliverEnv[k] = v
	}
	if !o.noDeliver {
		p.startDeliver()
	}
	return p
}

// startIngest runs the ingest binary, as Segment would reach it.
func (p *pipeline) startIngest() {
	t := p.t
	bin := buildBinary(t, "ingest", "../ingest")
	port := freePort(t)
	cmd := exec.Command(bin)
	dieWithTest(cmd)
	cmd.Env = []string{
		"HOST=127.0.0.1", "PORT=" + port,
		"GOOGLE_CLOUD_PROJECT=" + p.env.Project,
		"PUBSUB_EMULATOR_HOST=" + p.env.PubSubHost,
		"FIRESTORE_EMULATOR_HOST=" + p.env.FirestoreHost,
		"PUBSUB_TOPIC=" + p.topic,
		"ACCOUNTS_COLLECTION=" + p.accounts,
		// The event console reads deliver's records; explain looks up in
		// the stand-in.
		"DELIVERIES_COLLECTION=" + p.deliveries,
		"STARTDELIVER_API_URL=" + p.sd.URL(),
		"CONFIG_CACHE_TTL=1s",
		"OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none",
		"LOG_LEVEL=warn",
	}
	for k, v := range p.ingestEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs := &syncBuffer{}
	p.ingestLogs = logs
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		<-done
		if t.Failed() {
			t.Logf("ingest log:\n%s", logs.String())
		}
	})
	p.ingestURL = "http://127.0.0.1:" + port
	waitHTTP(t, p.ingestURL+"/healthz", done)
}

// startDeliver runs deliver in this process.
func (p *pipeline) startDeliver() {
	t := p.t
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan string, 1)
	errc := make(chan error, 1)
	env := p.env.Getenv(p.deliverEnv)
	go func() { errc <- run(ctx, env, ready) }()
	select {
	case <-ready:
	case err := <-errc:
		cancel()
		t.Fatalf("deliver did not start: %v", err)
	case <-time.After(30 * time.Second):
		cancel()
		t.Fatal("deliver did not start in 30s")
	}
	var once sync.Once
	p.stopDeliver = func() {
		once.Do(func() {
			cancel()
			if err := <-errc; err != nil {
				t.Errorf("deliver: %v", err)
			}
		})
	}
	t.Cleanup(p.stopDeliver)
}

func waitHTTP(t *testing.T, url string, died <-chan struct{}) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		select {
		case <-died:
			t.Fatalf("%s: process exited", url)
		default:
		}
		if resp, err := http.Get(url); err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return
			}
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Fatalf("%s did not answer in 30s", url)
}

// addAccount registers an account under key, and the key with the
// stand-in.
func (p *pipeline) addAccount(key, doc string) {
	p.t.Helper()
	a, err := account.Parse([]byte(doc))
	if err != nil {
		p.t.Fatal(err)
	}
	store := accountstore.New(p.fs, accountstore.Options{Collection: p.accounts})
	if err := store.Put(context.Background(), envelope.AccountID(key), a); err != nil {
		p.t.Fatal(err)
	}
	p.sd.AddKey(key)
}

// send posts one event to ingest's destination endpoint and wants 200.
func (p *pipeline) send(key, event string, settings string) {
	p.t.Helper()
	if code, body := p.post("/", key, event, settings); code != 200 {
		p.t.Fatalf("POST / %s = %d %s, want 200", event, code, body)
	}
}

func (p *pipeline) post(path, key, body, settings string) (int, string) {
	p.t.Helper()
	h := map[string]string{}
	if settings != "" {
		h["X-Segment-Settings"] = base64.StdEncoding.EncodeToString([]byte(settings))
	}
	return p.postWithHeaders(path, key, body, h)
}

// postWithHeaders posts body to ingest with key and extra headers.
func (p *pipeline) postWithHeaders(path, key, body string, headers map[string]string) (int, string) {
	p.t.Helper()
	req, _ := http.NewRequest(http.MethodPost, p.ingestURL+path, strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(key+":")))
	for k, v := range headers {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		p.t.Fatalf("POST %s: %v", path, err)
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

// usageByExternalID indexes the stand-in's usage records of key.
func (p *pipeline) usageByExternalID(key string) map[string][]startdelivertest.Record {
	out := map[string][]startdelivertest.Record{}
	for _, u := range p.sd.Usage(key) {
		id, _ := u["externalId"].(string)
		out[id] = append(out[id], u)
	}
	return out
}

// deadLetters pulls n messages from the dead-letter inspection
// subscription.
func (p *pipeline) deadLetters(n int, timeout time.Duration) []*pubsub.Message {
	p.t.Helper()
	return emulatortest.Receive(p.t, p.ps, p.deadSub, n, timeout)
}

func num(v any) string {
	switch v := v.(type) {
	case json.Number:
		return v.String()
	case nil:
		return ""
	}
	return fmt.Sprint(v)
}
