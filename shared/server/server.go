// Package server is how both services serve HTTP and stop on SIGTERM: one
// http.Server with timeouts, work that runs beside it (deliver's pull
// intake), and one shutdown sequence that fits in Cloud Run's 10 seconds —
// stop intake, drain what is in flight, then flush (the publisher, the
// clients, telemetry last). It is modelled on exposure-notifications-server's
// pkg/server, which does the same for sixteen commands.
package server

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"sync"
	"time"
)

// DefaultGrace is how long a shutdown may take: Cloud Run kills the
// instance 10 s after SIGTERM.
const DefaultGrace = 8 * time.Second

// Options configure Run.
type Options struct {
	// Grace bounds the whole shutdown (default DefaultGrace).
	Grace time.Duration
	// ReadTimeout bounds reading one request, body included; 0 leaves only
	// the 10 s bound on reading its header.
	ReadTimeout time.Duration
	// MaxHeaderBytes bounds a request's header (0: net/http's 1 MB); past
	// it net/http answers 431.
	MaxHeaderBytes int
	// Work runs beside the server, each function in its own goroutine,
	// until its context ends; an error it returns while Run is serving ends
	// Run as a serve error would. On shutdown its context ends first and Run
	// waits for it, within Grace, before the server stops.
	Work []func(ctx context.Context) error
	// ShutdownEndsRequests makes requests' contexts end when shutdown
	// begins, with Work's, for a handler that answers a request still
	// waiting at that moment at once rather than hold the shutdown; a
	// request that must finish detaches itself. By default requests'
	// contexts outlive ctx, so that a SIGTERM does not cut the requests it
	// waits for.
	ShutdownEndsRequests bool
	// OnListen, when set, is called with the listening address once the
	// server accepts connections.
	OnListen func(addr string)
	// OnLate, when set, is called when Work has not returned within Grace.
	OnLate func()
	// Stop runs last, after the server has stopped and the requests in
	// flight have finished (or Grace ran out), with what is left of Grace.
	Stop func(ctx context.Context)
}

// Run listens on addr and serves h until ctx ends or serving fails. Then,
// within Grace: it ends Work and waits for it, stops the server (no new
// connections; requests in flight finish), and calls Stop. Stop is called
// on every return, also when listening fails.
func Run(ctx context.Context, addr string, h http.Handler, opts Options) (err error) {
	if opts.Grace <= 0 {
		opts.Grace = DefaultGrace
	}
	stop := func(ctx context.Context) {
		if opts.Stop != nil {
			opts.Stop(ctx)
		}
	}
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		stop(context.Background())
		return fmt.Errorf("listen: %w", err)
	}
	workCtx, endWork := context.WithCancel(context.WithoutCancel(ctx))
	defer endWork()
	reqCtx := context.WithoutCancel(ctx)
	if opts.ShutdownEndsRequests {
		reqCtx = workCtx
	}
	srv := &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 10 * time.Second,
		ReadTimeout:       opts.ReadTimeout,
		MaxHeaderBytes:    opts.MaxHeaderBytes,
		IdleTimeout:       120 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return reqCtx },
	}
	errc := make(chan error, 1+len(opts.Work))
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve: %w", err)
		}
	}()
	var work sync.WaitGroup
	for _, w := range opts.Work {
		work.Go(func() {
			if err := w(workCtx); err != nil && workCtx.Err() == nil {
				errc <- err
			}
		})
	}
	if opts.OnListen != nil {
		opts.OnListen(ln.Addr().String())
	}

	var runErr error
	select {
	case runErr = <-errc:
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.Background(), opts.Grace)
	defer cancel()
	endWork()
	done := make(chan struct{})
	go func() { work.Wait(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		if opts.OnLate != nil {
			opts.OnLate()
		}
	}
	if err := srv.Shutdown(sctx); err != nil && runErr == nil {
		runErr = fmt.Errorf("shutdown: %w", err)
	}
	stop(sctx)
	return runErr
}
