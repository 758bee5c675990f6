package publish

import (
	"context"
	"errors"
	"fmt"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// stall is a pstest reactor for Publish that makes Pub/Sub stop answering:
// each Publish request it sees is recorded and then held until release is
// closed, after which pstest handles it as usual (stores its messages). So
// a call that the client gave up on may still be published, as with the
// real service.
type stall struct {
	mu      sync.Mutex
	seen    map[string]bool // data of every message that reached the server
	calls   int
	release chan struct{}
}

func (s *stall) React(req any) (bool, any, error) {
	r := req.(*pubsubpb.PublishRequest)
	s.mu.Lock()
	s.calls++
	for _, m := range r.Messages {
		s.seen[string(m.Data)] = true
	}
	s.mu.Unlock()
	<-s.release
	return false, nil, nil
}

func (s *stall) callCount() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls
}

// stalledPubSub starts pstest with a stalled Publish and returns a
// publisher on one of its topics.
func stalledPubSub(t *testing.T, opts Options) (*Publisher, *stall, *pstest.Server) {
	t.Helper()
	st := &stall{seen: map[string]bool{}, release: make(chan struct{})}
	srv := pstest.NewServerWithAddress("127.0.0.1:0", pstest.ServerReactorOption{FuncName: "Publish", Reactor: st})
	ctx := context.Background()
	client, err := pubsub.NewClient(ctx, "p", option.WithEndpoint(srv.Addr), option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: "projects/p/topics/t"}); err != nil {
		t.Fatal(err)
	}
	p := New(client, "p", "t", opts)
	t.Cleanup(func() {
		_ = client.Close()
		_ = srv.Close()
	})
	return p, st, srv
}

// published is the data of every message pstest stored.
func published(srv *pstest.Server) map[string]bool {
	out := map[string]bool{}
	for _, m := range srv.Messages() {
		out[string(m.Data)] = true
	}
	return out
}

// TestNothingPublishedAfterTheCallerGaveUp: Pub/Sub stops answering while
// 300 messages are published. Every call in flight holds some of them, the
// rest queue. Then every caller gives up (as a request answered 503 does).
// Once Pub/Sub answers again and the publisher has stopped, exactly the
// messages that were in a Publish call are published, those are exactly
// the ones whose error did not say ErrWithdrawn, and the queue is empty.
func TestNothingPublishedAfterTheCallerGaveUp(t *testing.T) {
	const n = 300
	p, st, srv := stalledPubSub(t, Options{MaxInFlight: 2, CountThreshold: 10})
	ctx, cancel := context.WithCancel(context.Background())
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { _, errs[i] = p.Publish(ctx, msg(fmt.Sprint("k", i), fmt.Sprint("m-", i))) })
	}
	waitfor.True(t, "every message queued and both calls stuck", func() bool {
		st := p.batcher.Stats()
		return st.Added == n && st.InFlight == 2
	})
	cancel()
	wg.Wait()

	now := p.batcher.Stats()
	queued, held := now.Queued, now.Held
	if queued != 0 {
		t.Errorf("after every caller gave up, %d messages still queued, want 0", queued)
	}
	if held > 2*p.opts.ByteThreshold {
		t.Errorf("held bytes = %d after the callers gave up, want only those of the 2 calls", held)
	}
	close(st.release)
	p.Stop()

	got := published(srv)
	withdrawn, unconfirmed := 0, 0
	for i, err := range errs {
		data := fmt.Sprint("m-", i)
		switch {
		case err == nil:
			t.Errorf("Publish(%s) = nil while Pub/Sub did not answer", data)
		case errors.Is(err, ErrWithdrawn):
			withdrawn++
			if got[data] || st.seen[data] {
				t.Errorf("%s was withdrawn (%v) but reached Pub/Sub", data, err)
			}
		default:
			unconfirmed++
			if !got[data] {
				t.Errorf("%s was in a Publish call (%v) but is not published", data, err)
			}
		}
	}
	if len(got) != unconfirmed {
		t.Errorf("published %d messages, want the %d that were in a Publish call", len(got), unconfirmed)
	}
	// Two calls were stuck, each with at most CountThreshold messages.
	if unconfirmed == 0 || unconfirmed > 20 || withdrawn != n-unconfirmed {
		t.Errorf("in a call: %d, withdrawn: %d of %d; want 1..20 in the two stuck calls, the rest withdrawn", unconfirmed, withdrawn, n)
	}
	if c := st.callCount(); c > 2 {
		t.Errorf("Publish calls = %d, want only the 2 that were stuck", c)
	}
}

// TestFullRefusesAtOnce: while Pub/Sub does not answer, the publisher
// takes messages until it holds MaxBytes, refuses the rest at once with
// ErrFull, and publishes none of the refused ones once Pub/Sub answers.
func TestFullRefusesAtOnce(t *testing.T) {
	const n = 100
	size := len(msgSize(t))
	p, st, srv := stalledPubSub(t, Options{MaxInFlight: 1, CountThreshold: 5, MaxBytes: 20 * size})
	var mu sync.Mutex
	refused := map[string]bool{}
	errs := map[string]error{}
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() {
			data := fmt.Sprintf("m-%03d", i)
			_, err := p.Publish(context.Background(), msg(fmt.Sprintf("k%02d", i), data))
			mu.Lock()
			defer mu.Unlock()
			if errors.Is(err, ErrFull) {
				refused[data] = true
			} else {
				errs[data] = err
			}
		})
	}
	// 20 messages fit: the other 80 are refused at once, with Pub/Sub
	// stuck.
	waitfor.True(t, "80 refusals", func() bool {
		mu.Lock()
		defer mu.Unlock()
		return len(refused) == n-20 || len(errs) > 0
	})
	mu.Lock()
	for id, err := range errs {
		t.Errorf("Publish(%s) = %v while Pub/Sub was stuck, want it waiting or ErrFull", id, err)
	}
	mu.Unlock()
	held := p.batcher.Stats().Held
	if held > 20*size {
		t.Errorf("held %d bytes, want at most MaxBytes %d", held, 20*size)
	}
	close(st.release)
	wg.Wait()
	if len(errs) != 20 {
		t.Errorf("%d accepted, want 20", len(errs))
	}
	for id, err := range errs {
		if err != nil {
			t.Errorf("Publish(%s) of an accepted message = %v once Pub/Sub answered, want nil", id, err)
		}
	}
	p.Stop()
	got := published(srv)
	if len(got) != 20 {
		t.Errorf("published %d messages, want the 20 accepted", len(got))
	}
	for id := range refused {
		if got[id] {
			t.Errorf("refused message %s was published", id)
		}
	}
}

// msgSize is a message as the tests publish it, to size MaxBytes.
func msgSize(t *testing.T) []byte {
	t.Helper()
	m := msg("k00", "m-000")
	size := len(m.Data) + len(m.OrderingKey) + 64
	for k, v := range m.Attributes {
		size += len(k) + len(v)
	}
	return make([]byte, size)
}

// TestWaitingInTurnTimesOutTogether: the publish timeout counts from
// Enqueue, so a caller that hands over many messages and then waits for
// each in turn (a /v1/batch) gives up on all of them about one timeout
// after the handover, not one timeout per message: with Pub/Sub not
// answering, ten messages waited for one after the other with a 1 s
// timeout all fail, those still queued then are withdrawn, and none of
// those is published later. (With a timeout per wait, each later wait
// outlasts the stuck call's own timeout and the queued messages go out in
// the calls after it.)
func TestWaitingInTurnTimesOutTogether(t *testing.T) {
	const n = 10
	p, st, srv := stalledPubSub(t, Options{MaxInFlight: 1, CountThreshold: 2, Timeout: time.Second})
	ctx := context.Background()
	start := time.Now()
	var waits []*Enqueued
	for i := range n {
		e, err := p.Enqueue(ctx, msg("k", fmt.Sprint("m-", i)))
		if err != nil {
			t.Fatal(err)
		}
		waits = append(waits, e)
	}
	errs := make([]error, n)
	for i, e := range waits {
		if _, errs[i] = e.Wait(ctx); errs[i] == nil {
			t.Errorf("message %d confirmed while Pub/Sub did not answer", i)
		}
	}
	t.Logf("waiting in turn for %d messages took %v", n, time.Since(start))
	close(st.release)
	p.Stop()
	got := published(srv)
	withdrawn := 0
	for i, err := range errs {
		if errors.Is(err, ErrWithdrawn) {
			withdrawn++
			if data := fmt.Sprint("m-", i); got[data] {
				t.Errorf("%s was withdrawn (%v) but is published", data, err)
			}
		}
	}
	// The first call (2 messages) is stuck; when it times out the
	// publisher may start one more before the waits withdraw its
	// messages. The rest must have been withdrawn, not sent later.
	if withdrawn < n-4 {
		t.Errorf("%d of %d messages withdrawn, want all but those of at most two calls (published: %d)", withdrawn, n, len(got))
	}
}
