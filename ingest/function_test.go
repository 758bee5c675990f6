package main

import (
	"context"
	"encoding/base64"
	"fmt"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/GoogleCloudPlatform/functions-framework-go/funcframework"

	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
)

// TestFunctionsFramework serves ingest the way Cloud Run functions do: the
// framework's own server with FUNCTION_TARGET=Ingest, the handler built on
// its first request from the environment.
func TestFunctionsFramework(t *testing.T) {
	env := emulatortest.Require(t)
	ps := emulatortest.PubSub(t, env)
	fs := emulatortest.Firestore(t, env)
	topic := emulatortest.Name(t, "fn-events")
	emulatortest.CreateTopic(t, ps, env.Project, topic)
	emulatortest.CreateSubscription(t, ps, env.Project, topic, topic+"-sub", emulatortest.SubscriptionOptions{Ordering: true})
	col := emulatortest.Name(t, "accounts")
	key := "sd-fn-key"
	a, _ := account.Parse([]byte(demoAccount))
	if err := accountstore.New(fs, accountstore.Options{Collection: col}).Put(context.Background(), envelope.AccountID(key), a); err != nil {
		t.Fatal(err)
	}
	for k, v := range map[string]string{
		"FUNCTION_TARGET": "Ingest", "GOOGLE_CLOUD_PROJECT": env.Project, "PUBSUB_TOPIC": topic,
		"ACCOUNTS_COLLECTION": col, "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none", "LOG_LEVEL": "error",
	} {
		t.Setenv(k, v)
	}
	port := freePort(t)
	// The framework's server has no shutdown hook (which is why main does
	// not use it); it ends with the test binary.
	go func() { _ = funcframework.StartHostPort("127.0.0.1", port) }()
	url := "http://127.0.0.1:" + port + "/"
	var resp *http.Response
	deadline := time.Now().Add(30 * time.Second)
	for {
		req, _ := http.NewRequest(http.MethodPost, url, strings.NewReader(`{"type":"track","userId":"u","event":"fn","messageId":"fn-1"}`))
		req.Header.Set("Content-Type", "application/json")
		req.Header.Set("Authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(key+":")))
		var err error
		if resp, err = http.DefaultClient.Do(req); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("functions framework did not serve: %v", err)
		}
		time.Sleep(50 * time.Millisecond)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Fatalf("POST / through the functions framework = %d, want 200", resp.StatusCode)
	}
	msgs := emulatortest.Receive(t, ps, topic+"-sub", 1, 20*time.Second)
	if len(msgs) != 1 || msgs[0].Attributes[envelope.AttrMessageID] != "fn-1" {
		t.Errorf("topic holds %d messages, want fn-1", len(msgs))
	}
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
