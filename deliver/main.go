// Command deliver takes each Segment event from Pub/Sub, loads its
// account's configuration from Firestore, plans it with the matching and
// mapping engine, carries the plan out through Startdeliver's API, and acks
// only what is done. It pulls from its subscription (DELIVER_MODE=pull), or
// serves Pub/Sub push requests and Eventarc CloudEvents (DELIVER_MODE=push,
// as on Cloud Run).
package main

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"github.com/GoogleCloudPlatform/functions-framework-go/functions"
	"github.com/cloudevents/sdk-go/v2/event"
	"github.com/tink-crypto/tink-go-gcpkms/v2/integration/gcpkms"
	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/startdeliver/segment-destination/deliver/internal/dedupe"
	"github.com/startdeliver/segment-destination/deliver/internal/delivery"
	"github.com/startdeliver/segment-destination/deliver/internal/identity"
	"github.com/startdeliver/segment-destination/deliver/internal/intake"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/gcpclient"
	"github.com/startdeliver/segment-destination/shared/keyseal"
	"github.com/startdeliver/segment-destination/shared/telemetry"
)

// shutdownGrace is how long a SIGTERM leaves to finish or nack in-flight
// messages and flush telemetry: Cloud Run kills the instance 10 s after
// SIGTERM.
const shutdownGrace = 8 * time.Second

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, os.Getenv, nil); err != nil {
		slog.Error("deliver failed", "error", err)
		os.Exit(1)
	}
}

// function is the service behind the CloudEvent function registered with
// functions-framework-go, built on its first event from the environment.
var function struct {
	once sync.Once
	fn   func(context.Context, event.Event) error
	err  error
}

func init() {
	functions.CloudEvent("Deliver", func(ctx context.Context, e event.Event) error {
		function.once.Do(func() {
			var s *service
			s, function.err = newService(context.Background(), os.Getenv)
			if s != nil {
				function.fn = intake.CloudEventFunc(s.processor, s.cfg.turnWait())
			}
		})
		if function.err != nil {
			return fmt.Errorf("deliver unavailable: %w", function.err)
		}
		return function.fn(ctx, e)
	})
}

// service is deliver with its clients.
type service struct {
	cfg       *config
	log       *slog.Logger
	ps        *pubsub.Client
	fs        *firestore.Client
	accounts  *accountstore.Store
	processor *delivery.Processor
	dead      *intake.DeadLetterPublisher
	// flushTelemetry is telemetry.Setup's shutdown.
	flushTelemetry func(context.Context) error
}

func newService(ctx context.Context, getenv func(string) string) (_ *service, err error) {
	cfg, err := loadConfig(getenv)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	flush, err := telemetry.Setup(ctx, telemetry.Config{ServiceName: "deliver", ServiceVersion: version})
	if err != nil {
		return nil, fmt.Errorf("telemetry: %w", err)
	}
	s := &service{cfg: cfg, flushTelemetry: flush, log: telemetry.NewLogger(os.Stderr, cfg.LogLevel, cfg.Project)}
	defer func() {
		if err != nil {
			s.close(context.Background())
		}
	}()
	if s.ps, err = gcpclient.PubSub(ctx, cfg.Project, getenv, &pubsub.ClientConfig{}); err != nil {
		return nil, err
	}
	if cfg.Emulator {
		if err := ensurePubSub(ctx, s.ps, cfg); err != nil {
			return nil, err
		}
	}
	if s.fs, err = gcpclient.Firestore(ctx, cfg.Project, cfg.FirestoreDatabase, getenv); err != nil {
		return nil, err
	}
	s.accounts = accountstore.New(s.fs, accountstore.Options{Collection: cfg.AccountsCollection, TTL: cfg.ConfigCacheTTL})
	s.dead = intake.NewDeadLetterPublisher(s.ps, cfg.DeadLetterTopic)
	opener, err := openKeyset(ctx, cfg, s.fs, nil)
	if err != nil {
		return nil, err
	}
	client := startdeliver.New(startdeliver.Options{DefaultBaseURL: cfg.StartdeliverURL, Logger: s.log, CheckBaseURL: cfg.APIURLs.Check,
		Retry: startdeliver.Retry{Budget: cfg.Budget}, RateLimit: startdeliver.RateLimit{Max: cfg.MaxRate}})
	s.processor = delivery.New(delivery.Options{
		Accounts:      s.accounts,
		Completions:   dedupe.New(s.fs, dedupe.Options{Collection: cfg.DeliveriesCollection}),
		Claims:        identity.New(s.fs, identity.Options{Collection: cfg.IdentitiesCollection}),
		Client:        client,
		DeadLetters:   s.dead,
		Keys:          opener,
		PerAccount:    cfg.PerAccount,
		Budget:        cfg.Budget,
		FinishTimeout: finishTimeout,
		Logger:        s.log,
	})
	return s, nil
}

// openKeyset returns the opener of sealed API keys: API_KEY_KEYSET
// decrypted with the Cloud KMS key API_KEY_KEYSET_KEK (one KMS call, here;
// none per message), or on the emulators a clear-text API_KEY_KEYSET or the
// development keyset kept in the Firestore emulator (created there if
// absent). kms, when not nil, replaces Cloud KMS (tests: Tink's fake KMS).
func openKeyset(ctx context.Context, cfg *config, fs *firestore.Client, kms registry.KMSClient) (*keyseal.Opener, error) {
	var (
		h   *keyset.Handle
		err error
	)
	switch {
	case cfg.Keyset == "":
		// loadConfig allows this only on the Firestore emulator.
		h, err = keyseal.DevelopmentPrivate(ctx, fs, keyseal.DevelopmentCollection)
	case cfg.KeysetKEK == "":
		// loadConfig allows this only on the Firestore emulator.
		h, err = keyseal.ReadClearPrivate([]byte(cfg.Keyset))
	default:
		if kms == nil {
			if kms, err = gcpkms.NewClientWithOptions(ctx, "gcp-kms://"); err != nil {
				return nil, fmt.Errorf("API key keyset: Cloud KMS client: %w", err)
			}
		}
		var kek tink.AEAD
		if kek, err = kms.GetAEAD(cfg.KeysetKEK); err != nil {
			return nil, fmt.Errorf("API key keyset: KMS key: %w", err)
		}
		h, err = keyseal.ReadPrivate([]byte(cfg.Keyset), kek)
	}
	if err != nil {
		return nil, fmt.Errorf("API key keyset: %w", err)
	}
	return keyseal.NewOpener(h)
}

// close stops the dead-letter publisher and the clients, then flushes
// telemetry.
func (s *service) close(ctx context.Context) {
	if s.dead != nil {
		s.dead.Stop()
	}
	if s.ps != nil {
		_ = s.ps.Close()
	}
	if s.fs != nil {
		_ = s.fs.Close()
	}
	if s.flushTelemetry != nil {
		if err := s.flushTelemetry(ctx); err != nil {
			s.log.Warn("flush telemetry", "error", err)
		}
	}
}

// handler serves health, readiness, push and CloudEvents.
func (s *service) handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		w.Header().Set("Content-Type", "application/json")
		_, _ = w.Write([]byte(`{"status":"ok"}` + "\n"))
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	auth := intake.PushOptions{Audience: s.cfg.PushAudience, ServiceAccount: s.cfg.PushServiceAccount, TurnWait: s.cfg.turnWait(), Logger: s.log}
	var cloudEvents http.Handler = intake.CloudEventHandler(intake.CloudEventFunc(s.processor, s.cfg.turnWait()))
	switch {
	case auth.Audience != "":
		// Pub/Sub push and Eventarc are authenticated alike.
		mux.Handle("POST /pubsub/push", intake.PushHandler(s.processor, auth))
		mux.Handle("POST /{$}", intake.RequireToken(auth, cloudEvents))
	case s.cfg.Emulator:
		// The emulators send no tokens.
		mux.Handle("POST /pubsub/push", intake.PushHandler(s.processor, auth))
		mux.Handle("POST /{$}", cloudEvents)
	default:
		// Pull mode outside the emulators without PUSH_AUDIENCE (push
		// mode refuses to start so): no unauthenticated way in.
		s.log.Info("push and CloudEvent endpoints off: no PUSH_AUDIENCE")
	}
	return mux
}

// readyz answers 200 when Pub/Sub and Firestore answer.
func (s *service) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 3*time.Second)
	defer cancel()
	w.Header().Set("Content-Type", "application/json")
	_, perr := s.ps.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: subscriptionName(s.cfg.Project, s.cfg.Subscription)})
	if s.cfg.Mode == "push" && status.Code(perr) == codes.NotFound {
		perr = nil // a push service may run without reading its subscription
	}
	_, ferr := s.fs.Collection(s.cfg.AccountsCollection).Doc("readiness-probe").Get(ctx)
	if status.Code(ferr) == codes.NotFound {
		ferr = nil
	}
	if err := errors.Join(perr, ferr); err != nil {
		s.log.WarnContext(ctx, "not ready", "error", err)
		w.WriteHeader(http.StatusServiceUnavailable)
		_, _ = w.Write([]byte(`{"message":"not ready: cannot reach Pub/Sub or Firestore"}` + "\n"))
		return
	}
	_, _ = w.Write([]byte(`{"status":"ready"}` + "\n"))
}

// run serves until ctx ends, then shuts down within shutdownGrace. ready,
// when not nil, receives the HTTP address once serving.
func run(ctx context.Context, getenv func(string) string, ready chan<- string) error {
	s, err := newService(ctx, getenv)
	if err != nil {
		return err
	}
	ln, err := net.Listen("tcp", net.JoinHostPort(s.cfg.Host, s.cfg.Port))
	if err != nil {
		s.close(context.Background())
		return fmt.Errorf("listen: %w", err)
	}
	// Work stops when ctx ends; intake stops on its own context so that
	// shutdown can order it. Requests see it too: a push request still
	// waiting for its turn at shutdown is answered 503 at once, while one
	// that started finishes (the processor detaches it).
	workCtx, stopWork := context.WithCancel(context.WithoutCancel(ctx))
	defer stopWork()
	srv := &http.Server{
		Handler:           s.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       120 * time.Second,
		BaseContext:       func(net.Listener) context.Context { return workCtx },
	}
	errc := make(chan error, 3)
	go func() {
		if err := srv.Serve(ln); !errors.Is(err, http.ErrServerClosed) {
			errc <- fmt.Errorf("serve: %w", err)
		}
	}()
	var workers sync.WaitGroup
	if s.cfg.ConfigListener {
		workers.Go(func() {
			if err := s.accounts.Listen(workCtx); err != nil && workCtx.Err() == nil {
				s.log.Warn("account listener stopped; the cache TTL still bounds staleness", "error", err)
			}
		})
	}
	if s.cfg.Mode == "pull" {
		workers.Go(func() {
			err := intake.Pull(workCtx, s.ps.Subscriber(s.cfg.Subscription), s.processor, intake.PullSettings{
				Streams: s.cfg.Streams, MaxOutstandingMessages: s.cfg.MaxOutstanding,
				MaxDurationPerAckExtension: s.cfg.AckExtension, Logger: s.log,
			})
			if err != nil {
				errc <- err
			}
		})
	}
	s.log.Info("deliver running", "addr", ln.Addr().String(), "mode", s.cfg.Mode, "subscription", s.cfg.Subscription)
	if ready != nil {
		ready <- ln.Addr().String()
	}
	var runErr error
	select {
	case runErr = <-errc:
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	sctx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	// Stop receiving first: in-flight messages finish (or are nacked when
	// cut short); push requests in flight finish before Shutdown returns.
	stopWork()
	done := make(chan struct{})
	go func() { workers.Wait(); close(done) }()
	select {
	case <-done:
	case <-sctx.Done():
		s.log.Warn("in-flight messages did not finish in time; Pub/Sub redelivers them")
	}
	if err := srv.Shutdown(sctx); err != nil && runErr == nil {
		runErr = fmt.Errorf("shutdown: %w", err)
	}
	s.close(sctx)
	return runErr
}

func topicName(project, topic string) string { return "projects/" + project + "/topics/" + topic }
func subscriptionName(project, sub string) string {
	return "projects/" + project + "/subscriptions/" + sub
}

// ensurePubSub creates the topics and the subscription on an emulator where
// they do not exist yet; in Google Cloud, Terraform owns them.
func ensurePubSub(ctx context.Context, ps *pubsub.Client, cfg *config) error {
	for _, t := range []string{cfg.Topic, cfg.DeadLetterTopic} {
		if _, err := ps.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: topicName(cfg.Project, t)}); err != nil && status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	sub := &pubsubpb.Subscription{
		Name:                  subscriptionName(cfg.Project, cfg.Subscription),
		Topic:                 topicName(cfg.Project, cfg.Topic),
		AckDeadlineSeconds:    60,
		EnableMessageOrdering: true,
		RetryPolicy:           &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(time.Second), MaximumBackoff: durationpb.New(10 * time.Second)},
		DeadLetterPolicy:      &pubsubpb.DeadLetterPolicy{DeadLetterTopic: topicName(cfg.Project, cfg.DeadLetterTopic), MaxDeliveryAttempts: 10},
	}
	if _, err := ps.SubscriptionAdminClient.CreateSubscription(ctx, sub); err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("create subscription %s: %w", cfg.Subscription, err)
	}
	inspect := &pubsubpb.Subscription{
		Name:  subscriptionName(cfg.Project, cfg.DeadLetterTopic+"-inspect"),
		Topic: topicName(cfg.Project, cfg.DeadLetterTopic),
	}
	if _, err := ps.SubscriptionAdminClient.CreateSubscription(ctx, inspect); err != nil && status.Code(err) != codes.AlreadyExists {
		return fmt.Errorf("create subscription %s: %w", inspect.Name, err)
	}
	return nil
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"
