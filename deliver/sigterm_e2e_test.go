package main

import (
	"fmt"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// TestSigtermMidStream stops deliver with SIGTERM in pull mode while a
// stream of events is being delivered, then starts it again. The events in
// flight at the signal finish (their calls are not cut), the process exits
// within its 8-second grace, and after the restart every event is
// delivered exactly once: no duplicate usage record, no dead letter, at the
// contract's minimum subscription settings.
func TestSigtermMidStream(t *testing.T) {
	if testing.Short() {
		t.Skip("SIGTERM test: half a minute against the emulators")
	}
	const (
		events = 400
		people = 40
	)
	p := newPipeline(t, pipelineOptions{noDeliver: true, maxAttempts: 5, noRetryPolicy: true,
		deliverEnv: map[string]string{"LOG_LEVEL": "warn", "STARTDELIVER_MAX_RATE": "100"}})
	key := "sd-sigterm-key"
	p.addAccount(key, simpleAccount)
	p.sd.SetLatency(20 * time.Millisecond)
	bin := buildBinary(t, "deliver", ".")
	stop, logs := p.startDeliverProcessLogs(bin)
	for b := range events / 100 {
		var items []string
		for i := b * 100; i < (b+1)*100; i++ {
			items = append(items, fmt.Sprintf(`{"type":"track","userId":"term-%d","event":"e","messageId":"term-%d"}`, i%people, i))
		}
		if code, body := p.post("/v1/batch", key, `{"batch":[`+strings.Join(items, ",")+`]}`, ""); code != 200 {
			t.Fatalf("POST /v1/batch = %d %s", code, body)
		}
	}
	waitfor.Within(t, time.Minute, "a third of the events", func() bool { return len(p.sd.Usage(key)) >= events/3 })
	sent := time.Now()
	stop(syscall.SIGTERM)
	exit := time.Since(sent)
	atStop := len(p.sd.Usage(key))
	if atStop >= events {
		t.Fatalf("all %d events were delivered before SIGTERM: the test proves nothing", events)
	}
	if exit > 9*time.Second {
		t.Errorf("deliver exited %s after SIGTERM, want within its 8s grace", exit)
	}
	// What SIGTERM nacks is what had not started; a started event that
	// failed (a cut call) would be nacked with another class.
	notStarted := 0
	for _, line := range strings.Split(logs.String(), "\n") {
		if !strings.Contains(line, `"outcome":"retried"`) {
			continue
		}
		if !strings.Contains(line, `"errorClass":"not-started"`) {
			t.Errorf("a started event was nacked at shutdown: %s", line)
		}
		notStarted++
	}

	p.startDeliverProcess(bin)
	waitfor.Within(t, 2*time.Minute, "every event after the restart", func() bool { return len(p.usageByExternalID(key)) == events })
	dups := 0
	for id, recs := range p.usageByExternalID(key) {
		if len(recs) > 1 {
			dups += len(recs) - 1
			t.Errorf("%s has %d usage records, want 1", id, len(recs))
		}
	}
	if dead := p.deadLetters(1, 3*time.Second); len(dead) != 0 {
		t.Errorf("dead letter %v, want none", dead[0].Attributes)
	}
	if n := len(p.sd.Users(key)); n != people {
		t.Errorf("users = %d, want %d", n, people)
	}
	t.Logf("SIGTERM with %d of %d delivered; exit after %s; %d waiting events nacked as not started; %d duplicates after the restart",
		atStop, events, exit.Round(time.Millisecond), notStarted, dups)
}
