package receive

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/cputime"
)

// BenchmarkSealing measures ingest's CPU per single event with the API key
// sealed (envelope version 2, keyseal) against the same handler without
// sealing (version 1, the key in plain text), in the same run: blocks of
// 200 requests of each (b.N events of each in all), alternating which goes first, the process's CPU
// time (getrusage: user + system, garbage collection included) counted per
// block. The goal is sealed/plain under 1.10.
func BenchmarkSealing(b *testing.B) {
	body := benchBody(b)
	plain := New(Options{Publisher: noopPublisher{}, Accounts: fakeAccounts{}, Topic: "t"})
	sealed := New(Options{Publisher: noopPublisher{}, Accounts: fakeAccounts{}, Topic: "t", Sealer: testSealer})
	serve := func(h *Handler) {
		r := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", basic(goodKey))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		if w.Code != 200 {
			b.Fatalf("status %d", w.Code)
		}
	}
	const block = 200
	for range block { // warm both
		serve(plain)
		serve(sealed)
	}
	var cpuPlain, cpuSealed time.Duration
	events, round := 0, 0
	b.ResetTimer()
	for events < b.N {
		run := func(h *Handler) time.Duration {
			c0 := cputime.Process()
			for range block {
				serve(h)
			}
			return cputime.Process() - c0
		}
		if round%2 == 0 {
			cpuPlain += run(plain)
			cpuSealed += run(sealed)
		} else {
			cpuSealed += run(sealed)
			cpuPlain += run(plain)
		}
		round++
		events += block
	}
	b.ReportMetric(float64(cpuPlain.Nanoseconds())/float64(events), "plain-cpu-ns/event")
	b.ReportMetric(float64(cpuSealed.Nanoseconds())/float64(events), "sealed-cpu-ns/event")
	b.ReportMetric(float64(cpuSealed)/float64(cpuPlain), "sealed/plain")
}
