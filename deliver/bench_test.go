package main

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startdeliver/segment-destination/deliver/internal/dedupe"
	"github.com/startdeliver/segment-destination/deliver/internal/delivery"
	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/deliver/internal/intake"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/cputime"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/gcpclient"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// Benchmark shape. The stand-in adds benchLatency to every Startdeliver
// call; deliver holds benchOutstanding messages and benchPerAccount events
// of one account at once, so min(outstanding, accounts × per-account)
// events are in flight.
const (
	benchLatency     = 20 * time.Millisecond
	benchAccounts    = 8
	benchPerAccount  = 8
	benchOutstanding = 256
	benchStreams     = 4
	benchUsers       = 50 // known users per account
	benchKnown       = 4000
	benchNew         = 1000
	benchLimited     = 1200 // events of the run with deliver's default rate limiter

	// The memory runs use the deliver binary itself, with more accounts so
	// that its per-account rate limiter (20 requests/s) is not what paces it.
	memAccounts  = 32
	memUsers     = 10
	memProcessed = 4000
)

// TestBenchDeliver measures deliver against Google's Pub/Sub and Firestore
// emulators and the Startdeliver stand-in with 20 ms added to every call,
// with baselines measured in the same run, and prints a markdown section
// for docs/benchmarks.md. It runs only with DELIVER_BENCH=1
// (scripts/bench-deliver.sh; make bench).
func TestBenchDeliver(t *testing.T) {
	if os.Getenv("DELIVER_BENCH") != "1" {
		t.Skip("a benchmark: set DELIVER_BENCH=1 (scripts/bench-deliver.sh, make bench)")
	}
	env := emulatortest.Require(t)
	ps := emulatortest.PubSub(t, env)
	fs, wire := emulatortest.CountingFirestore(t, env)
	concurrency := min(benchOutstanding, benchAccounts*benchPerAccount)
	ideal := float64(concurrency) / benchLatency.Seconds()
	b := &bench{t: t, env: env, ps: ps, fs: fs, wire: wire}

	// Baselines, at deliver's concurrency.
	load0 := loadAverage()
	// Warm the emulators' JVMs up first: a fresh emulator is several times
	// slower until its code is compiled.
	b.pipeline("warmup", 1000, false, true)
	fsIdle, psIdle := b.idleCPU(2 * time.Second)
	t.Logf("emulators idle: Firestore %.0f%%, Pub/Sub %.0f%% of a core", fsIdle*100, psIdle*100)

	bare, bareCPU := b.bareCalls(concurrency, benchKnown)
	t.Logf("baseline bare calls: %.0f/s, %s CPU each", bare, bareCPU)
	fsRate, fsOpCPU := b.firestoreCreateWrite(concurrency, benchKnown)
	t.Logf("baseline Firestore create+write: %.0f/s, %s emulator CPU each", fsRate, fsOpCPU)
	psRate, psMsgCPU := b.pubsubReceive(benchKnown)
	t.Logf("baseline Pub/Sub receive+ack: %.0f/s, %s emulator CPU each", psRate, psMsgCPU)

	known := b.pipeline("known", benchKnown, false, true)
	t.Logf("known: %+v", known)
	fresh := b.pipeline("new", benchNew, true, true)
	t.Logf("new: %+v", fresh)
	limited := b.pipeline("limited", benchLimited, false, false)
	t.Logf("limited: %+v", limited)

	bin := b.deliverBinary()
	mem10k := b.memory(bin, 10_000)
	t.Logf("memory 10k: %+v", mem10k)
	mem100k := b.memory(bin, 100_000)
	t.Logf("memory 100k: %+v", mem100k)

	load1 := loadAverage()
	ratio := func(a, b float64) string {
		if b <= 0 {
			return "n/a"
		}
		return fmt.Sprintf("%.2f", a/b)
	}
	w := new(strings.Builder)
	fmt.Fprintf(w, "## deliver\n\n")
	fmt.Fprintf(w, "`scripts/bench-deliver.sh` (TestBenchDeliver in `deliver/bench_test.go`) on %s, %d cores (1-minute load average %s at the start, %s at the end). "+
		"Pull mode against Google's Pub/Sub and Firestore emulators (fresh ones, warmed up with 1,000 events first) and the Startdeliver stand-in with %s added to every call. "+
		"%d accounts × %d known users, ACCOUNT_CONCURRENCY=%d, PULL_MAX_OUTSTANDING=%d, %d streams: **%d events in flight** = min(%d, %d × %d), "+
		"so the **ideal is %d ÷ %s = %.0f events/s**. "+
		"The pipeline runs in process (the real intake.Pull, delivery.Processor, dedupe, identity and accountstore stores over an instrumented Firestore client, and Startdeliver client), "+
		"with the client's rate limiter off except where noted; the memory runs start the deliver binary itself. "+
		"Baselines, in the same run at the same concurrency: bare `POST /usage` calls to the stand-in (what Startdeliver's latency alone allows), "+
		"a Firestore create then write of a fresh document per event (deliver's claim and completion record, nothing else), "+
		"and the Pub/Sub emulator's receive-and-ack of an ordered backlog with deliver's flow control and no work.\n\n",
		time.Now().UTC().Format("2006-01-02"), runtime.NumCPU(), load0, load1, benchLatency,
		benchAccounts, benchUsers, benchPerAccount, benchOutstanding, benchStreams,
		concurrency, benchOutstanding, benchAccounts, benchPerAccount, concurrency, benchLatency, ideal)
	fmt.Fprintf(w, "| measure | value | against |\n|---|---|---|\n")
	fmt.Fprintf(w, "| ideal (computed) | %.0f events/s | %d in flight ÷ %s |\n", ideal, concurrency, benchLatency)
	fmt.Fprintf(w, "| baseline: bare Startdeliver calls | %.0f calls/s | %s of ideal; %s CPU each (client and stand-in) |\n", bare, ratio(bare, ideal), ms(bareCPU))
	fmt.Fprintf(w, "| baseline: Firestore create + write | %.0f events/s | %s of ideal; %s Firestore emulator CPU each |\n", fsRate, ratio(fsRate, ideal), ms(fsOpCPU))
	fmt.Fprintf(w, "| baseline: Pub/Sub receive + ack | %.0f messages/s | %s of ideal; %s Pub/Sub emulator CPU each |\n", psRate, ratio(psRate, ideal), ms(psMsgCPU))
	fmt.Fprintf(w, "| emulators at rest | Firestore %.0f%%, Pub/Sub %.0f%% of a core | |\n", fsIdle*100, psIdle*100)
	fmt.Fprintf(w, "| **known users: events/s** (%d events) | **%.0f** | **%s of ideal**; %s of bare calls; %s of Firestore create+write; %s of Pub/Sub receive |\n",
		known.events, known.rate, ratio(known.rate, ideal), ratio(known.rate, bare), ratio(known.rate, fsRate), ratio(known.rate, psRate))
	fmt.Fprintf(w, "| known users: CPU per event | %s in process (deliver's pipeline and clients, and the stand-in), %s Firestore emulator, %s Pub/Sub emulator | %.0f%% of the %d cores busy during the run |\n",
		ms(known.cpuPerEvent), ms(known.fsCPU), ms(known.psCPU), known.busy*100, runtime.NumCPU())
	slotBound := float64(concurrency) / (known.doneWait.Seconds() + known.callsPerEvent()*benchLatency.Seconds())
	fmt.Fprintf(w, "| known users: mean time per event | %s in Process: dedupe check %s, completion record %s, Startdeliver calls %.1f × ≥ %s | %.0f events in Process at once (rate × time); the account slot is held over the dedupe check and the calls (not the completion record), so the %d slots allow %d ÷ (%s + %.1f × %s) = %.0f events/s |\n",
		msWall(known.process), msWall(known.doneWait), msWall(known.completeWait), known.callsPerEvent(), benchLatency,
		known.rate*known.process.Seconds(), concurrency, concurrency, msWall(known.doneWait), known.callsPerEvent(), benchLatency, slotBound)
	fmt.Fprintf(w, "| **known users: Startdeliver calls per event** | **%.3f** | limit 1.0: %s; the %.3f above 1.0 is the first lookup of each of the %d users, %.3f per event after it |\n",
		known.callsPerEvent(), known.routes, known.callsPerEvent()-known.usagePerEvent(), benchAccounts*benchUsers, known.steadyCallsPerEvent())
	fmt.Fprintf(w, "| known users: nacked (redelivered) | %d | of %d events |\n", known.nacked, known.events)
	fmt.Fprintf(w, "| **new users: Startdeliver calls per event** | **%.3f** | find + create + usage = 3: %s |\n", fresh.callsPerEvent(), fresh.routes)
	fmt.Fprintf(w, "| new users: events/s (%d events) | %.0f | %s of ideal; CPU per event %s in process, %s Firestore emulator, %s Pub/Sub emulator |\n",
		fresh.events, fresh.rate, ratio(fresh.rate, ideal), ms(fresh.cpuPerEvent), ms(fresh.fsCPU), ms(fresh.psCPU))
	fmt.Fprintf(w, "| new users: nacked (redelivered) | %d | of %d events: %s |\n", fresh.nacked, fresh.events, orNone(fresh.nackClasses))
	fmt.Fprintf(w, "| **Firestore reads per 10,000 events, known users** | **%.0f** | counted on the wire (documents in BatchGetDocuments answers); of them dedupe %.0f (a copy's only), config %.0f; writes %.0f (a claim and a completion record per event) |\n",
		known.per10k(known.wireReads), known.per10k(known.dedupeReads), known.per10k(known.configReads), known.per10k(known.wireWrites))
	fmt.Fprintf(w, "| **Firestore calls per 10,000 events, known users** | **%.0f** | BatchGetDocuments %.0f (%.1f documents each), Commit and BatchWrite %.0f (%.1f writes each), BeginTransaction %.0f |\n",
		known.per10k(known.readCalls+known.writeCalls+known.beginCalls), known.per10k(known.readCalls), perCall(known.wireReads, known.readCalls),
		known.per10k(known.writeCalls), perCall(known.wireWrites, known.writeCalls), known.per10k(known.beginCalls))
	fmt.Fprintf(w, "| Firestore reads per 10,000 events, new users | %.0f | dedupe %.0f (a copy's only), the rest identity claims; writes %.0f |\n",
		fresh.per10k(fresh.wireReads), fresh.per10k(fresh.dedupeReads), fresh.per10k(fresh.wireWrites))
	fmt.Fprintf(w, "| Firestore calls per 10,000 events, new users | %.0f | BatchGetDocuments %.0f (%.1f documents each), Commit and BatchWrite %.0f (%.1f writes each), BeginTransaction %.0f |\n",
		fresh.per10k(fresh.readCalls+fresh.writeCalls+fresh.beginCalls), fresh.per10k(fresh.readCalls), perCall(fresh.wireReads, fresh.readCalls),
		fresh.per10k(fresh.writeCalls), perCall(fresh.wireWrites, fresh.writeCalls), fresh.per10k(fresh.beginCalls))
	fmt.Fprintf(w, "| known users with deliver's default rate limiter (20 requests/s per account; %d events) | %.0f events/s | %s of its bound %d × 20 = %d/s |\n",
		limited.events, limited.rate, ratio(limited.rate, float64(benchAccounts*20)), benchAccounts, benchAccounts*20)
	fmt.Fprintf(w, "| **peak RSS of the deliver binary, 100,000-event backlog** (stopped after the first %d) | **%.1f MiB** | %s × its peak with a 10,000-event backlog (%.1f MiB): memory does not follow the backlog |\n",
		mem100k.processed, mem100k.peakRSSMiB(), ratio(mem100k.peakRSSMiB(), mem10k.peakRSSMiB()), mem10k.peakRSSMiB())
	fmt.Fprintf(w, "| deliver binary over the 100,000 backlog | %.0f events/s, %s CPU per event | %d accounts, PULL_MAX_OUTSTANDING=%d, default rate limiter; RSS after %d / %d events: %.1f / %.1f MiB |\n",
		mem100k.rate, ms(mem100k.cpuPerEvent), memAccounts, benchOutstanding, mem100k.processed/4, mem100k.processed, mem100k.rssQuarter, mem100k.rssEnd)
	fmt.Fprintf(w, "| backlog publish (pre-encoded envelopes, one publisher) | %.0f messages/s | setup, not deliver |\n", mem100k.publishRate)
	fmt.Fprintln(w)
	total := known.cpuPerEvent + known.fsCPU + known.psCPU
	fmt.Fprintf(w, "Reading the figures. Known users cost %.3f Startdeliver calls per event (1.000 once a user's id is cached), %.0f Firestore reads and %.0f writes per 10,000 events. "+
		"The rate is not bound by Startdeliver's latency here but by CPU: the %d cores were %.0f%% busy, and of the %s of CPU one known-user event costs, the emulators take %.0f%% (Firestore %s, Pub/Sub %s), "+
		"so %d cores allow about %.0f events/s before anything else runs on them. "+
		"deliver's own cost is %s of CPU per event in the binary (%.0f events/s per core), so against the real Pub/Sub and Firestore the ideal of %.0f events/s would need about %.1f cores per instance, "+
		"and deliver's default rate limiter (20 requests/s per account) bounds each account long before that.\n\n",
		known.callsPerEvent(), known.per10k(known.wireReads), known.per10k(known.wireWrites),
		runtime.NumCPU(), known.busy*100, ms(total), 100*float64(known.fsCPU+known.psCPU)/float64(max(total, 1)), ms(known.fsCPU), ms(known.psCPU),
		runtime.NumCPU(), float64(runtime.NumCPU())/max(total.Seconds(), 1e-9),
		ms(mem100k.cpuPerEvent), 1/max(mem100k.cpuPerEvent.Seconds(), 1e-9), ideal, ideal*mem100k.cpuPerEvent.Seconds())
	if fresh.nacked > 0 {
		fmt.Fprintf(w, "New users: %d of %d deliveries were nacked (classes in the table): events waiting for their account's turn are not nacked, so each of these is a failure to look at. \n\n",
			fresh.nacked, fresh.nacked+fresh.events)
	}
	fmt.Fprintf(w, "Where deliver itself could gain: the claims of concurrent events share Firestore round trips "+
		"(%.1f claims per BatchWrite call with known users, %.0f Firestore calls per 10,000 events in all: each completion record is a write of its own, sent at once to keep the crash window short), yet claims and records still take %s per event against one %s call, "+
		"most of it waiting behind the emulators for the cores, and the dedupe check's %s is inside the account slot. "+
		"New users cost %.0f Firestore calls per 10,000 events, most of them the identity claims (a transaction per new user, then its record), which do not share round trips. "+
		"The held messages (PULL_MAX_OUTSTANDING, default 2,048; 256 here) are one pool for all accounts: a pool larger than one account's burst lets other accounts' first events past it (the burst test), and the held ones that have not started are nacked at a shutdown. "+
		"Memory is bounded by flow control: peak RSS is the same with 10 times the backlog.\n\n",
		perCall(known.wireWrites-known.events, known.writeCalls-known.events), known.per10k(known.readCalls+known.writeCalls+known.beginCalls),
		msWall(known.doneWait+known.completeWait), benchLatency, msWall(known.doneWait),
		fresh.per10k(fresh.readCalls+fresh.writeCalls+fresh.beginCalls))
	fmt.Print(w.String())
	fmt.Println("--- end deliver")
}

// bench holds one benchmark run's clients.
type bench struct {
	t    *testing.T
	env  emulatortest.Env
	ps   *pubsub.Client
	fs   *firestore.Client
	wire *emulatortest.Wire
}

// pipelineResult is one in-process run of deliver's pipeline.
type pipelineResult struct {
	events      int64 // acked
	nacked      int64
	rate        float64 // acked events/s, first ack to last
	calls       int
	usageCalls  int
	firstLooks  int // GET /user + GET /customer: lookups
	routes      string
	wireReads   int64
	wireWrites  int64
	readCalls   int64 // BatchGetDocuments calls
	writeCalls  int64 // Commit and BatchWrite calls
	beginCalls  int64 // BeginTransaction calls
	dedupeReads int64
	configReads int64
	busy        float64 // share of the machine's CPU busy
	cpuPerEvent time.Duration
	fsCPU       time.Duration // Firestore emulator CPU per event
	psCPU       time.Duration // Pub/Sub emulator CPU per event
	nackClasses string
	// Mean latencies: Process as a whole, the dedupe check, the completion
	// record.
	process, doneWait, completeWait time.Duration
}

func (r pipelineResult) callsPerEvent() float64 { return float64(r.calls) / float64(max(r.events, 1)) }
func (r pipelineResult) usagePerEvent() float64 {
	return float64(r.usageCalls) / float64(max(r.events, 1))
}
func (r pipelineResult) steadyCallsPerEvent() float64 {
	return float64(r.calls-r.firstLooks) / float64(max(r.events, 1))
}
func (r pipelineResult) per10k(n int64) float64 {
	return float64(n) / float64(max(r.events, 1)) * 10_000
}

// setup creates a topic and its ordered subscription, deleted when the
// test ends.
func (b *bench) setup(name string) (topic, sub string) {
	topic = emulatortest.Name(b.t, "bench-"+name)
	emulatortest.CreateTopic(b.t, b.ps, b.env.Project, topic)
	emulatortest.CreateTopic(b.t, b.ps, b.env.Project, topic+"-dead")
	emulatortest.CreateSubscription(b.t, b.ps, b.env.Project, topic, topic+"-sub", emulatortest.SubscriptionOptions{Ordering: true, AckDeadline: 60 * time.Second})
	return topic, topic + "-sub"
}

// accounts registers n accounts in a fresh collection and in sd, with users
// known users each (none when users is 0).
func (b *bench) accounts(sd *startdelivertest.Server, store *accountstore.Store, name string, n, users int) []string {
	keys := make([]string, n)
	for i := range keys {
		keys[i] = fmt.Sprintf("sd-bench-%s-%d", name, i)
		a, err := account.Parse([]byte(simpleAccount))
		if err != nil {
			b.t.Fatal(err)
		}
		if err := store.Put(context.Background(), envelope.AccountID(keys[i]), a); err != nil {
			b.t.Fatal(err)
		}
		sd.AddKey(keys[i])
		for u := range users {
			sd.AddUser(keys[i], map[string]any{"externalId": fmt.Sprintf("u-%d", u)})
		}
	}
	return keys
}

// publish puts n pre-encoded envelopes on topic, spread over keys: event i
// is for known user i/len(keys) mod users, or a new user each when users is
// 0. It returns the publish rate.
func (b *bench) publish(topic string, keys []string, n, users int) float64 {
	pub := b.ps.Publisher(topic)
	pub.EnableMessageOrdering = true
	defer pub.Stop()
	start := time.Now()
	results := make([]*pubsub.PublishResult, 0, min(n, 10_000))
	wait := func() {
		for _, r := range results {
			if _, err := r.Get(context.Background()); err != nil {
				b.t.Fatalf("publish backlog: %v", err)
			}
		}
		results = results[:0]
	}
	received := time.Now()
	for i := range n {
		key := keys[i%len(keys)]
		user := fmt.Sprintf("new-%d", i)
		if users > 0 {
			user = fmt.Sprintf("u-%d", (i/len(keys))%users)
		}
		ev, err := segment.Decode(fmt.Appendf(nil, `{"type":"track","userId":%q,"event":"Bench","messageId":"b-%d","properties":{"plan":"pro","n":%d}}`, user, i, i))
		if err != nil {
			b.t.Fatal(err)
		}
		enc, err := envelope.Encode(&envelope.Message{AccountID: envelope.AccountID(key), APIKey: key, ReceivedAt: received, Event: ev})
		if err != nil {
			b.t.Fatal(err)
		}
		results = append(results, pub.Publish(context.Background(), &pubsub.Message{Data: enc.Data, Attributes: enc.Attributes, OrderingKey: enc.OrderingKey}))
		if len(results) == cap(results) {
			wait()
		}
	}
	wait()
	return float64(n) / time.Since(start).Seconds()
}

// pipeline runs deliver's pipeline in process over a backlog of n events of
// benchAccounts accounts, until every event is acked.
func (b *bench) pipeline(name string, n int, newUsers, unlimited bool) pipelineResult {
	t := b.t
	topic, sub := b.setup(name)
	col := emulatortest.Name(t, "bench-"+name)
	sd := startdelivertest.NewServer()
	defer sd.Close()
	store := accountstore.New(b.fs, accountstore.Options{Collection: col})
	users := benchUsers
	if newUsers {
		users = 0
	}
	keys := b.accounts(sd, store, name, benchAccounts, users)
	b.publish(topic, keys, n, users)
	runtime.GC()

	sd.SetLatency(benchLatency)
	sd.ResetCounters()
	done := &timedCompletions{Store: dedupe.New(b.fs, dedupe.Options{Collection: col + "-deliveries"})}
	dead := intake.NewDeadLetterPublisher(b.ps, topic+"-dead")
	defer dead.Stop()
	proc := delivery.New(delivery.Options{
		Accounts:    store,
		Completions: done,
		Claims:      identity.New(b.fs, identity.Options{Collection: col + "-identities"}),
		Client:      startdeliver.New(startdeliver.Options{DefaultBaseURL: sd.URL(), RateLimit: startdeliver.RateLimit{Disabled: unlimited}}),
		DeadLetters: dead,
		PerAccount:  benchPerAccount,
	})
	var acked, nacked atomic.Int64
	var first, last atomic.Int64 // unix nanos
	var mu sync.Mutex
	classes := map[string]int{}
	var processing atomic.Int64 // total nanoseconds in Process
	counting := processorFunc(func(ctx context.Context, m delivery.Message) delivery.Result {
		began := time.Now()
		res := proc.Process(ctx, m)
		processing.Add(int64(time.Since(began)))
		now := time.Now().UnixNano()
		if res.Decision == delivery.Ack {
			first.CompareAndSwap(0, now)
			acked.Add(1)
			last.Store(now)
		} else {
			nacked.Add(1)
			mu.Lock()
			classes[res.Class]++
			mu.Unlock()
		}
		return res
	})
	reads0, writes0 := b.wire.Reads.Load(), b.wire.Writes.Load()
	dedupeReads0, configReads0 := b.wire.ReadsOf(col+"-deliveries"), b.wire.ReadsOf(col)
	readCalls0, writeCalls0, beginCalls0 := b.wire.Calls("BatchGetDocuments"), b.wire.Calls("Commit", "BatchWrite"), b.wire.Calls("BeginTransaction")
	cpu0 := cputime.Process()
	busy0, total0 := machineCPU()
	fs0, ps0 := emulatorCPU(b.env.FirestoreHost), emulatorCPU(b.env.PubSubHost)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Go(func() {
		if err := intake.Pull(ctx, b.ps.Subscriber(sub), counting, intake.PullSettings{MaxOutstandingMessages: benchOutstanding, Streams: benchStreams}); err != nil {
			t.Errorf("pull: %v", err)
		}
	})
	deadline := time.Now().Add(3 * time.Minute)
	for acked.Load() < int64(n) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	busy1, total1 := machineCPU()
	cpu1 := cputime.Process()
	fs1, ps1 := emulatorCPU(b.env.FirestoreHost), emulatorCPU(b.env.PubSubHost)
	cancel()
	wg.Wait()
	got := acked.Load()
	if got < int64(n) {
		t.Errorf("%s: %d of %d events acked before the deadline", name, got, n)
	}
	counts := sd.CallCounts()
	r := pipelineResult{
		events:       got,
		nacked:       nacked.Load(),
		rate:         float64(got) / (time.Duration(last.Load() - first.Load()).Seconds()),
		calls:        sd.TotalCalls(),
		usageCalls:   counts["POST /usage"],
		firstLooks:   counts["GET /user"] + counts["GET /customer"],
		routes:       routes(counts),
		wireReads:    b.wire.Reads.Load() - reads0,
		wireWrites:   b.wire.Writes.Load() - writes0,
		readCalls:    b.wire.Calls("BatchGetDocuments") - readCalls0,
		writeCalls:   b.wire.Calls("Commit", "BatchWrite") - writeCalls0,
		beginCalls:   b.wire.Calls("BeginTransaction") - beginCalls0,
		dedupeReads:  b.wire.ReadsOf(col+"-deliveries") - dedupeReads0,
		configReads:  b.wire.ReadsOf(col) - configReads0,
		cpuPerEvent:  (cpu1 - cpu0) / time.Duration(max(got, 1)),
		fsCPU:        (fs1 - fs0) / time.Duration(max(got, 1)),
		psCPU:        (ps1 - ps0) / time.Duration(max(got, 1)),
		nackClasses:  routes(classes),
		process:      mean(processing.Load(), got+nacked.Load()),
		doneWait:     mean(done.doneNanos.Load(), done.dones.Load()),
		completeWait: mean(done.completeNanos.Load(), done.completes.Load()),
	}
	if total1 > total0 {
		r.busy = (busy1 - busy0) / (total1 - total0)
	}
	if newUsers {
		r.firstLooks = 0 // every lookup of a new user is part of its cost
	}
	return r
}

// bareCalls is the rate of bare usage calls to the stand-in at concurrency.
func (b *bench) bareCalls(concurrency, n int) (rate float64, cpuEach time.Duration) {
	sd := startdelivertest.NewServer("k")
	defer sd.Close()
	sd.SetLatency(benchLatency)
	client := startdeliver.New(startdeliver.Options{DefaultBaseURL: sd.URL(), RateLimit: startdeliver.RateLimit{Disabled: true}})
	uid := sd.AddUser("k", map[string]any{"externalId": "u"})
	var next atomic.Int64
	var wg sync.WaitGroup
	start, cpu0 := time.Now(), cputime.Process()
	for range concurrency {
		wg.Go(func() {
			for next.Add(1) <= int64(n) {
				if _, err := client.RecordUsage(context.Background(), startdeliver.Account{APIKey: "k"}, startdeliver.Usage{User: uid, Type: "track", Name: "b", Timestamp: time.Now()}); err != nil {
					b.t.Errorf("bare call: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds(), (cputime.Process() - cpu0) / time.Duration(n)
}

// idleCPU is the share of a core each emulator uses while nothing runs.
func (b *bench) idleCPU(d time.Duration) (fs, ps float64) {
	fs0, ps0 := emulatorCPU(b.env.FirestoreHost), emulatorCPU(b.env.PubSubHost)
	time.Sleep(d) // a fixed measuring window, not a wait for a condition
	fs1, ps1 := emulatorCPU(b.env.FirestoreHost), emulatorCPU(b.env.PubSubHost)
	return (fs1 - fs0).Seconds() / d.Seconds(), (ps1 - ps0).Seconds() / d.Seconds()
}

// loadAverage is the machine's 1-minute load average, as text.
func loadAverage() string {
	data, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return "?"
	}
	f := strings.Fields(string(data))
	if len(f) == 0 {
		return "?"
	}
	return f[0]
}

// firestoreCreateWrite is the rate of a create then a write of a fresh
// document (deliver's claim and completion record) at concurrency.
func (b *bench) firestoreCreateWrite(concurrency, n int) (rate float64, cpuEach time.Duration) {
	col := b.fs.Collection(emulatortest.Name(b.t, "bench-fs"))
	cpu0 := emulatorCPU(b.env.FirestoreHost)
	var next atomic.Int64
	var wg sync.WaitGroup
	start := time.Now()
	for range concurrency {
		wg.Go(func() {
			for i := next.Add(1); i <= int64(n); i = next.Add(1) {
				doc := col.Doc(fmt.Sprint("d", i))
				if _, err := doc.Create(context.Background(), map[string]any{"done": false, "at": time.Now()}); err != nil {
					b.t.Errorf("firestore baseline create: %v", err)
					return
				}
				if _, err := doc.Set(context.Background(), map[string]any{"done": true, "at": time.Now()}); err != nil {
					b.t.Errorf("firestore baseline write: %v", err)
					return
				}
			}
		})
	}
	wg.Wait()
	return float64(n) / time.Since(start).Seconds(), (emulatorCPU(b.env.FirestoreHost) - cpu0) / time.Duration(n)
}

// pubsubReceive is the rate the Pub/Sub emulator delivers a backlog of n
// ordered events with deliver's flow control, each acked at once.
func (b *bench) pubsubReceive(n int) (rate float64, cpuEach time.Duration) {
	topic, sub := b.setup("pubsub")
	keys := make([]string, benchAccounts)
	for i := range keys {
		keys[i] = fmt.Sprintf("sd-bench-pubsub-%d", i)
	}
	b.publish(topic, keys, n, benchUsers)
	s := b.ps.Subscriber(sub)
	s.ReceiveSettings.MaxOutstandingMessages = benchOutstanding
	s.ReceiveSettings.NumGoroutines = benchStreams
	var got atomic.Int64
	var first, last atomic.Int64
	cpu0 := emulatorCPU(b.env.PubSubHost)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	err := s.Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		now := time.Now().UnixNano()
		first.CompareAndSwap(0, now)
		m.Ack()
		last.Store(now)
		if got.Add(1) >= int64(n) {
			cancel()
		}
	})
	if err != nil {
		b.t.Errorf("pubsub baseline: %v", err)
	}
	return float64(got.Load()) / time.Duration(last.Load()-first.Load()).Seconds(),
		(emulatorCPU(b.env.PubSubHost) - cpu0) / time.Duration(max(got.Load(), 1))
}

// memoryResult is one run of the deliver binary over a backlog.
type memoryResult struct {
	backlog     int
	processed   int
	rate        float64
	peakRSS     int64 // bytes, VmHWM
	rssQuarter  float64
	rssEnd      float64
	cpuPerEvent time.Duration // the deliver process's CPU per event
	publishRate float64
}

func (m memoryResult) peakRSSMiB() float64 { return float64(m.peakRSS) / (1 << 20) }

// deliverBinary builds deliver (or uses DELIVER_BENCH_BIN).
func (b *bench) deliverBinary() string {
	if bin := os.Getenv("DELIVER_BENCH_BIN"); bin != "" {
		return bin
	}
	bin := filepath.Join(b.t.TempDir(), "deliver")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		b.t.Fatalf("go build deliver: %v\n%s", err, out)
	}
	return bin
}

// memory runs the deliver binary over a backlog already on its
// subscription, stops it once memProcessed events are done, and reports its
// peak RSS.
func (b *bench) memory(bin string, backlog int) memoryResult {
	t := b.t
	name := fmt.Sprintf("mem%dk", backlog/1000)
	topic, sub := b.setup(name)
	col := emulatortest.Name(t, "bench-"+name)
	sd := startdelivertest.NewServer()
	defer sd.Close()
	store := accountstore.New(b.fs, accountstore.Options{Collection: col})
	keys := b.accounts(sd, store, name, memAccounts, memUsers)
	res := memoryResult{backlog: backlog}
	res.publishRate = b.publish(topic, keys, backlog, memUsers)
	sd.SetLatency(benchLatency)
	sd.ResetCounters()
	t.Cleanup(func() {
		// deliver creates an inspection subscription on its dead-letter topic.
		_ = b.ps.SubscriptionAdminClient.DeleteSubscription(context.Background(), &pubsubpb.DeleteSubscriptionRequest{
			Subscription: gcpclient.SubscriptionName(b.env.Project, topic+"-dead-inspect")})
	})

	cmd := exec.Command(bin)
	dieWithTest(cmd)
	cmd.Env = append(os.Environ(),
		"GOOGLE_CLOUD_PROJECT="+b.env.Project,
		"PUBSUB_EMULATOR_HOST="+b.env.PubSubHost,
		"FIRESTORE_EMULATOR_HOST="+b.env.FirestoreHost,
		"HOST=127.0.0.1", "PORT=0",
		"PUBSUB_TOPIC="+topic, "PUBSUB_SUBSCRIPTION="+sub, "DEAD_LETTER_TOPIC="+topic+"-dead",
		"ACCOUNTS_COLLECTION="+col, "DELIVERIES_COLLECTION="+col+"-deliveries", "IDENTITIES_COLLECTION="+col+"-identities",
		"STARTDELIVER_API_URL="+sd.URL(),
		fmt.Sprintf("PULL_MAX_OUTSTANDING=%d", benchOutstanding), fmt.Sprintf("PULL_STREAMS=%d", benchStreams),
		fmt.Sprintf("ACCOUNT_CONCURRENCY=%d", benchPerAccount),
		"LOG_LEVEL=error", "OTEL_TRACES_EXPORTER=none", "OTEL_METRICS_EXPORTER=none", "OTEL_LOGS_EXPORTER=none",
	)
	var stderr strings.Builder
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatalf("start deliver: %v", err)
	}
	pid := cmd.Process.Pid
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()

	start := time.Now()
	var firstAt time.Time
	firstCount := 0
	deadline := start.Add(2 * time.Minute)
	for {
		n := sd.Calls("POST /usage")
		if firstAt.IsZero() && n > 0 {
			firstAt, firstCount = time.Now(), n
		}
		rss, _ := procStatus(pid)
		if res.rssQuarter == 0 && n >= memProcessed/4 {
			res.rssQuarter = float64(rss) / (1 << 20)
		}
		if n >= memProcessed {
			res.processed = n
			res.rssEnd = float64(rss) / (1 << 20)
			res.rate = float64(n-firstCount) / time.Since(firstAt).Seconds()
			break
		}
		if time.Now().After(deadline) {
			t.Errorf("%s: deliver processed %d of %d events in 2 minutes; its log:\n%s", name, n, memProcessed, stderr.String())
			res.processed = n
			break
		}
		select {
		case err := <-exited:
			t.Fatalf("%s: deliver exited: %v\n%s", name, err, stderr.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	_, res.peakRSS = procStatus(pid)
	res.cpuPerEvent = pidCPU(pid) / time.Duration(max(res.processed, 1))
	_ = cmd.Process.Signal(syscall.SIGTERM)
	select {
	case <-exited:
	case <-time.After(15 * time.Second):
		_ = cmd.Process.Kill()
		<-exited
	}
	return res
}

// procStatus reads a process's VmRSS and VmHWM (peak RSS), in bytes.
func procStatus(pid int) (rss, hwm int64) {
	f, err := os.Open(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		return 0, 0
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) < 2 {
			continue
		}
		kb, _ := strconv.ParseInt(fields[1], 10, 64)
		switch fields[0] {
		case "VmRSS:":
			rss = kb << 10
		case "VmHWM:":
			hwm = kb << 10
		}
	}
	return rss, hwm
}

// machineCPU returns the machine's busy and total CPU time so far, in
// clock ticks, from /proc/stat.
func machineCPU() (busy, total float64) {
	data, err := os.ReadFile("/proc/stat")
	if err != nil {
		return 0, 0
	}
	line, _, _ := strings.Cut(string(data), "\n")
	fields := strings.Fields(line)
	for i, f := range fields[1:] {
		v, _ := strconv.ParseFloat(f, 64)
		total += v
		if i != 3 && i != 4 { // idle, iowait
			busy += v
		}
	}
	return busy, total
}

// routes formats the stand-in's call counts, busiest first.
func routes(counts map[string]int) string {
	names := make([]string, 0, len(counts))
	for k := range counts {
		names = append(names, k)
	}
	sort.Slice(names, func(i, j int) bool { return counts[names[i]] > counts[names[j]] })
	parts := make([]string, len(names))
	for i, k := range names {
		parts[i] = fmt.Sprintf("`%s` %d", k, counts[k])
	}
	return strings.Join(parts, ", ")
}

func isNotFound(err error) bool { return status.Code(err) == codes.NotFound }

// processorFunc adapts a function to the intake's processor.
type processorFunc func(ctx context.Context, m delivery.Message) delivery.Result

func (f processorFunc) Process(ctx context.Context, m delivery.Message) delivery.Result {
	return f(ctx, m)
}

// emulatorCPU is the CPU time so far of the emulator (a java process)
// listening on hostport's port, or 0 when there is none to be found.
func emulatorCPU(hostport string) time.Duration {
	_, port, err := net.SplitHostPort(hostport)
	if err != nil {
		return 0
	}
	dirs, _ := filepath.Glob("/proc/[0-9]*")
	for _, d := range dirs {
		cmd, err := os.ReadFile(d + "/cmdline")
		if err != nil {
			continue
		}
		args := strings.Split(string(cmd), "\x00")
		if len(args) == 0 || filepath.Base(args[0]) != "java" || !slices.Contains(args, "--port="+port) {
			continue
		}
		pid, _ := strconv.Atoi(filepath.Base(d))
		return pidCPU(pid)
	}
	return 0
}

// ms formats a CPU time in milliseconds.
func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", d.Seconds()*1000) }

// pidCPU is a process's user and system CPU time so far, from /proc.
func pidCPU(pid int) time.Duration {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return 0
	}
	// utime and stime are the 14th and 15th fields of the line, the 12th
	// and 13th after the command's closing parenthesis.
	_, rest, _ := strings.Cut(string(stat), ") ")
	f := strings.Fields(rest)
	if len(f) < 13 {
		return 0
	}
	u, _ := strconv.ParseInt(f[11], 10, 64)
	st, _ := strconv.ParseInt(f[12], 10, 64)
	return time.Duration(u+st) * time.Second / 100 // USER_HZ
}

func orNone(s string) string {
	if s == "" {
		return "none"
	}
	return s
}

// timedCompletions times the dedupe store's check (its claim) and record.
type timedCompletions struct {
	*dedupe.Store
	dones, doneNanos, completes, completeNanos atomic.Int64
}

func (c *timedCompletions) Claim(ctx context.Context, r *dedupe.Record) (*dedupe.Claim, error) {
	began := time.Now()
	defer func() { c.dones.Add(1); c.doneNanos.Add(int64(time.Since(began))) }()
	return c.Store.Claim(ctx, r)
}

func (c *timedCompletions) Complete(ctx context.Context, r *dedupe.Record) error {
	began := time.Now()
	defer func() { c.completes.Add(1); c.completeNanos.Add(int64(time.Since(began))) }()
	return c.Store.Complete(ctx, r)
}

// perCall is documents ÷ calls.
func perCall(docs, calls int64) float64 { return float64(docs) / float64(max(calls, 1)) }

// mean is total ÷ n nanoseconds.
func mean(total, n int64) time.Duration { return time.Duration(total / max(n, 1)) }

// msWall formats a wall-clock duration in milliseconds.
func msWall(d time.Duration) string { return fmt.Sprintf("%.1f ms", d.Seconds()*1000) }
