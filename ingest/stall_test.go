package main

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/startdeliver/segment-destination/ingest/internal/publish"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
)

// TestNothingPublishedForA503: while Pub/Sub does not answer, single
// events and three batches of 2,000 (more than the publisher's 8 calls of
// at most 500 hold, so some wait in its queue) are all answered 503. Then
// Pub/Sub answers again and ingest shuts down, flushing its publisher.
// Every event whose publish was withdrawn (it was still queued when its
// request gave up) is absent from the topic; the others were in a Publish
// call, which the client may retry once the connection is back. Without
// the withdrawal, nothing would be withdrawn and about 2,000 queued events
// would be published after the stall.
func TestNothingPublishedForA503(t *testing.T) {
	env := emulatortest.Require(t)
	// Record each event's publish error: ErrWithdrawn is the publisher's
	// word that the message was never handed to a Publish call.
	rec := &recordingPublisher{errs: map[string]error{}}
	orig := newPublisher
	newPublisher = func(ps *pubsub.Client, cfg *config) eventPublisher {
		rec.eventPublisher = orig(ps, cfg)
		return rec
	}
	t.Cleanup(func() { newPublisher = orig })
	px := newProxy(t, env.PubSubHost)
	s := startIngest(t, px.ln.Addr().String(), map[string]string{"PUBSUB_PUBLISH_TIMEOUT": "1s"})
	if code, b := s.post(t, "/", `{"type":"track","userId":"u","event":"before","messageId":"before"}`); code != 200 {
		t.Fatalf("before the stall: %d %s, want 200", code, b)
	}
	px.stall()
	var wg sync.WaitGroup
	codes := make(chan string, 23)
	for i := range 20 {
		wg.Go(func() {
			code, b := s.post(t, "/", fmt.Sprintf(`{"type":"track","userId":"u%d","event":"during","messageId":"during-%d"}`, i, i))
			codes <- fmt.Sprintf("POST / %d: %d %s", i, code, b)
		})
	}
	for j := range 3 {
		wg.Go(func() {
			items := make([]string, 2000)
			for i := range items {
				items[i] = fmt.Sprintf(`{"type":"track","userId":"b%d","event":"during","messageId":"during-%d-%d"}`, i, j, i)
			}
			code, b := s.post(t, "/v1/batch", `{"batch":[`+strings.Join(items, ",")+`]}`)
			codes <- fmt.Sprintf("POST /v1/batch %d: %d %.200s", j, code, b)
		})
	}
	wg.Wait()
	close(codes)
	for c := range codes {
		if !strings.Contains(c, fmt.Sprintf(": %d ", http.StatusServiceUnavailable)) {
			t.Errorf("%s, want 503 while Pub/Sub does not answer", c)
		}
	}
	px.cut()
	// As Segment does, retry until ingest answers 200: its connection to
	// Pub/Sub comes back with the client's reconnect back-off.
	for attempt := 1; ; attempt++ {
		code, b := s.post(t, "/", `{"type":"track","userId":"u","event":"after","messageId":"after"}`)
		if code == 200 {
			break
		}
		if attempt == 30 {
			t.Fatalf("after the stall, attempt %d: %d %s, want 200", attempt, code, b)
		}
	}
	s.stop()
	msgs := emulatortest.Receive(t, emulatortest.PubSub(t, s.env), s.sub, 6100, 10*time.Second)
	got := map[string]bool{}
	for _, m := range msgs {
		got[m.Attributes["messageId"]] = true
	}
	if !got["before"] || !got["after"] {
		t.Errorf("the events answered 200 are not all published: before %t, after %t", got["before"], got["after"])
	}
	rec.mu.Lock()
	defer rec.mu.Unlock()
	withdrawn, inCall, published := 0, 0, 0
	for id, err := range rec.errs {
		if !strings.HasPrefix(id, "during-") {
			continue
		}
		switch {
		case err == nil:
			t.Errorf("publish of %s succeeded while Pub/Sub did not answer", id)
		case errors.Is(err, publish.ErrWithdrawn):
			withdrawn++
			if got[id] {
				t.Errorf("%s was withdrawn (%v) but is published", id, err)
			}
		default:
			inCall++
			if got[id] {
				published++
			}
		}
	}
	if withdrawn+inCall != 6020 {
		t.Errorf("publish results for %d events, want 6020", withdrawn+inCall)
	}
	if withdrawn == 0 {
		t.Errorf("no event was withdrawn from the queue; %d were in Publish calls", inCall)
	}
	t.Logf("of 6,020 events answered 503: %d withdrawn, %d in Publish calls (%d of those published after the stall)", withdrawn, inCall, published)
}

// recordingPublisher records the outcome of each event's publish.
type recordingPublisher struct {
	eventPublisher
	mu   sync.Mutex
	errs map[string]error
}

func (r *recordingPublisher) Publish(ctx context.Context, msg *envelope.Encoded) (string, error) {
	id, err := r.eventPublisher.Publish(ctx, msg)
	r.mu.Lock()
	r.errs[msg.Attributes[envelope.AttrMessageID]] = err
	r.mu.Unlock()
	return id, err
}
