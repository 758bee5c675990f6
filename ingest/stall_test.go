package main

import (
	"fmt"
	"net"
	"net/http"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/emulatortest"
)

// stallProxy forwards TCP to the Pub/Sub emulator until stalled: it then
// swallows what either side sends, so Pub/Sub looks alive but never
// answers, and keeps what ingest sent meanwhile. cut closes every
// connection; later connections are forwarded again.
type stallProxy struct {
	ln      net.Listener
	mu      sync.Mutex
	conns   []net.Conn
	stalled bool
	// swallowed is what ingest sent while stalled, per connection.
	swallowed map[net.Conn][]byte
}

func newStallProxy(t *testing.T, target string) *stallProxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &stallProxy{ln: ln, swallowed: map[net.Conn][]byte{}}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			u, err := net.Dial("tcp", target)
			if err != nil {
				c.Close()
				continue
			}
			p.mu.Lock()
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go p.pipe(u, c, true)
			go p.pipe(c, u, false)
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

// pipe copies src to dst, dropping what arrives while stalled (and
// keeping it when it comes from ingest).
func (p *stallProxy) pipe(dst, src net.Conn, fromIngest bool) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		drop := p.stalled
		if drop && fromIngest {
			p.swallowed[src] = append(p.swallowed[src], buf[:n]...)
		}
		p.mu.Unlock()
		if n > 0 && !drop {
			if _, werr := dst.Write(buf[:n]); werr != nil {
				return
			}
		}
		if err != nil {
			return
		}
	}
}

func (p *stallProxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
}

// cut closes every connection and forwards new ones again.
func (p *stallProxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
	p.stalled = false
}

// TestNothingPublishedForA503: while Pub/Sub does not answer, single
// events and three batches of 2,000 (more than the publisher's 8 calls of
// at most 500 can hold, so some wait in its queue) are all answered 503. When Pub/Sub answers again and
// ingest shuts down (flushing its publisher), none of their events is on
// the topic: what was queued was withdrawn when its request gave up, and
// what was in the stuck Publish call never reached Pub/Sub. Only the
// events answered 200 before and after are published.
func TestNothingPublishedForA503(t *testing.T) {
	env := emulatortest.Require(t)
	px := newStallProxy(t, env.PubSubHost)
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
	px.mu.Lock()
	var sent []byte
	for _, b := range px.swallowed {
		sent = append(sent, b...)
	}
	px.mu.Unlock()
	inCall := map[string]bool{}
	for _, id := range regexp.MustCompile(`during-[0-9]+(-[0-9]+)?`).FindAll(sent, -1) {
		inCall[string(id)] = true
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
	var late []string
	for _, m := range msgs {
		id := m.Attributes["messageId"]
		got[id] = true
		if strings.HasPrefix(id, "during-") && !inCall[id] {
			late = append(late, id)
		}
	}
	if !got["before"] || !got["after"] {
		t.Errorf("the events answered 200 are not all published: before %t, after %t", got["before"], got["after"])
	}
	if len(late) > 0 {
		t.Errorf("%d events of requests answered 503 were published without having been in a Publish call before the answer: %.300v", len(late), late)
	}
	t.Logf("during the stall: %d events in Publish calls, of 6,020; %d messages published in all", len(inCall), len(msgs))
}
