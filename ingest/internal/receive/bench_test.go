package receive

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"strings"
	"testing"

	"github.com/startdeliver/segment-destination/shared/cputime"
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
			postOK(b, h, "/", body)
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
			postOK(b, h, "/v1/batch", body)
		}
		b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*len(events)), "ns/event")
	})
}

// BenchmarkHostile measures the CPU per request of the hostile
// bodies (16,000 levels of nesting in 32 KB; 64 KB and 500 KB of nesting
// gzipped to a few hundred bytes), unauthenticated and authenticated, and
// reports each as a ratio to the CPU per ordinary 1 KB event in the same
// run ("x-ordinary"; the aim is at most 2).
func BenchmarkHostile(b *testing.B) {
	ordinary := benchBody(b)
	nested := strings.Repeat("[", 16000) + strings.Repeat("]", 16000)
	cases := []struct {
		name, path string
		body       []byte
		gzip, auth bool
		want       int
	}{
		{"ordinary-1KB", "/", []byte(ordinary), false, true, 200},
		{"nested-32KB-unauthenticated", "/v1/track", []byte(nested), false, false, 400},
		{"nested-32KB-authenticated", "/v1/track", []byte(nested), false, true, 400},
		{"gzip-64KB-nested-unauthenticated", "/v1/track", gz([]byte(strings.Repeat("[", 64<<10))), true, false, 400},
		{"gzip-64KB-nested-authenticated", "/v1/track", gz([]byte(strings.Repeat("[", 64<<10))), true, true, 400},
		{"gzip-500KB-nested-batch-unauthenticated", "/v1/batch", gz([]byte(strings.Repeat("[", 250000) + strings.Repeat("]", 250000))), true, false, 400},
		{"gzip-500KB-nested-batch-authenticated", "/v1/batch", gz([]byte(strings.Repeat("[", 250000) + strings.Repeat("]", 250000))), true, true, 400},
	}
	var base float64 // CPU ns per ordinary event
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			h := New(Options{Publisher: noopPublisher{}, Accounts: fakeAccounts{}, Topic: "t"})
			b.ReportAllocs()
			start := cputime.Process()
			for b.Loop() {
				r := httptest.NewRequest(http.MethodPost, c.path, bytes.NewReader(c.body))
				r.Header.Set("Content-Type", "application/json")
				if c.gzip {
					r.Header.Set("Content-Encoding", "gzip")
				}
				if c.auth {
					r.Header.Set("Authorization", basic(goodKey))
				}
				w := httptest.NewRecorder()
				h.ServeHTTP(w, r)
				if w.Code != c.want {
					b.Fatalf("status %d, want %d: %s", w.Code, c.want, w.Body)
				}
			}
			cpu := float64((cputime.Process() - start).Nanoseconds()) / float64(b.N)
			b.ReportMetric(cpu, "cpu-ns/op")
			if base == 0 {
				base = cpu
			} else {
				b.ReportMetric(cpu/base, "x-ordinary")
			}
			b.ReportMetric(float64(len(c.body)), "body-bytes")
		})
	}
}

// postOK serves one POST of body to path with a good key, and fails b
// unless the answer is 200.
func postOK(b *testing.B, h http.Handler, path, body string) {
	r := httptest.NewRequest(http.MethodPost, path, strings.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", basic(goodKey))
	w := httptest.NewRecorder()
	h.ServeHTTP(w, r)
	if w.Code != 200 {
		b.Fatalf("status %d: %s", w.Code, w.Body)
	}
}
