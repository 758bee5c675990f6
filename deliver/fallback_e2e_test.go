package main

import (
	"fmt"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/pstest"

	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// TestPullModeWithPstestFallback runs the pipeline in pull mode on Google's
// pstest fake, the Pub/Sub fallback where the Cloud SDK's emulator is
// missing (scripts/emulators.sh), so that the fallback stays usable.
func TestPullModeWithPstestFallback(t *testing.T) {
	srv := pstest.NewServer()
	t.Cleanup(func() { _ = srv.Close() })
	p := newPipeline(t, pipelineOptions{pubsubHost: srv.Addr})
	key := "sd-pstest-key"
	p.addAccount(key, simpleAccount)
	for i := range 5 {
		p.send(key, fmt.Sprintf(`{"type":"track","userId":"ps-%d","event":"e","messageId":"pstest-%d"}`, i%2, i), "")
	}
	// An override field the event lacks, with a userId: a dead letter (an
	// anonymous event would be skipped).
	p.send(key, `{"type":"track","userId":"ps-9","event":"e","messageId":"pstest-dead"}`, `{"segmentOverrideMatchingField":"properties.missing"}`)
	waitfor.Within(t, 60*time.Second, "5 usage records through pstest", func() bool { return len(p.sd.Usage(key)) == 5 })
	dead := p.deadLetters(1, 30*time.Second)
	if len(dead) != 1 || dead[0].Attributes["errorClass"] != "no-match-value" {
		t.Errorf("dead letters = %v, want pstest-dead with no-match-value", dead)
	}
	if n := len(p.sd.Users(key)); n != 2 {
		t.Errorf("users = %d, want 2", n)
	}
}
