package receive

import (
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
	serve := func(h *Handler) { postOK(b, h, "/", body) }
	const block = 200
	cputime.Alternate(b, block, [2]string{"plain", "sealed"}, func(i int) time.Duration {
		h := [2]*Handler{plain, sealed}[i]
		c0 := cputime.Process()
		for range block {
			serve(h)
		}
		return cputime.Process() - c0
	})
}
