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
	"sync"
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
	"github.com/startdeliver/segment-destination/shared/command"
	"github.com/startdeliver/segment-destination/shared/gcpclient"
	"github.com/startdeliver/segment-destination/shared/keyseal"
	"github.com/startdeliver/segment-destination/shared/server"
	"github.com/startdeliver/segment-destination/shared/telemetry"
)

func main() {
	command.Main("deliver", "", func(ctx context.Context) error { return run(ctx, os.Getenv, nil) })
}

// function is the service behind the CloudEvent function registered with
// functions-framework-go, built on its first event from the environment.
var function = sync.OnceValues(func() (func(context.Context, event.Event) error, error) {
	s, err := newService(context.Background(), os.Getenv)
	if err != nil {
		return nil, err
	}
	return intake.CloudEventFunc(s.processor, s.cfg.turnWait()), nil
})

func init() {
	functions.CloudEvent("Deliver", func(ctx context.Context, e event.Event) error {
		fn, err := function()
		if err != nil {
			return fmt.Errorf("deliver unavailable: %w", err)
		}
		return fn(ctx, e)
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
		if err := provisionEmulator(ctx, s.ps, cfg); err != nil {
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
		Accounts: s.accounts,
		// A claim outlives its event by far: the delivery's budget and its
		// outcome's writes bound it.
		Completions: dedupe.New(s.fs, dedupe.Options{Collection: cfg.DeliveriesCollection,
			Stale: max(2*(cfg.Budget+finishTimeout), 10*time.Second)}),
		Claims:        identity.New(s.fs, identity.Options{Collection: cfg.IdentitiesCollection}),
		Client:        client,
		DeadLetters:   s.dead,
		Keys:          opener,
		PerAccount:    cfg.PerAccount,
		Budget:        cfg.Budget,
		FinishTimeout: finishTimeout,
		// The journey kept in each event's record, for the event console.
		RecordPayloads: cfg.RecordPayloads,
		Logger:         s.log,
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
	_, perr := s.ps.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: gcpclient.SubscriptionName(s.cfg.Project, s.cfg.Subscription)})
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

// run serves until ctx ends, then shuts down within server.DefaultGrace:
// intake stops first (messages in flight finish, or are nacked when cut
// short), then the HTTP server (push requests in flight finish), then the
// dead-letter publisher, the clients and telemetry. ready, when not nil,
// receives the HTTP address once serving.
func run(ctx context.Context, getenv func(string) string, ready chan<- string) error {
	s, err := newService(ctx, getenv)
	if err != nil {
		return err
	}
	var work []func(context.Context) error
	if s.cfg.ConfigListener {
		work = append(work, func(ctx context.Context) error {
			if err := s.accounts.Listen(ctx); err != nil && ctx.Err() == nil {
				s.log.Warn("account listener stopped; the cache TTL still bounds staleness", "error", err)
			}
			return nil
		})
	}
	if s.cfg.Mode == "pull" {
		work = append(work, func(ctx context.Context) error {
			return intake.Pull(ctx, s.ps.Subscriber(s.cfg.Subscription), s.processor, intake.PullSettings{
				Streams: s.cfg.Streams, MaxOutstandingMessages: s.cfg.MaxOutstanding,
				MaxDurationPerAckExtension: s.cfg.AckExtension, Logger: s.log,
			})
		})
	}
	return server.Run(ctx, net.JoinHostPort(s.cfg.Host, s.cfg.Port), s.handler(), server.Options{
		Work: work,
		// A push request still waiting for its turn at shutdown is
		// answered 503 at once, while one that started finishes (the
		// processor detaches it).
		ShutdownEndsRequests: true,
		OnListen: func(addr string) {
			s.log.Info("deliver running", "addr", addr, "mode", s.cfg.Mode, "subscription", s.cfg.Subscription)
			if ready != nil {
				ready <- addr
			}
		},
		OnLate: func() { s.log.Warn("in-flight messages did not finish in time; Pub/Sub redelivers them") },
		Stop: func(ctx context.Context) {
			s.log.Info("shutting down")
			s.close(ctx)
		},
	})
}

// provisionEmulator creates the topics and the subscriptions on an emulator
// where they do not exist yet; in Google Cloud, Terraform owns them.
func provisionEmulator(ctx context.Context, ps *pubsub.Client, cfg *config) error {
	topic := func(t string) string { return gcpclient.TopicName(cfg.Project, t) }
	sub := func(s string) string { return gcpclient.SubscriptionName(cfg.Project, s) }
	return gcpclient.ProvisionEmulator(ctx, ps, cfg.Project, []string{cfg.Topic, cfg.DeadLetterTopic},
		&pubsubpb.Subscription{
			Name:                  sub(cfg.Subscription),
			Topic:                 topic(cfg.Topic),
			AckDeadlineSeconds:    60,
			EnableMessageOrdering: true,
			RetryPolicy:           &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(time.Second), MaximumBackoff: durationpb.New(10 * time.Second)},
			DeadLetterPolicy:      &pubsubpb.DeadLetterPolicy{DeadLetterTopic: topic(cfg.DeadLetterTopic), MaxDeliveryAttempts: 10},
		},
		&pubsubpb.Subscription{Name: sub(cfg.DeadLetterTopic + "-inspect"), Topic: topic(cfg.DeadLetterTopic)},
	)
}

// version is set at build time with -ldflags "-X main.version=...".
var version = "dev"
