package publish

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/google/go-cmp/cmp"
	"github.com/googleapis/gax-go/v2"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/testing/protocmp"

	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// fakeRPC records Publish requests, checks that no ordering key is in two
// requests at once, and answers after a short delay.
type fakeRPC struct {
	mu       sync.Mutex
	requests [][]*pubsubpb.PubsubMessage
	inFlight map[string]bool
	overlap  []string
	delay    time.Duration
	err      error
	// shortIDs leaves this many ids out of each answer.
	shortIDs int
}

func (f *fakeRPC) Publish(_ context.Context, req *pubsubpb.PublishRequest, _ ...gax.CallOption) (*pubsubpb.PublishResponse, error) {
	req = onWire(req)
	f.mu.Lock()
	if f.inFlight == nil {
		f.inFlight = map[string]bool{}
	}
	keys := map[string]bool{}
	for _, m := range req.Messages {
		if m.OrderingKey == "" {
			continue
		}
		if f.inFlight[m.OrderingKey] {
			f.overlap = append(f.overlap, m.OrderingKey)
		}
		keys[m.OrderingKey] = true
	}
	for k := range keys {
		f.inFlight[k] = true
	}
	f.requests = append(f.requests, req.Messages)
	err := f.err
	f.mu.Unlock()
	time.Sleep(f.delay)
	f.mu.Lock()
	for k := range keys {
		delete(f.inFlight, k)
	}
	short := f.shortIDs
	f.mu.Unlock()
	if err != nil {
		return nil, err
	}
	return &pubsubpb.PublishResponse{MessageIds: serverIDs(req.Messages[:len(req.Messages)-short])}, nil
}

// onWire is req as Pub/Sub reads it: marshalled, then unmarshalled (the
// publisher sends its messages pre-encoded, not in req.Messages).
func onWire(req *pubsubpb.PublishRequest) *pubsubpb.PublishRequest {
	b, err := proto.Marshal(req)
	if err != nil {
		panic(err)
	}
	var out pubsubpb.PublishRequest
	if err := proto.Unmarshal(b, &out); err != nil {
		panic(err)
	}
	return &out
}

// serverIDs names each message as the fake server's id for it.
func serverIDs(msgs []*pubsubpb.PubsubMessage) []string {
	ids := make([]string, len(msgs))
	for i, m := range msgs {
		ids[i] = "server-" + string(m.Data)
	}
	return ids
}

func msg(key, id string) *envelope.Encoded {
	return &envelope.Encoded{Data: []byte(id), Attributes: map[string]string{envelope.AttrMessageID: id}, OrderingKey: key}
}

// TestBatchesAcrossKeysAndKeepsOrder: 40 people publish 10 events each,
// one after the other without waiting for confirmations, so a person's later
// events queue while earlier ones are in flight. The events travel in few
// requests, no key is ever in two requests at once, and each person's
// events arrive in the order they were published.
func TestBatchesAcrossKeysAndKeepsOrder(t *testing.T) {
	f := &fakeRPC{delay: 2 * time.Millisecond}
	p := newPublisher(f, "projects/p/topics/t", Options{MaxInFlight: 4})
	var wg sync.WaitGroup
	for i := range 10 {
		for person := range 40 {
			before := p.batcher.Stats().Added
			wg.Go(func() {
				data := fmt.Sprintf("%d-%d", person, i)
				id, err := p.Publish(context.Background(), msg(fmt.Sprint("k", person), data))
				if err != nil {
					t.Errorf("Publish: %v", err)
				} else if id != "server-"+data {
					t.Errorf("Publish(%s) id = %q, want the server's id for that message", data, id)
				}
			})
			for { // wait until this one is queued: the order is then fixed
				if p.batcher.Stats().Added > before {
					break
				}
				runtime.Gosched()
			}
		}
	}
	wg.Wait()
	p.Stop()
	total := 0
	next := map[string]int{}
	for _, req := range f.requests {
		for _, m := range req {
			total++
			var person, i int
			if _, err := fmt.Sscanf(string(m.Data), "%d-%d", &person, &i); err != nil {
				t.Fatal(err)
			}
			if want := next[m.OrderingKey]; i != want {
				t.Errorf("key %s: event %d arrived when %d was due", m.OrderingKey, i, want)
			}
			next[m.OrderingKey] = i + 1
		}
	}
	if total != 400 {
		t.Errorf("published %d messages, want 400", total)
	}
	if len(f.overlap) > 0 {
		t.Errorf("keys in two requests at once: %v", f.overlap)
	}
	if n := len(f.requests); n > 100 {
		t.Errorf("%d requests for 400 messages of 40 keys, want batching across keys", n)
	}
}

func TestErrorReachesEveryWaiter(t *testing.T) {
	f := &fakeRPC{err: errors.New("unavailable")}
	p := newPublisher(f, "projects/p/topics/t", Options{})
	var wg sync.WaitGroup
	errs := make([]error, 20)
	for i := range errs {
		wg.Go(func() { _, errs[i] = p.Publish(context.Background(), msg(fmt.Sprint("k", i), fmt.Sprint(i))) })
	}
	wg.Wait()
	for i, err := range errs {
		if err == nil {
			t.Errorf("Publish %d = nil, want the request's error", i)
		}
	}
	// The keys are free again: a later publish of the same key goes out.
	f.mu.Lock()
	f.err = nil
	f.mu.Unlock()
	if _, err := p.Publish(context.Background(), msg("k1", "again")); err != nil {
		t.Errorf("Publish after a failure = %v, want nil", err)
	}
}

// TestAnswerWithoutEveryIDFails: an answer that does not name every
// message cannot confirm them; each waiter is told so.
func TestAnswerWithoutEveryIDFails(t *testing.T) {
	f := &fakeRPC{shortIDs: 1}
	p := newPublisher(f, "projects/p/topics/t", Options{})
	if id, err := p.Publish(context.Background(), msg("k", "x")); err == nil {
		t.Errorf("Publish with no id in the answer = %q, nil; want an error", id)
	}
}

func TestTimeoutAndStop(t *testing.T) {
	f := &fakeRPC{delay: 300 * time.Millisecond}
	p := newPublisher(f, "projects/p/topics/t", Options{Timeout: 50 * time.Millisecond})
	if _, err := p.Publish(context.Background(), msg("k", "slow")); err == nil {
		t.Errorf("Publish past the timeout = nil, want an error")
	}
	p.Stop()
	if _, err := p.Publish(context.Background(), msg("k", "late")); !errors.Is(err, ErrStopped) {
		t.Errorf("Publish after Stop = %v, want ErrStopped", err)
	}
}

func TestWithoutOrdering(t *testing.T) {
	f := &fakeRPC{}
	p := newPublisher(f, "projects/p/topics/t", Options{DisableOrdering: true})
	if _, err := p.Publish(context.Background(), msg("k", "x")); err != nil {
		t.Fatal(err)
	}
	p.Stop()
	if got := f.requests[0][0].OrderingKey; got != "" {
		t.Errorf("ordering key = %q, want none", got)
	}
}

// TestOnePersonsEventsShareACall: the events of one person (one ordering
// key) that queue behind the call carrying that key go together, in order,
// in the next call: Pub/Sub keeps a key's order within a request. A batch
// of one person's 100 events so takes two Publish round trips, not 100 in
// a row.
func TestOnePersonsEventsShareACall(t *testing.T) {
	g := &gateRPC{release: make(chan struct{})}
	p := newPublisher(g, "projects/p/topics/t", Options{DelayThreshold: time.Hour})
	var wg sync.WaitGroup
	for i := range 100 {
		wg.Go(func() {
			if _, err := p.Publish(context.Background(), msg("person", fmt.Sprint(i))); err != nil {
				t.Errorf("Publish(%d) = %v, want nil", i, err)
			}
		})
		// Wait until it is queued, so that the order is fixed.
		waitfor.True(t, "the event queued", func() bool { return p.batcher.Stats().Added == int64(i+1) })
	}
	close(g.release)
	wg.Wait()
	p.Stop()
	if got := g.sizes(); fmt.Sprint(got) != "[1 99]" {
		t.Errorf("call sizes = %v, want [1 99]", got)
	}
	n := 0
	for _, req := range g.requests {
		for _, m := range req {
			if want := fmt.Sprint(n); string(m.Data) != want {
				t.Errorf("message %d of the key = %s, want %s", n, m.Data, want)
			}
			n++
		}
	}
}

// TestMessagesOnTheWire checks that a Publish request carries every
// message, pre-encoded, as Pub/Sub reads it: the same PubsubMessage as
// proto.Marshal would have written from req.Messages (data, every
// attribute, empty keys and values included, the ordering key only with
// ordering on), in the order of the call.
func TestMessagesOnTheWire(t *testing.T) {
	in := []*envelope.Encoded{
		{Data: []byte(`{"v":2,"event":{}}`), Attributes: map[string]string{envelope.AttrMessageID: "m-1", envelope.AttrType: "track", "": "empty key", "empty value": ""}, OrderingKey: "acct/person-1"},
		{Data: make([]byte, 300), Attributes: map[string]string{envelope.AttrMessageID: "m-2"}, OrderingKey: "acct/person-2"},
		{Data: nil, Attributes: nil, OrderingKey: ""},
	}
	for _, ordered := range []bool{true, false} {
		g := &gateRPC{release: make(chan struct{})}
		// No escape call: the queued messages wait for the call in flight.
		p := newPublisher(g, "projects/p/topics/t", Options{DisableOrdering: !ordered, DelayThreshold: time.Minute})
		// The first goes alone and is held; the others queue behind it and
		// go together when it returns, in the order they were handed over.
		first, err := p.Enqueue(context.Background(), in[0])
		if err != nil {
			t.Fatal(err)
		}
		waitfor.True(t, "the first call in flight", func() bool { return len(g.sizes()) == 1 })
		var rest []*Enqueued
		for _, m := range in[1:] {
			e, err := p.Enqueue(context.Background(), m)
			if err != nil {
				t.Fatal(err)
			}
			rest = append(rest, e)
		}
		close(g.release)
		for _, e := range append([]*Enqueued{first}, rest...) {
			if _, err := e.Wait(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		p.Stop()
		var got []*pubsubpb.PubsubMessage
		for _, r := range g.requests {
			got = append(got, r...)
		}
		var want []*pubsubpb.PubsubMessage
		for _, m := range in {
			w := &pubsubpb.PubsubMessage{Data: m.Data, Attributes: m.Attributes}
			if ordered {
				w.OrderingKey = m.OrderingKey
			}
			want = append(want, w)
		}
		if diff := cmp.Diff(want, got, protocmp.Transform()); diff != "" {
			t.Errorf("ordered=%v: messages as Pub/Sub reads them (-want +got):\n%s", ordered, diff)
		}
		if sizes := g.sizes(); fmt.Sprint(sizes) != "[1 2]" {
			t.Errorf("ordered=%v: call sizes %v, want [1 2] (one alone, then the two queued behind it)", ordered, sizes)
		}
	}
}
