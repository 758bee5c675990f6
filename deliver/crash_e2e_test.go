package main

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/journey"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// startDeliverProcess runs the deliver binary with the pipeline's
// environment; the returned function kills it with sig and waits.
func (p *pipeline) startDeliverProcess(bin string) (stop func(sig os.Signal)) {
	stop, _ = p.startDeliverProcessLogs(bin)
	return stop
}

// startDeliverProcessLogs is startDeliverProcess that also returns the
// process's output.
func (p *pipeline) startDeliverProcessLogs(bin string) (stop func(sig os.Signal), logs *syncBuffer) {
	t := p.t
	cmd := exec.Command(bin)
	dieWithTest(cmd)
	env := p.env.Getenv(p.deliverEnv)
	for _, k := range []string{"GOOGLE_CLOUD_PROJECT", "PUBSUB_EMULATOR_HOST", "FIRESTORE_EMULATOR_HOST"} {
		cmd.Env = append(cmd.Env, k+"="+env(k))
	}
	for k, v := range p.deliverEnv {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	logs = &syncBuffer{}
	cmd.Stdout, cmd.Stderr = logs, logs
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { _ = cmd.Wait(); close(done) }()
	waitHTTP(t, p.deliverURL+"/healthz", done)
	var once sync.Once
	stop = func(sig os.Signal) {
		once.Do(func() {
			_ = cmd.Process.Signal(sig)
			<-done
			if t.Failed() {
				t.Logf("deliver log:\n%s", logs.String())
			}
		})
	}
	t.Cleanup(func() { stop(os.Interrupt) })
	return stop, logs
}

// TestCrashLosesNothing kills deliver with SIGKILL in the middle of a
// stream of events, restarts it, and wants every event delivered. A
// duplicate is possible only for an event whose usage record Startdeliver
// had accepted when the process died, before its completion was recorded
// (Startdeliver cannot be asked whether it holds a usage record): at most
// the events in flight at the kill.
//
// deliver runs in push mode, as on Cloud Run, with an ordered subscription.
// (In pull mode Google's Pub/Sub emulator cannot take this test: its gRPC
// server fails to close a killed process's streaming pulls — a
// NoSuchMethodError in its log — and goes on handing them messages, so a
// restarted subscriber can wait for many minutes; see local-emulators.md.
// TestCrashPullMode runs it anyway when DELIVER_CRASH_PULL=1.)
func TestCrashLosesNothing(t *testing.T) {
	crashTest(t, "push")
}

func TestCrashPullMode(t *testing.T) {
	if os.Getenv("DELIVER_CRASH_PULL") != "1" {
		t.Skip("the Pub/Sub emulator keeps a killed process's streams: set DELIVER_CRASH_PULL=1 to run")
	}
	crashTest(t, "pull")
}

// completions counts the account's completion records in Firestore (not
// the claims of events that were running).
func (p *pipeline) completions(accountID string) int {
	p.t.Helper()
	docs, err := p.fs.Collection(p.deliveries).Where("accountId", "==", accountID).Documents(context.Background()).GetAll()
	if err != nil {
		p.t.Fatal(err)
	}
	n := 0
	for _, d := range docs {
		if st, _ := d.Data()["status"].(string); journey.Completed(st) {
			n++
		}
	}
	return n
}

func crashTest(t *testing.T, mode string) {
	if testing.Short() {
		t.Skip("crash test: a minute or more against the emulator")
	}
	const (
		events   = 150
		inFlight = 8 // pull mode's bound on messages held at once
	)
	// In push mode, in flight is what Pub/Sub pushes at once: bounded by
	// the account's concurrency slots that were busy at the kill.
	maxInFlight := inFlight
	p := newPipeline(t, pipelineOptions{mode: mode, noDeliver: true, maxAttempts: 100, ackDeadline: 10 * time.Second,
		deliverEnv: map[string]string{"PULL_ACK_EXTENSION": "10s", "PULL_MAX_OUTSTANDING": fmt.Sprint(inFlight), "PULL_STREAMS": "2"}})
	key := "sd-crash-key"
	p.addAccount(key, simpleAccount)
	p.sd.SetLatency(15 * time.Millisecond)
	bin := buildBinary(t, "deliver", ".")
	stop := p.startDeliverProcess(bin)

	for i := range events {
		p.send(key, fmt.Sprintf(`{"type":"track","userId":"crash-%d","event":"e","messageId":"crash-%d"}`, i%10, i), "")
	}
	waitfor.Within(t, 60*time.Second, "a third of the events", func() bool { return len(p.sd.Usage(key)) >= events/3 })
	stop(syscall.SIGKILL)
	// A usage request the killed process had sent may still be in the
	// stand-in's handler: count only once it has answered, or its record
	// would land after the count and look like a duplicate outside the
	// window.
	waitfor.Within(t, 10*time.Second, "the stand-in to answer the killed process's requests", func() bool { return p.sd.InFlight() == 0 })
	atKill := len(p.sd.Usage(key))
	// The window: events whose usage Startdeliver holds but whose
	// completion record is not in Firestore. Only they can be repeated.
	recorded := p.completions(envelope.AccountID(key))
	window := atKill - recorded
	if atKill >= events {
		t.Fatalf("all %d events were delivered before the kill: the test proves nothing", events)
	}
	p.startDeliverProcess(bin)

	last := time.Now()
	waitfor.Within(t, 4*time.Minute, "every event after the restart", func() bool {
		n := len(p.usageByExternalID(key))
		if time.Since(last) > 10*time.Second {
			t.Logf("%d of %d delivered", n, events)
			last = time.Now()
		}
		return n == events
	})
	dups := 0
	for id, recs := range p.usageByExternalID(key) {
		if len(recs) > 1 {
			dups += len(recs) - 1
			t.Logf("%s has %d usage records", id, len(recs))
		}
	}
	t.Logf("%d events delivered at the kill, %d of them recorded as completed: %d in the window between the usage call and the completion record; %d duplicates after recovery",
		atKill, recorded, window, dups)
	if dups > window || dups > maxInFlight {
		t.Errorf("%d duplicates, want at most the %d events in the window at the kill (and the %d in flight)", dups, window, maxInFlight)
	}
	if n := len(p.sd.Users(key)); n != 10 {
		t.Errorf("users = %d, want 10", n)
	}
}
