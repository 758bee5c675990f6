package receive

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/startdeliver/segment-destination/shared/envelope"
)

// noopPublisher confirms every publish at once.
type noopPublisher struct{}

func (noopPublisher) Publish(context.Context, *envelope.Encoded) (string, error) { return "1", nil }

func benchBody(b *testing.B) string {
	data, err := os.ReadFile("../../../scripts/bench/track.json")
	if err != nil {
		b.Fatal(err)
	}
	return strings.Replace(string(data), "USERID", "user-1", 1)
}

// BenchmarkHandler measures ingest's own work per single event (auth with a
// fake store, decoding, validation, envelope, spans) with a publisher that
// confirms at once, against a baseline that only decodes the same body into
// a map, in the same run.
func BenchmarkHandler(b *testing.B) {
	body := benchBody(b)
	b.Run("baseline-decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m map[string]any
			if err := json.Unmarshal([]byte(body), &m); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("ingest-single", func(b *testing.B) {
		h := New(Options{Publisher: noopPublisher{}, Accounts: fakeAccounts{}, Topic: "t"})
		b.ReportAllocs()
		for b.Loop() {
			r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Authorization", basic(goodKey))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 200 {
				b.Fatalf("status %d", w.Code)
			}
		}
	})
}

// BenchmarkHandlerBatch is BenchmarkHandler for a /v1/batch of 100 events
// (one person each), reported per request, against a baseline that decodes
// the same body into maps.
func BenchmarkHandlerBatch(b *testing.B) {
	data, err := os.ReadFile("../../../scripts/bench/track.json")
	if err != nil {
		b.Fatal(err)
	}
	events := make([]string, 100)
	for i := range events {
		events[i] = strings.Replace(strings.TrimSpace(string(data)), "USERID", fmt.Sprint("user-", i), 1)
	}
	body := `{"batch":[` + strings.Join(events, ",") + `]}`
	b.Run("baseline-decode", func(b *testing.B) {
		b.ReportAllocs()
		for b.Loop() {
			var m struct {
				Batch []map[string]any `json:"batch"`
			}
			if err := json.Unmarshal([]byte(body), &m); err != nil || len(m.Batch) != 100 {
				b.Fatalf("decode: %v, %d events", err, len(m.Batch))
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/event")
	})
	b.Run("ingest-batch", func(b *testing.B) {
		h := New(Options{Publisher: noopPublisher{}, Accounts: fakeAccounts{}, Topic: "t"})
		b.ReportAllocs()
		for b.Loop() {
			r := httptest.NewRequest(http.MethodPost, "/v1/batch", strings.NewReader(body))
			r.Header.Set("Content-Type", "application/json")
			r.Header.Set("Authorization", basic(goodKey))
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			if w.Code != 200 {
				b.Fatalf("status %d: %s", w.Code, w.Body)
			}
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/event")
	})
}
