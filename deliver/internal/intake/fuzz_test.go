package intake

import (
	"bytes"
	"context"
	"encoding/base64"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"

	"github.com/startdeliver/segment-destination/deliver/internal/delivery"
)

// fuzzKey is the API key planted where keys travel: inside the message
// data (the envelope) and its attributes.
const fuzzKey = "sd-live-fuzz-planted-key-42"

// keyProcessor acks every message and records what it saw.
type keyProcessor struct {
	mu   sync.Mutex
	seen int
}

func (p *keyProcessor) Process(_ context.Context, m delivery.Message) delivery.Result {
	p.mu.Lock()
	p.seen++
	p.mu.Unlock()
	if bytes.Contains(m.Data, []byte("retry-me")) {
		return delivery.Result{Decision: delivery.Nack, Class: "retryable"}
	}
	return delivery.Result{Decision: delivery.Ack, Outcome: "delivered"}
}

// planted reports whether out holds the key, plain or base64.
func planted(out string) bool {
	return strings.Contains(out, fuzzKey) || strings.Contains(out, base64.StdEncoding.EncodeToString([]byte(fuzzKey))[:24])
}

func pushBody(data, attr string) string {
	return `{"message":{"data":"` + data + `","attributes":{"k":"` + attr + `"},"messageId":"1","publishTime":"2026-01-01T00:00:00Z"},"subscription":"s"}`
}

// FuzzPushBody: whatever a push request carries, the answer is JSON with a
// message or an outcome, and never holds a key from the message.
func FuzzPushBody(f *testing.F) {
	env := base64.StdEncoding.EncodeToString([]byte(`{"v":1,"apiKey":"` + fuzzKey + `"}`))
	f.Add([]byte(pushBody(env, fuzzKey)))
	f.Add([]byte(pushBody("not base64 "+fuzzKey, "")))
	f.Add([]byte(`{"message":{"data":` + `"` + fuzzKey + `"` + `}}`))
	f.Add([]byte(`{"message":{"attributes":{"a":1,"k":"` + fuzzKey + `"}}}`))
	f.Add([]byte(`{"message":` + strings.Repeat("[", 10000)))
	h := PushHandler(&keyProcessor{}, PushOptions{})
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/pubsub/push", bytes.NewReader(body))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if planted(w.Body.String()) {
			t.Fatalf("answer %d %q holds the planted key", w.Code, w.Body)
		}
		if w.Code != 200 && w.Code != 400 && w.Code != 503 {
			t.Fatalf("status %d", w.Code)
		}
	})
}

// TestErrorsDoNotQuote: no error answer of the push and CloudEvent
// endpoints repeats the caller's bytes. The first CloudEvent case is the
// one FuzzCloudEventBody found: the CloudEvents SDK's DataAs error quotes
// the data ("found bytes ..."); the caller's ce-id and a syntax error's
// offending character were quoted too.
func TestErrorsDoNotQuote(t *testing.T) {
	ce := func(id, data string) string {
		return `{"specversion":"1.0","type":"google.cloud.pubsub.topic.v1.messagePublished","source":"s","id":"` + id + `","datacontenttype":"application/json","data":` + data + `}`
	}
	cases := []struct {
		name, path, contentType, body string
		status                        int
	}{
		{"cloudevent data a string", "/", "application/cloudevents+json", ce("1", `"`+fuzzKey+`"`), 503},
		{"cloudevent id, bad data", "/", "application/cloudevents+json", ce(fuzzKey, `{"message":{"data":"!!"}}`), 503},
		{"cloudevent id, retried", "/", "application/cloudevents+json", ce(fuzzKey, `{"message":{"data":"`+base64.StdEncoding.EncodeToString([]byte("retry-me"))+`"}}`), 503},
		{"not a cloudevent", "/", "application/cloudevents+json", `{"specversion":"` + fuzzKey + `"}`, 400},
		{"push syntax error", "/pubsub/push", "application/json", `{"message":` + fuzzKey + `}`, 400},
		{"push wrong type", "/pubsub/push", "application/json", `{"message":{"data":["` + fuzzKey + `"]}}`, 400},
	}
	push := PushHandler(&keyProcessor{}, PushOptions{})
	cloud := CloudEventHandler(CloudEventFunc(&keyProcessor{}, 0))
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			r := httptest.NewRequest(http.MethodPost, c.path, strings.NewReader(c.body))
			r.Header.Set("Content-Type", c.contentType)
			w := httptest.NewRecorder()
			if c.path == "/" {
				cloud.ServeHTTP(w, r)
			} else {
				push.ServeHTTP(w, r)
			}
			if w.Code != c.status {
				t.Errorf("status %d, want %d (%s)", w.Code, c.status, w.Body)
			}
			if planted(w.Body.String()) {
				t.Errorf("answer %d %q quotes the request", w.Code, w.Body)
			}
			if !strings.Contains(w.Body.String(), `"message"`) {
				t.Errorf("answer %q has no message", w.Body)
			}
		})
	}
}

// FuzzCloudEventBody: the same for Eventarc's messagePublished CloudEvents,
// structured mode.
func FuzzCloudEventBody(f *testing.F) {
	env := base64.StdEncoding.EncodeToString([]byte(`{"v":1,"apiKey":"` + fuzzKey + `"}`))
	ce := func(data string) []byte {
		return []byte(`{"specversion":"1.0","type":"google.cloud.pubsub.topic.v1.messagePublished","source":"//pubsub.googleapis.com/projects/p/topics/t","id":"1","datacontenttype":"application/json","data":` + data + `}`)
	}
	f.Add(ce(`{"message":{"data":"` + env + `","attributes":{"k":"` + fuzzKey + `"}}}`))
	f.Add(ce(`{"message":{"data":"` + fuzzKey + `!"}}`))
	f.Add(ce(`{"message":{"data":"` + base64.StdEncoding.EncodeToString([]byte("retry-me "+fuzzKey)) + `"}}`))
	f.Add(ce(strings.Repeat("[", 5000)))
	h := CloudEventHandler(CloudEventFunc(&keyProcessor{}, 0))
	f.Fuzz(func(t *testing.T, body []byte) {
		r := httptest.NewRequest(http.MethodPost, "/", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/cloudevents+json")
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if planted(w.Body.String()) {
			t.Fatalf("answer %d %q holds the planted key", w.Code, w.Body)
		}
	})
}
