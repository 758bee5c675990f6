package server

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"
)

// events records what happened, in order, across goroutines.
type events struct {
	mu  sync.Mutex
	got []string
}

func (e *events) add(s string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.got = append(e.got, s)
}

func (e *events) list() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return strings.Join(e.got, ",")
}

// TestShutdownOrder: on SIGTERM (ctx ends) Work ends first while the server
// still serves, a request in flight finishes with a live context, and Stop
// runs last.
func TestShutdownOrder(t *testing.T) {
	ctx, sigterm := context.WithCancel(context.Background())
	var ev events
	entered, release := make(chan struct{}), make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/slow" {
			close(entered)
			<-release
			if err := r.Context().Err(); err != nil {
				t.Errorf("request context ended during shutdown: %v", err)
			}
			ev.add("request done")
		}
		_, _ = io.WriteString(w, "ok")
	})
	addrc := make(chan string, 1)
	workServed := make(chan error, 1)
	runErr := make(chan error, 1)
	go func() {
		runErr <- Run(ctx, "127.0.0.1:0", h, Options{
			OnListen: func(addr string) { addrc <- addr },
			Work: []func(context.Context) error{func(wctx context.Context) error {
				<-wctx.Done()
				// The server still serves while work winds down.
				resp, err := http.Get("http://" + <-addrc + "/")
				if err == nil {
					resp.Body.Close()
				}
				workServed <- err
				ev.add("work done")
				return nil
			}},
			Stop: func(context.Context) { ev.add("stop") },
		})
	}()
	addr := <-addrc
	addrc <- addr // for the work function
	slow := make(chan error, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/slow")
		if err == nil {
			_, err = io.ReadAll(resp.Body)
			resp.Body.Close()
		}
		slow <- err
	}()
	<-entered
	sigterm()
	if err := <-workServed; err != nil {
		t.Errorf("request while work winds down: %v, want served", err)
	}
	close(release)
	if err := <-slow; err != nil {
		t.Errorf("request in flight at SIGTERM: %v, want it finished", err)
	}
	if err := <-runErr; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if got, want := ev.list(), "work done,request done,stop"; got != want {
		t.Errorf("order = %s, want %s", got, want)
	}
	if _, err := net.Dial("tcp", addr); err == nil {
		t.Errorf("server still accepts after Run returned")
	}
}

func TestWorkErrorEndsRun(t *testing.T) {
	boom := errors.New("pull stopped")
	stopped := false
	err := Run(context.Background(), "127.0.0.1:0", http.NotFoundHandler(), Options{
		Work: []func(context.Context) error{func(context.Context) error { return boom }},
		Stop: func(context.Context) { stopped = true },
	})
	if !errors.Is(err, boom) {
		t.Errorf("Run = %v, want %v", err, boom)
	}
	if !stopped {
		t.Errorf("Stop not called")
	}
}

func TestListenErrorStops(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	stopped := false
	err = Run(context.Background(), ln.Addr().String(), http.NotFoundHandler(), Options{Stop: func(context.Context) { stopped = true }})
	if err == nil || !strings.Contains(err.Error(), "listen") {
		t.Errorf("Run on a taken port = %v, want a listen error", err)
	}
	if !stopped {
		t.Errorf("Stop not called after a listen error")
	}
}

// TestGraceBoundsWork: work that ignores its context does not hold the
// shutdown past Grace; OnLate says so and Stop still runs.
func TestGraceBoundsWork(t *testing.T) {
	ctx, sigterm := context.WithCancel(context.Background())
	hang := make(chan struct{})
	defer close(hang)
	late, stopped := false, false
	sigterm()
	err := Run(ctx, "127.0.0.1:0", http.NotFoundHandler(), Options{
		Grace:  10 * time.Millisecond,
		Work:   []func(context.Context) error{func(context.Context) error { <-hang; return nil }},
		OnLate: func() { late = true },
		Stop:   func(context.Context) { stopped = true },
	})
	if err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
	if !late || !stopped {
		t.Errorf("OnLate called %t, Stop called %t; want both", late, stopped)
	}
}

// TestShutdownEndsRequests: with the option, a request in flight sees its
// context end when shutdown begins, and still gets its answer.
func TestShutdownEndsRequests(t *testing.T) {
	ctx, sigterm := context.WithCancel(context.Background())
	entered := make(chan struct{})
	h := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(entered)
		<-r.Context().Done()
		w.WriteHeader(http.StatusServiceUnavailable)
	})
	addrc := make(chan string, 1)
	runErr := make(chan error, 1)
	go func() {
		runErr <- Run(ctx, "127.0.0.1:0", h, Options{ShutdownEndsRequests: true, OnListen: func(a string) { addrc <- a }})
	}()
	addr := <-addrc
	got := make(chan int, 1)
	go func() {
		resp, err := http.Get("http://" + addr + "/")
		if err != nil {
			t.Errorf("request: %v", err)
			got <- 0
			return
		}
		resp.Body.Close()
		got <- resp.StatusCode
	}()
	<-entered
	sigterm()
	if code := <-got; code != http.StatusServiceUnavailable {
		t.Errorf("answer = %d, want 503 from a handler whose context ended", code)
	}
	if err := <-runErr; err != nil {
		t.Errorf("Run = %v, want nil", err)
	}
}
