package main

import (
	"net"
	"sync"
	"testing"
)

// proxy forwards TCP to target (the Pub/Sub emulator) and breaks the link
// on demand, as ingest would see Pub/Sub fail: down closes every connection
// and refuses new ones (an outage); stall swallows what either side sends,
// so Pub/Sub looks alive but never answers; cut closes every connection and
// forwards the next ones normally again.
type proxy struct {
	ln      net.Listener
	mu      sync.Mutex
	conns   []net.Conn
	refused bool
	stalled bool
}

func newProxy(t *testing.T, target string) *proxy {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	p := &proxy{ln: ln}
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			// Held across the dial, so that no connection opens after down.
			p.mu.Lock()
			var u net.Conn
			if !p.refused {
				u, err = net.Dial("tcp", target)
			}
			if p.refused || err != nil {
				p.mu.Unlock()
				c.Close()
				continue
			}
			p.conns = append(p.conns, c, u)
			p.mu.Unlock()
			go p.pipe(u, c)
			go p.pipe(c, u)
		}
	}()
	t.Cleanup(func() { ln.Close(); p.cut() })
	return p
}

// pipe copies src to dst, dropping what arrives while stalled.
func (p *proxy) pipe(dst, src net.Conn) {
	defer dst.Close()
	buf := make([]byte, 32<<10)
	for {
		n, err := src.Read(buf)
		p.mu.Lock()
		drop := p.stalled
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

func (p *proxy) down() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.refused = true
	p.closeAll()
}

func (p *proxy) stall() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.stalled = true
}

func (p *proxy) cut() {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.closeAll()
	p.stalled = false
}

// closeAll closes every connection; p.mu is held.
func (p *proxy) closeAll() {
	for _, c := range p.conns {
		c.Close()
	}
	p.conns = nil
}
