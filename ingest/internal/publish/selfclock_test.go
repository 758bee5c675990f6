package publish

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/googleapis/gax-go/v2"

	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// gateRPC records Publish requests and holds each one until release is
// closed.
type gateRPC struct {
	mu       sync.Mutex
	requests [][]*pubsubpb.PubsubMessage
	release  chan struct{}
}

func (g *gateRPC) Publish(ctx context.Context, req *pubsubpb.PublishRequest, _ ...gax.CallOption) (*pubsubpb.PublishResponse, error) {
	req = onWire(req)
	g.mu.Lock()
	g.requests = append(g.requests, req.Messages)
	g.mu.Unlock()
	select {
	case <-g.release:
	case <-ctx.Done():
		return nil, ctx.Err()
	}
	return &pubsubpb.PublishResponse{MessageIds: serverIDs(req.Messages)}, nil
}

func (g *gateRPC) sizes() []int {
	g.mu.Lock()
	defer g.mu.Unlock()
	out := make([]int, len(g.requests))
	for i, r := range g.requests {
		out[i] = len(r)
	}
	return out
}

// TestPartialBatchesTakeTurns: while one partial batch is in flight, the
// messages that arrive wait for it (up to the escape delay) and then leave
// together in one call, so under load the number of Publish calls follows
// Pub/Sub's latency rather than the arrival rate. A full batch does not
// wait, and a slow call is hedged once the escape delay has passed.
func TestPartialBatchesTakeTurns(t *testing.T) {
	tests := []struct {
		name string
		opts Options
		// later is how many messages are published while the first call is
		// held.
		later int
		// whileHeld is the number of calls started before the first
		// returns.
		whileHeld int
		// want is every call's size, in order, once all are done.
		want []int
	}{
		{name: "partial waits for the call in flight", opts: Options{DelayThreshold: time.Hour}, later: 50, whileHeld: 1, want: []int{1, 50}},
		{name: "full batch goes at once", opts: Options{DelayThreshold: time.Hour, CountThreshold: 10}, later: 10, whileHeld: 2, want: []int{1, 10}},
		{name: "slow call is hedged after the delay", opts: Options{DelayThreshold: time.Millisecond}, later: 5, whileHeld: 2, want: []int{1, 5}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			g := &gateRPC{release: make(chan struct{})}
			p := newPublisher(g, "projects/p/topics/t", tc.opts)
			var wg sync.WaitGroup
			publish := func(id string) {
				wg.Go(func() {
					if _, err := p.Publish(context.Background(), msg("k-"+id, id)); err != nil {
						t.Errorf("Publish(%s) = %v, want nil", id, err)
					}
				})
			}
			publish("first")
			waitfor.True(t, "the first call", func() bool { return len(g.sizes()) == 1 })
			for i := range tc.later {
				publish(fmt.Sprint(i))
			}
			waitfor.True(t, "every message queued or sent", func() bool { return p.batcher.Stats().Added == int64(1+tc.later) })
			inFlight := func() int { return p.batcher.Stats().InFlight }
			if tc.whileHeld > 1 {
				waitfor.True(t, "a second call while the first is held", func() bool { return inFlight() == tc.whileHeld })
			}
			// Calls are counted when started, under the lock that queues
			// messages, so none can be missing here.
			if got := inFlight(); got != tc.whileHeld {
				t.Errorf("calls while the first is held = %d, want %d", got, tc.whileHeld)
			}
			close(g.release)
			wg.Wait()
			p.Stop()
			if got := g.sizes(); fmt.Sprint(got) != fmt.Sprint(tc.want) {
				t.Errorf("call sizes = %v, want %v", got, tc.want)
			}
		})
	}
}
