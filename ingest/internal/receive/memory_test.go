package receive

import (
	"bufio"
	"bytes"
	"context"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"runtime"
	"runtime/debug"
	"strings"
	"sync"
	"testing"

	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// maximalBatch is a /v1/batch body at the limits: 2,500 events in about
// 500 KB with an outer context and integrations of MaxOuterBytes, which
// merging copies into every event.
func maximalBatch(tb testing.TB, n int) []byte {
	var ctx strings.Builder
	ctx.WriteString(`{"context":{`)
	for i := range segment.MaxOuterKeys - 1 {
		if i > 0 {
			ctx.WriteByte(',')
		}
		fmt.Fprintf(&ctx, `"k%03d":"%s"`, i, strings.Repeat("v", segment.MaxOuterBytes/segment.MaxOuterKeys-12))
	}
	ctx.WriteString(`},"integrations":{"All":true},"batch":[`)
	var b bytes.Buffer
	b.WriteString(ctx.String())
	for i := range segment.MaxBatchEvents {
		if i > 0 {
			b.WriteByte(',')
		}
		fmt.Fprintf(&b, `{"type":"track","userId":"user-%d-%d","event":"Signed Up","messageId":"m-%d-%d","properties":{"plan":"%s"}}`, n, i, n, i, strings.Repeat("p", 70))
	}
	b.WriteString(`]}`)
	if b.Len() > segment.MaxRequestBytes {
		tb.Fatalf("batch of %d bytes, over the limit", b.Len())
	}
	return b.Bytes()
}

// gatedPublisher holds every Publish until open is closed, and says when
// the first one arrives.
type gatedPublisher struct {
	open    chan struct{}
	arrived chan struct{}
	once    sync.Once
}

func (p *gatedPublisher) Publish(ctx context.Context, _ *envelope.Encoded) (string, error) {
	p.once.Do(func() { close(p.arrived) })
	select {
	case <-p.open:
		return "1", nil
	case <-ctx.Done():
		return "", ctx.Err()
	}
}

// TestInflightBoundAnswers503: while one maximal batch holds the budget,
// the next is refused with 503 and Retry-After (Segment retries it, nothing
// is lost) and publishes nothing; once the first is done the budget is back
// to zero and the retry is accepted.
func TestInflightBoundAnswers503(t *testing.T) {
	pub := &gatedPublisher{open: make(chan struct{}), arrived: make(chan struct{})}
	h := New(Options{Publisher: pub, Accounts: fakeAccounts{}, Topic: "t", MaxInflightBytes: MinInflightBytes})
	send := func(body []byte) *httptest.ResponseRecorder {
		r := httptest.NewRequest(http.MethodPost, "/v1/batch", bytes.NewReader(body))
		r.Header.Set("Content-Type", "application/json")
		r.Header.Set("Authorization", basic(goodKey))
		w := httptest.NewRecorder()
		h.ServeHTTP(w, r)
		return w
	}
	first := make(chan *httptest.ResponseRecorder)
	go func() { first <- send(maximalBatch(t, 0)) }()
	select {
	case <-pub.arrived: // the first batch holds its budget, waiting for Pub/Sub
	case w := <-first:
		t.Fatalf("first batch = %d %s before publishing", w.Code, clipBody(w.Body.Bytes()))
	}
	held := h.inflight.Load()
	if held < 20<<20 {
		t.Fatalf("a maximal batch holds %d bytes of budget, want its ~33 MB", held)
	}
	w := send(maximalBatch(t, 1))
	if w.Code != http.StatusServiceUnavailable || w.Header().Get("Retry-After") == "" || !strings.Contains(w.Body.String(), "retry") {
		t.Fatalf("second batch = %d (Retry-After %q) %s, want 503 with Retry-After", w.Code, w.Header().Get("Retry-After"), w.Body)
	}
	if h.inflight.Load() != held {
		t.Errorf("refused batch left %d bytes held, want the first's %d", h.inflight.Load(), held)
	}
	close(pub.open)
	if w := <-first; w.Code != 200 {
		t.Fatalf("first batch = %d %s", w.Code, clipBody(w.Body.Bytes()))
	}
	if n := h.inflight.Load(); n != 0 {
		t.Errorf("after the requests, %d bytes still held, want 0", n)
	}
	if w := send(maximalBatch(t, 1)); w.Code != 200 {
		t.Errorf("retried batch = %d %s, want 200", w.Code, clipBody(w.Body.Bytes()))
	}
	if p := h.work.peak.Load(); p > MinInflightBytes {
		t.Errorf("in-flight peak %d, over the limit %d", p, MinInflightBytes)
	}
}

// TestMemoryBoundedUnderMaximalBatches sends maximal batches concurrently
// over real HTTP, each client retrying its 503s until its batch is
// accepted, and checks that the process's peak resident memory (VmHWM,
// reset before the run) grows by a bounded amount, where without the
// in-flight bound every batch would be held at once (each about 35 MB of
// decoded events and messages).
func TestMemoryBoundedUnderMaximalBatches(t *testing.T) {
	if testing.Short() {
		t.Skip("sends 80 MB of batches")
	}
	if raceEnabled {
		t.Skip("the race detector's shadow memory is not ingest's")
	}
	if _, err := os.Stat("/proc/self/clear_refs"); err != nil {
		t.Skip("needs Linux /proc to read peak RSS")
	}
	const clients, rounds = 8, 2
	limit := int64(MinInflightBytes)
	h := New(Options{Publisher: noopPublisher{}, Accounts: fakeAccounts{}, Topic: "t", MaxInflightBytes: limit})
	srv := httptest.NewServer(h)
	defer srv.Close()
	bodies := make([][]byte, clients)
	for i := range bodies {
		bodies[i] = maximalBatch(t, i)
	}
	runtime.GC()
	debug.FreeOSMemory()
	base := procStatus(t, "VmRSS")
	if err := os.WriteFile("/proc/self/clear_refs", []byte("5"), 0); err != nil {
		t.Skipf("cannot reset the peak RSS: %v", err)
	}
	// gen counts answered requests: a refused client retries once another
	// request has been answered since it sent its own (the one holding the
	// budget that refused it will be), never on a timer.
	var mu sync.Mutex
	cond := sync.NewCond(&mu)
	gen := 0
	var refused, accepted int
	var wg sync.WaitGroup
	for i := range clients {
		wg.Go(func() {
			for range rounds {
				for {
					mu.Lock()
					start := gen
					mu.Unlock()
					req, _ := http.NewRequest(http.MethodPost, srv.URL+"/v1/batch", bytes.NewReader(bodies[i]))
					req.Header.Set("Content-Type", "application/json")
					req.SetBasicAuth(goodKey, "")
					resp, err := srv.Client().Do(req)
					if err != nil {
						t.Error(err)
						return
					}
					_, _ = io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					mu.Lock()
					gen++
					cond.Broadcast()
					if resp.StatusCode == 200 {
						accepted++
						mu.Unlock()
						break
					}
					refused++
					if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
						mu.Unlock()
						t.Errorf("status %d, want 200 or 503 with Retry-After", resp.StatusCode)
						return
					}
					for gen <= start+1 {
						cond.Wait()
					}
					mu.Unlock()
				}
			}
		})
	}
	wg.Wait()
	peak := procStatus(t, "VmHWM")
	growth := peak - base
	t.Logf("%d maximal batches (%d refused with 503 first): RSS %d MB before, peak %d MB (+%d MB); in-flight limit %d MB, peak held %d MB",
		accepted, refused, base>>20, peak>>20, growth>>20, limit>>20, h.work.peak.Load()>>20)
	if accepted != clients*rounds {
		t.Errorf("%d batches accepted, want %d", accepted, clients*rounds)
	}
	if h.work.peak.Load() > limit {
		t.Errorf("in-flight peak %d, over the limit %d", h.work.peak.Load(), limit)
	}
	// The budget counts what a request holds, not the garbage it leaves
	// for the collector, so the heap may reach about twice the budget
	// (GOGC=100) plus the runtime's and the server's buffers. (Measured:
	// +50 MB for a 32 MB limit; 8 batches held at once would be ~270 MB.)
	if bound := 2*limit + 32<<20; growth > bound {
		t.Errorf("peak RSS grew by %d MB, want at most %d MB", growth>>20, bound>>20)
	}
}

// procStatus reads a size in bytes from /proc/self/status.
func procStatus(t *testing.T, field string) int64 {
	t.Helper()
	f, err := os.Open("/proc/self/status")
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), field+":"); ok {
			var kb int64
			fmt.Sscan(strings.TrimSpace(strings.TrimSuffix(strings.TrimSpace(v), "kB")), &kb)
			return kb << 10
		}
	}
	t.Fatalf("no %s in /proc/self/status", field)
	return 0
}
