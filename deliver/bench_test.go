package main

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/startdeliver/segment-destination/deliver/internal/dedupe"
	"github.com/startdeliver/segment-destination/deliver/internal/delivery"
	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/deliver/internal/intake"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// TestBenchDeliver measures deliver against the emulators and the stand-in
// with 20 ms added to every Startdeliver call, and prints a markdown report.
// It runs only with DELIVER_BENCH=1 (scripts/bench-deliver.sh; make bench).
func TestBenchDeliver(t *testing.T) {
	if os.Getenv("DELIVER_BENCH") != "1" {
		t.Skip("a benchmark: set DELIVER_BENCH=1 (make bench does)")
	}
	env := emulatortest.Require(t)
	ps := emulatortest.PubSub(t, env)
	fs := emulatortest.Firestore(t, env)
	const (
		latency     = 20 * time.Millisecond
		accounts    = 8
		perAccount  = 8
		outstanding = 256
		events      = 4000
		backlog     = 100_000
	)
	concurrency := min(outstanding, accounts*perAccount)
	ideal := float64(concurrency) / latency.Seconds()

	// bench is one run: fresh topic, subscription, collections and stand-in.
	type run struct {
		eventsPerSec float64
		callsPerEv   float64
		reads        int64
		peakHeap     uint64
		processed    int64
		nacked       int64
	}
	benchRun := func(name string, n int, newUsers bool, stopAfter int, ordered bool) run {
		topic := emulatortest.Name(t, "bench-"+name)
		emulatortest.CreateTopic(t, ps, env.Project, topic)
		emulatortest.CreateTopic(t, ps, env.Project, topic+"-dead")
		emulatortest.CreateSubscription(t, ps, env.Project, topic, topic+"-sub", emulatortest.SubscriptionOptions{Ordering: true, AckDeadline: 60 * time.Second})
		col := emulatortest.Name(t, "bench")
		sd := startdelivertest.NewServer()
		defer sd.Close()
		store := accountstore.New(fs, accountstore.Options{Collection: col})
		keys := make([]string, accounts)
		for i := range keys {
			keys[i] = fmt.Sprintf("sd-bench-%s-%d", name, i)
			a, _ := account.Parse([]byte(simpleAccount))
			if err := store.Put(context.Background(), envelope.AccountID(keys[i]), a); err != nil {
				t.Fatal(err)
			}
			sd.AddKey(keys[i])
			if !newUsers {
				for u := range 50 {
					sd.AddUser(keys[i], map[string]any{"externalId": fmt.Sprintf("u-%d", u)})
				}
			}
		}
		// The backlog, published before deliver starts.
		pub := ps.Publisher(topic)
		pub.EnableMessageOrdering = ordered
		var results []*pubsub.PublishResult
		for i := range n {
			key := keys[i%accounts]
			user := fmt.Sprintf("u-%d", (i/accounts)%50)
			if newUsers {
				user = fmt.Sprintf("new-%d", i)
			}
			ev, _ := segment.Decode(fmt.Appendf(nil, `{"type":"track","userId":%q,"event":"Bench","messageId":"b-%d","properties":{"plan":"pro","n":%d}}`, user, i, i))
			enc, err := envelope.Encode(&envelope.Message{AccountID: envelope.AccountID(key), APIKey: key, ReceivedAt: time.Now(), Event: ev})
			if err != nil {
				t.Fatal(err)
			}
			m := &pubsub.Message{Data: enc.Data, Attributes: enc.Attributes}
			if ordered {
				m.OrderingKey = enc.OrderingKey
			}
			results = append(results, pub.Publish(context.Background(), m))
		}
		for _, r := range results {
			if _, err := r.Get(context.Background()); err != nil {
				t.Fatal(err)
			}
		}
		pub.Stop()
		results = nil
		runtime.GC()

		sd.SetLatency(latency)
		done := dedupe.New(fs, dedupe.Options{Collection: col + "-deliveries"})
		var processed, nacked atomic.Int64
		proc := delivery.New(delivery.Options{
			Accounts: store, Completions: done,
			Claims:      identity.New(fs, identity.Options{Collection: col + "-identities"}),
			Client:      startdeliver.New(startdeliver.Options{DefaultBaseURL: sd.URL(), RateLimit: startdeliver.RateLimit{Disabled: true}}),
			DeadLetters: intake.NewDeadLetterPublisher(ps, topic+"-dead"),
			PerAccount:  perAccount,
		})
		counting := processorFunc(func(ctx context.Context, m delivery.Message) delivery.Result {
			res := proc.Process(ctx, m)
			if res.Decision == delivery.Ack {
				processed.Add(1)
			} else {
				nacked.Add(1)
			}
			return res
		})
		ctx, cancel := context.WithCancel(context.Background())
		var peak atomic.Uint64
		var wg sync.WaitGroup
		wg.Go(func() {
			var ms runtime.MemStats
			for ctx.Err() == nil {
				runtime.ReadMemStats(&ms)
				if ms.HeapInuse > peak.Load() {
					peak.Store(ms.HeapInuse)
				}
				time.Sleep(20 * time.Millisecond)
			}
		})
		start := time.Now()
		wg.Go(func() {
			_ = intake.Pull(ctx, ps.Subscriber(topic+"-sub"), counting, intake.PullSettings{MaxOutstandingMessages: outstanding, Streams: 4})
		})
		target := int64(n)
		if stopAfter > 0 {
			target = int64(stopAfter)
		}
		deadline := time.Now().Add(4 * time.Minute)
		for processed.Load() < target && time.Now().Before(deadline) {
			time.Sleep(20 * time.Millisecond)
		}
		took := time.Since(start)
		cancel()
		wg.Wait()
		got := processed.Load()
		return run{
			eventsPerSec: float64(got) / took.Seconds(),
			callsPerEv:   float64(sd.TotalCalls()) / float64(max(got, 1)),
			reads:        store.Reads() + done.Reads(),
			peakHeap:     peak.Load(),
			processed:    got,
			nacked:       nacked.Load(),
		}
	}

	// Baseline: the stand-in's latency alone, at the same concurrency.
	sd := startdelivertest.NewServer("k")
	sd.SetLatency(latency)
	client := startdeliver.New(startdeliver.Options{DefaultBaseURL: sd.URL(), RateLimit: startdeliver.RateLimit{Disabled: true}})
	uid := sd.AddUser("k", map[string]any{"externalId": "u"})
	var next atomic.Int64
	start := time.Now()
	var wg sync.WaitGroup
	for range concurrency {
		wg.Go(func() {
			for next.Add(1) <= events {
				_, _ = client.RecordUsage(context.Background(), startdeliver.Account{APIKey: "k"}, startdeliver.Usage{User: uid, Type: "track", Name: "b", Timestamp: time.Now()})
			}
		})
	}
	wg.Wait()
	rawRate := float64(events) / time.Since(start).Seconds()
	sd.Close()

	// Baseline: the Firestore emulator's own rate for what deliver does per
	// known-user event (a read, then a write), at the same concurrency.
	fsCol := fs.Collection(emulatortest.Name(t, "bench-fs"))
	next.Store(0)
	start = time.Now()
	for range concurrency {
		wg.Go(func() {
			for i := next.Add(1); i <= events; i = next.Add(1) {
				doc := fsCol.Doc(fmt.Sprint("d", i))
				_, _ = doc.Get(context.Background())
				_, _ = doc.Set(context.Background(), map[string]any{"done": true, "at": time.Now()})
			}
		})
	}
	wg.Wait()
	fsRate := float64(events) / time.Since(start).Seconds()

	known := benchRun("known", events, false, 0, true)
	fresh := benchRun("new", events/4, true, 0, true)
	big := benchRun("backlog", backlog, false, 10_000, false)

	fmt.Printf("## deliver\n\n")
	fmt.Printf("Pull mode against Google's Pub/Sub and Firestore emulators and the Startdeliver stand-in with %s added to every call; %d accounts, %d events of one account at once, %d messages outstanding: %d events in flight, so the ideal is %d ÷ %s = %.0f events/s. Baseline in the same run: %d bare usage calls at the same concurrency (Startdeliver's latency alone).\n\n",
		latency, accounts, perAccount, outstanding, concurrency, concurrency, latency, ideal, concurrency)
	fmt.Printf("| measure | value | against |\n|---|---|---|\n")
	fmt.Printf("| known users: events/s | %.0f | %.2f of ideal (%.0f), %.2f of the bare-call baseline (%.0f/s), %.2f of the Firestore emulator's read+write rate (%.0f/s) |\n", known.eventsPerSec, known.eventsPerSec/ideal, ideal, known.eventsPerSec/rawRate, rawRate, known.eventsPerSec/fsRate, fsRate)
	fmt.Printf("| known users: Startdeliver calls per event | %.3f | limit 1.0 |\n", known.callsPerEv)
	fmt.Printf("| known users: nacks (retried later) | %d | of %d events |\n", known.nacked, known.processed)
	fmt.Printf("| new users: Startdeliver calls per event | %.3f | find + create + usage = 3 |\n", fresh.callsPerEv)
	fmt.Printf("| new users: events/s | %.0f | %.2f of ideal |\n", fresh.eventsPerSec, fresh.eventsPerSec/ideal)
	fmt.Printf("| Firestore reads per 10,000 events (known users) | %.0f | 10,000 = one per event |\n", float64(known.reads)/float64(known.processed)*10000)
	fmt.Printf("| peak Go heap in use, %d-event backlog (first %d processed) | %.1f MiB | bounded by %d outstanding |\n", backlog, big.processed, float64(big.peakHeap)/(1<<20), outstanding)
	fmt.Println()
}

// processorFunc adapts a function to the intake's processor.
type processorFunc func(ctx context.Context, m delivery.Message) delivery.Result

func (f processorFunc) Process(ctx context.Context, m delivery.Message) delivery.Result {
	return f(ctx, m)
}
