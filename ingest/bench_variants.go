//go:build bench

// This file is built only into the benchmark binary (go build -tags bench),
// never into the service: scripts/bench.sh uses it to profile ingest under
// load and to compare publishers in the same run.
//
//   - BENCH_PPROF_ADDR: serve net/http/pprof there (127.0.0.1 only), and
//     /debug/publish: the publisher's Publish calls and messages so far.
//   - BENCH_PUBLISHER=client: publish with the client library's
//     pubsub.Publisher (default settings; ordering keys as PUBSUB_ORDERING
//     says) instead of ingest/internal/publish.
//   - BENCH_SERVER_SPAN=otelhttp: wrap the handler in otelhttp.NewHandler
//     (the same span name and probe filter) instead of telemetry.Server.

package main

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	_ "net/http/pprof" // registers on http.DefaultServeMux, served only below
	"os"

	"cloud.google.com/go/pubsub/v2"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/startdeliver/segment-destination/ingest/internal/publish"

	"github.com/startdeliver/segment-destination/shared/envelope"
)

func init() {
	if addr := os.Getenv("BENCH_PPROF_ADDR"); addr != "" {
		if host, _, err := net.SplitHostPort(addr); err != nil || host != "127.0.0.1" {
			panic("BENCH_PPROF_ADDR must be 127.0.0.1:<port>")
		}
		http.HandleFunc("/debug/publish", func(w http.ResponseWriter, _ *http.Request) {
			if st, ok := benchPublisher.(interface{ Stats() publish.Stats }); ok {
				s := st.Stats()
				fmt.Fprintf(w, "calls=%d messages=%d\n", s.Calls, s.Messages)
			}
		})
		go func() { _ = http.ListenAndServe(addr, nil) }()
	}
	def := newPublisher
	newPublisher = func(ps *pubsub.Client, cfg *config) eventPublisher {
		benchPublisher = def(ps, cfg)
		return benchPublisher
	}
	if os.Getenv("BENCH_SERVER_SPAN") == "otelhttp" {
		instrument = func(h http.Handler) http.Handler {
			return otelhttp.NewHandler(h, "ingest",
				otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string { return spanName(r) }),
				otelhttp.WithFilter(func(r *http.Request) bool { return !isProbe(r) }))
		}
	}
	if os.Getenv("BENCH_PUBLISHER") == "client" {
		newPublisher = func(ps *pubsub.Client, cfg *config) eventPublisher {
			p := ps.Publisher(cfg.Topic)
			p.EnableMessageOrdering = cfg.Ordering
			return &clientPublisher{p: p, cfg: cfg}
		}
	}
}

// benchPublisher is the publisher ingest runs with, for /debug/publish.
var benchPublisher eventPublisher

// clientPublisher publishes through the client library's publisher and
// waits for each result, up to the publish timeout.
type clientPublisher struct {
	p   *pubsub.Publisher
	cfg *config
}

func (c *clientPublisher) Publish(ctx context.Context, msg *envelope.Encoded) (string, error) {
	m := &pubsub.Message{Data: msg.Data, Attributes: msg.Attributes}
	if c.cfg.Ordering {
		m.OrderingKey = msg.OrderingKey
	}
	ctx, cancel := context.WithTimeout(ctx, c.cfg.PublishTimeout)
	defer cancel()
	id, err := c.p.Publish(ctx, m).Get(ctx)
	if err != nil {
		if m.OrderingKey != "" && !errors.Is(err, context.DeadlineExceeded) {
			c.p.ResumePublish(m.OrderingKey)
		}
		return "", fmt.Errorf("publish: %w", err)
	}
	return id, nil
}

func (c *clientPublisher) Stop() { c.p.Stop() }
