package main

import (
	"fmt"
	"os"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// TestBurstWaitsInsteadOfNacking sends one account's burst, 1,000 events
// for 50 new people, through ingest's /v1/batch to deliver running as a
// process, with Startdeliver taking 20 ms per call and the subscription at
// the contract's minimum (5 delivery attempts, no retry policy). Every
// event must land exactly once with no dead letter and no nack: events
// wait their turn in process instead of spending delivery attempts. While
// the burst runs, another account's events land; their latency is logged
// beside a run of the same events before the burst. In pull mode the other
// account's first event must not queue behind the burst: when it lands,
// more than half the burst is still to come (deliver's pool of held
// messages, PULL_MAX_OUTSTANDING, is larger than the burst). In push mode
// the emulator decides what it pushes first, so that is only logged.
func TestBurstWaitsInsteadOfNacking(t *testing.T) {
	if testing.Short() {
		t.Skip("burst test: about a minute against the emulators")
	}
	for _, mode := range []string{"pull", "push"} {
		t.Run(mode, func(t *testing.T) { burstTest(t, mode) })
	}
}

func burstTest(t *testing.T, mode string) {
	const (
		events = 1000
		people = 50
		batch  = 100
	)
	p := newPipeline(t, pipelineOptions{mode: mode, noDeliver: true, maxAttempts: 5, noRetryPolicy: true,
		deliverEnv: map[string]string{
			"LOG_LEVEL":    "warn",
			"ACK_DEADLINE": "20s", // the pipeline's subscription's
			// Startdeliver's default is 20 requests per second per
			// account; 100 keeps the test short (1,100 calls).
			"STARTDELIVER_MAX_RATE": "100",
		}})
	burstKey, otherKey := "sd-burst-key", "sd-burst-other"
	p.addAccount(burstKey, simpleAccount)
	p.addAccount(otherKey, simpleAccount)
	p.sd.SetLatency(20 * time.Millisecond)
	stop, logs := p.startDeliverProcessLogs(buildBinary(t, "deliver", "."))
	defer stop(os.Interrupt)

	// The other account alone, for comparison.
	quiet, _ := p.otherLatencies(otherKey, "quiet", 5, nil)

	for b := range events / batch {
		var items []string
		for i := b * batch; i < (b+1)*batch; i++ {
			items = append(items, fmt.Sprintf(`{"type":"track","userId":"burst-%d","event":"Burst","messageId":"burst-%d"}`, i%people, i))
		}
		if code, body := p.post("/v1/batch", burstKey, `{"batch":[`+strings.Join(items, ",")+`]}`, ""); code != 200 {
			t.Fatalf("POST /v1/batch = %d %s", code, body)
		}
	}
	remaining := events - len(p.usageByExternalID(burstKey))
	busy, pendingAtFirst := p.otherLatencies(otherKey, "busy", 5, func() int { return events - len(p.usageByExternalID(burstKey)) })
	if mode == "pull" && pendingAtFirst <= events/2 {
		t.Errorf("the other account's first event landed with %d of %d burst events still pending, want more than half: it queued behind the burst", pendingAtFirst, events)
	}

	last := time.Now()
	waitfor.Within(t, 3*time.Minute, "every burst event", func() bool {
		n := len(p.usageByExternalID(burstKey))
		if time.Since(last) > 10*time.Second {
			t.Logf("%d of %d delivered", n, events)
			last = time.Now()
		}
		return n == events
	})
	dups := 0
	for id, recs := range p.usageByExternalID(burstKey) {
		if len(recs) > 1 {
			dups++
			t.Errorf("%s has %d usage records, want 1", id, len(recs))
		}
	}
	if n := len(p.sd.Users(burstKey)); n != people {
		t.Errorf("users = %d, want %d", n, people)
	}
	if dead := p.deadLetters(1, 3*time.Second); len(dead) != 0 {
		t.Errorf("dead letter %v, want none", dead[0].Attributes)
	}
	if n := strings.Count(logs.String(), `"outcome":"retried"`); n != 0 {
		t.Errorf("%d deliveries nacked, want 0; log:\n%s", n, logs.String())
	}
	t.Logf("%s mode: %d events for %d people, %d duplicates, %d users; other account's latency %s alone, %s during the burst (%d burst events still pending when its first event was sent, %d when it landed)",
		mode, events, people, dups, len(p.sd.Users(burstKey)), quiet, busy, remaining, pendingAtFirst)
}

// latencies summarises send-to-usage times.
type latencies []time.Duration

func (l latencies) String() string {
	s := append(latencies(nil), l...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	if len(s) == 0 {
		return "none"
	}
	return fmt.Sprintf("median %s, max %s", s[len(s)/2].Round(time.Millisecond), s[len(s)-1].Round(time.Millisecond))
}

// otherLatencies sends n events of key one after another and measures how
// long each takes to become a usage record. probe, when not nil, is read
// as soon as the first one has landed.
func (p *pipeline) otherLatencies(key, tag string, n int, probe func() int) (_ latencies, atFirst int) {
	p.t.Helper()
	var out latencies
	for i := range n {
		id := fmt.Sprintf("other-%s-%d", tag, i)
		start := time.Now()
		// A new person each time, in both runs: the same calls.
		p.send(key, fmt.Sprintf(`{"type":"track","userId":%q,"event":"Other","messageId":%q}`, id, id), "")
		waitfor.Within(p.t, 2*time.Minute, id, func() bool { return len(p.usageByExternalID(key)[id]) == 1 })
		out = append(out, time.Since(start))
		if i == 0 && probe != nil {
			atFirst = probe()
		}
	}
	return out, atFirst
}
