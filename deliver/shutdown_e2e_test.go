package main

import (
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// TestGracefulShutdown stops deliver (as SIGTERM does) while Startdeliver
// hangs on an event: the shutdown does not cut the call, which runs until
// the delivery's budget ends it; deliver returns within its 8-second grace,
// the event is nacked, and a new instance delivers it once.
func TestGracefulShutdown(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	key := "sd-shutdown-key"
	p.addAccount(key, simpleAccount)
	p.sd.FailNext(1, startdelivertest.Fault{Hang: true, Route: "POST /usage"})
	p.send(key, `{"type":"track","userId":"s-user","event":"e","messageId":"sd-1"}`, "")
	waitfor.Within(t, 30*time.Second, "the hanging usage call", func() bool { return p.sd.Calls("POST /usage") == 1 })

	start := time.Now()
	p.stopDeliver()
	if d := time.Since(start); d > 9*time.Second {
		t.Errorf("shutdown took %v, want within the 8s grace", d)
	}
	if n := len(p.sd.Usage(key)); n != 0 {
		t.Fatalf("usage records = %d before the restart, want 0", n)
	}
	p.startDeliver()
	// Usually within a second. In about one run in six the emulator hands
	// the nacked event's next attempt (it redelivers at once) to the old
	// instance's stream in the moment before the client library closes
	// it: that copy is neither processed nor nacked, and the event comes
	// back only when its lease ends, 30 s later (MaxDurationPerAckExtension),
	// as attempt 3. Seen with 4 streams and with 1, and with the library's
	// timed shutdown too; a loaded machine (CI, one run past 60 s) slows
	// each step. The event is still delivered once.
	waitfor.Within(t, 120*time.Second, "the event after the restart", func() bool { return len(p.sd.Usage(key)) == 1 })
	// A marker of the same person comes after sd-1 in its ordering key.
	p.send(key, `{"type":"track","userId":"s-user","event":"e","messageId":"sd-2"}`, "")
	waitfor.Within(t, 30*time.Second, "the marker", func() bool { return len(p.usageByExternalID(key)["sd-2"]) == 1 })
	if n := len(p.usageByExternalID(key)["sd-1"]); n != 1 {
		t.Errorf("sd-1 usage records = %d, want 1", n)
	}
}
