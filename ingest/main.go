// Command ingest is the HTTPS endpoint Segment calls: it authenticates each
// event against the accounts in Firestore, validates it, publishes it to
// Pub/Sub, and answers 2xx only once the publish is confirmed.
package main

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"strings"
	"sync"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"

	"github.com/startdeliver/segment-destination/ingest/internal/explain"
	"github.com/startdeliver/segment-destination/ingest/internal/publish"
	"github.com/startdeliver/segment-destination/ingest/internal/receive"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/command"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/gcpclient"
	"github.com/startdeliver/segment-destination/shared/journey"
	"github.com/startdeliver/segment-destination/shared/keyseal"
	"github.com/startdeliver/segment-destination/shared/lookup"
	"github.com/startdeliver/segment-destination/shared/server"
	"github.com/startdeliver/segment-destination/shared/telemetry"
)

func main() {
	command.Main("ingest", "", func(ctx context.Context) error { return run(ctx, os.Getenv, nil) })
}

// function is the service behind the handler registered with
// functions-framework-go, so that the same code also deploys as a Cloud Run
// function. It is built on its first request from the environment.
var function = sync.OnceValues(func() (*service, error) { return newService(context.Background(), os.Getenv) })

func init() {
	functions.HTTP("Ingest", func(w http.ResponseWriter, r *http.Request) {
		svc, err := function()
		if err != nil {
			http.Error(w, `{"message":"service unavailable"}`, http.StatusServiceUnavailable)
			return
		}
		svc.handler.ServeHTTP(w, r)
	})
}

// service is ingest with its clients.
type service struct {
	cfg       *config
	log       *slog.Logger
	handler   http.Handler
	publisher eventPublisher
	closers   []func() error
	// flushTelemetry is telemetry.Setup's shutdown.
	flushTelemetry func(context.Context) error
}

func newService(ctx context.Context, getenv func(string) string) (_ *service, err error) {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	// ingest is the edge: its callers do not decide what is sampled.
	flush, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "ingest", ServiceVersion: version, Edge: true})
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	log := telemetry.NewLogger(os.Stderr, cfg.LogLevel, cfg.Project)
	s := &service{cfg: cfg, log: log, flushTelemetry: flush}
	defer func() {
		if err != nil {
			s.close(context.Background())
		}
	}()
	ps, err := gcpclient.PubSub(ctx, cfg.Project, getenv, &pubsub.ClientConfig{})
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, ps.Close)
	if cfg.Emulator {
		if err := gcpclient.ProvisionEmulator(ctx, ps, cfg.Project, []string{cfg.Topic}); err != nil {
			return nil, err
		}
	}
	fs, err := gcpclient.Firestore(ctx, cfg.Project, cfg.FirestoreDatabase, getenv)
	if err != nil {
		return nil, err
	}
	s.closers = append(s.closers, fs.Close)
	sealer, err := newSealer(ctx, cfg, fs)
	if err != nil {
		return nil, err
	}
	s.publisher = newPublisher(ps, cfg)
	// Anyone can send random keys: reads of ids not known to exist are
	// bounded per instance (a real new account's first events get 503 and
	// Segment's retry while the bucket is empty).
	store := accountstore.New(fs, accountstore.Options{Collection: cfg.AccountsCollection, TTL: cfg.ConfigCacheTTL,
		UnknownReadsPerSecond: unknownReadsPerSecond, UnknownReadBurst: 4 * unknownReadsPerSecond})
	// Explain's read-only finds: one client, a timeout, the same
	// instrumentation as every outbound call.
	lookups := lookup.New(&http.Client{Timeout: 10 * time.Second, Transport: otelhttp.NewTransport(http.DefaultTransport)}, cfg.StartdeliverAPIURL, cfg.APIURLs.Check)
	h := receive.New(receive.Options{
		Publisher: s.publisher,
		Accounts:  store,
		Sealer:    sealer,
		Ready:     &topicCheck{ps: ps, name: gcpclient.TopicName(cfg.Project, cfg.Topic)},
		Topic:     cfg.Topic,
		Logger:    log,
		Records:   journey.NewReader(fs, cfg.DeliveriesCollection),
		Configs:   store,
		Explainer: explain.New(lookups),
		TraceURL:  traceURL(cfg.TraceURL, cfg.Project),

		MaxInflightBytes: int64(cfg.MaxInflightBytes),
	})
	s.handler = instrument(h)
	return s, nil
}

// instrument wraps ingest's handler in its server span and metrics. A
// benchmark build (-tags bench) may replace it to compare with otelhttp's
// in one run.
var instrument = func(h http.Handler) http.Handler {
	return telemetry.Server(h, telemetry.ServerOptions{
		SpanName: spanName,
		Skip:     isProbe,
	})
}

// spanName names a request's server span: its method and route.
func spanName(r *http.Request) string { return r.Method + " " + routeOf(r) }

// isProbe reports a health probe: not an event, kept out of the traces.
func isProbe(r *http.Request) bool { return r.URL.Path == "/healthz" || r.URL.Path == "/readyz" }

// traceURL returns the function that links a trace id to its trace, or nil
// when there is no template (the console then shows the tracetree command).
func traceURL(template, project string) func(string) string {
	if template == "" {
		return nil
	}
	return func(traceID string) string {
		return strings.NewReplacer("{traceId}", url.QueryEscape(traceID), "{project}", url.QueryEscape(project)).Replace(template)
	}
}

// eventPublisher publishes one envelope and waits for its confirmation.
type eventPublisher interface {
	Publish(ctx context.Context, msg *envelope.Encoded) (string, error)
	Stop()
}

// newPublisher builds ingest's publisher. A benchmark build (-tags bench)
// may replace it to compare publishers in one run.
var newPublisher = func(ps *pubsub.Client, cfg *config) eventPublisher {
	return publish.New(ps, cfg.Project, cfg.Topic, publish.Options{
		DisableOrdering: !cfg.Ordering,
		DelayThreshold:  cfg.PublishDelay,
		Timeout:         cfg.PublishTimeout,
		MaxBytes:        cfg.PublishMaxBytes,
	})
}

// newSealer returns the sealer of API keys: deliver's public keyset from
// API_KEY_PUBLIC_KEYSET, or on the Firestore emulator the development
// keyset's public half (created there if absent). ingest never holds a
// private keyset.
func newSealer(ctx context.Context, cfg *config, fs *firestore.Client) (*keyseal.Sealer, error) {
	var (
		pub *keyset.Handle
		err error
	)
	if cfg.PublicKeyset != "" {
		pub, err = keyseal.ReadPublic([]byte(cfg.PublicKeyset))
	} else {
		// loadConfig allows no keyset only on the emulator.
		pub, err = keyseal.DevelopmentPublic(ctx, fs, keyseal.DevelopmentCollection)
	}
	if err != nil {
		return nil, fmt.Errorf("API key keyset: %w", err)
	}
	return keyseal.NewSealer(pub, keyseal.SealerOptions{})
}

// routeOf names a request's route for spans without ids or keys.
func routeOf(r *http.Request) string {
	switch p := r.URL.Path; {
	case p == "/" || p == "/healthz" || p == "/readyz":
		return p
	case strings.HasPrefix(p, "/v1/events/"):
		return "/v1/events/{messageId}"
	case strings.HasPrefix(p, "/console/"):
		return "/console/"
	case len(p) > 4 && p[:4] == "/v1/":
		return p
	}
	return "unknown"
}

// close stops the publisher (flushing what it holds), the clients, and
// telemetry last.
func (s *service) close(ctx context.Context) {
	if s.publisher != nil {
		s.publisher.Stop()
	}
	for i := len(s.closers) - 1; i >= 0; i-- {
		if err := s.closers[i](); err != nil {
			s.log.Warn("close client", "error", err)
		}
	}
	if s.flushTelemetry != nil {
		if err := s.flushTelemetry(ctx); err != nil {
			s.log.Warn("flush telemetry", "error", err)
		}
	}
}

// run serves until ctx ends, then shuts down within server.DefaultGrace:
// the server stops accepting and waits for requests in flight (each waits
// for its publish), then the publisher, the clients and telemetry are
// flushed. ready, when not nil, receives the listening address.
func run(ctx context.Context, getenv func(string) string, ready chan<- string) error {
	s, err := newService(ctx, getenv)
	if err != nil {
		return err
	}
	return server.Run(ctx, net.JoinHostPort(s.cfg.Host, s.cfg.Port), s.handler, server.Options{
		ReadTimeout:    30 * time.Second,
		MaxHeaderBytes: maxHeaderBytes,
		OnListen: func(addr string) {
			s.log.Info("ingest listening", "addr", addr, "topic", s.cfg.Topic)
			if ready != nil {
				ready <- addr
			}
		},
		Stop: func(ctx context.Context) {
			s.log.Info("shutting down")
			s.close(ctx)
		},
	})
}

// topicCheck answers /readyz: the topic can be read. A success is reused
// for a few seconds so that probes do not load Pub/Sub.
type topicCheck struct {
	ps   *pubsub.Client
	name string
	mu   sync.Mutex
	ok   time.Time
}

func (c *topicCheck) Ready(ctx context.Context) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if time.Since(c.ok) < 5*time.Second {
		return nil
	}
	if _, err := c.ps.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: c.name}); err != nil {
		return fmt.Errorf("get topic %s: %w", c.name, err)
	}
	c.ok = time.Now()
	return nil
}

// maxHeaderBytes bounds a request's headers: Segment sends a few hundred
// bytes, X-Segment-Settings at most 16 KB. Past it net/http answers 431.
const maxHeaderBytes = 64 << 10

// unknownReadsPerSecond bounds each instance's Firestore reads for API keys
// not known to be an account (accountstore.Options.UnknownReadsPerSecond).
const unknownReadsPerSecond = 50

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"
