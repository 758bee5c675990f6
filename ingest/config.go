package main

import (
	"errors"
	"fmt"
	"time"

	"github.com/startdeliver/segment-destination/ingest/internal/receive"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envconfig"
	"github.com/startdeliver/segment-destination/shared/keyseal"
)

// config is ingest's configuration, read from the environment.
type config struct {
	// Service is what both services read alike; PORT, where the HTTP API
	// listens, defaults to 8080.
	envconfig.Service
	// Topic is PUBSUB_TOPIC (default segment-events).
	Topic string
	// ConfigCacheTTL is CONFIG_CACHE_TTL (default and maximum 10m).
	ConfigCacheTTL time.Duration
	// Ordering is PUBSUB_ORDERING (default false): publish with an ordering
	// key per account and person (README, "Order of events").
	Ordering bool
	// PublishDelay is PUBSUB_PUBLISH_DELAY (default 1ms): the least time a
	// partial batch waits behind a Publish call in flight before another
	// call is opened; a lone event leaves at once.
	PublishDelay time.Duration
	// PublishTimeout is PUBSUB_PUBLISH_TIMEOUT (default 10s): how long a
	// request waits for Pub/Sub before it answers 503.
	PublishTimeout time.Duration
	// PublishMaxBytes is PUBSUB_PUBLISH_MAX_BYTES (default 64 MiB): the
	// most bytes of messages the publisher holds, queued or in a Publish
	// call; past it a request answers 503 at once.
	PublishMaxBytes int
	// MaxInflightBytes is MAX_INFLIGHT_BYTES (default 64 MiB): the most
	// memory the requests in progress may hold (bodies, decoded events,
	// messages being built); past it a request answers 503 with
	// Retry-After.
	MaxInflightBytes int
	// DeliveriesCollection is DELIVERIES_COLLECTION (default deliveries):
	// deliver's event records, read by GET /v1/events.
	DeliveriesCollection string
	// StartdeliverAPIURL is STARTDELIVER_API_URL (default
	// https://app.startdeliver.com/api/v1): where explain's read-only
	// lookups go for accounts without their own startdeliverApiUrl.
	StartdeliverAPIURL string
	// TraceURL is CONSOLE_TRACE_URL: the link to an event's trace, with
	// {traceId} and {project} replaced. Default: Cloud Trace's, except on
	// the emulators, where the console shows the local bin/tracetree
	// command instead.
	TraceURL string
	// APIURLs is the allow-list of a per-account startdeliverApiUrl
	// (STARTDELIVER_API_HOSTS, as deliver's): explain's lookups send the key
	// only where deliver would.
	APIURLs account.APIURLPolicy
	// PublicKeyset is API_KEY_PUBLIC_KEYSET: deliver's public keyset (Tink
	// JSON, as `deliver/cmd/keys` prints it), with which ingest seals each
	// event's API key. It must hold no private key material. Required
	// outside the emulators; on the Firestore emulator, when empty, the
	// development keyset kept there is used.
	PublicKeyset string
}

func loadConfig(getenv func(string) string) (*config, error) {
	c := &config{
		Service:              envconfig.ReadService(getenv, "8080"),
		Topic:                envconfig.String(getenv, "PUBSUB_TOPIC", "segment-events"),
		DeliveriesCollection: envconfig.String(getenv, "DELIVERIES_COLLECTION", "deliveries"),
		StartdeliverAPIURL:   envconfig.String(getenv, "STARTDELIVER_API_URL", "https://app.startdeliver.com/api/v1"),
		TraceURL:             getenv("CONSOLE_TRACE_URL"),
		PublicKeyset:         getenv("API_KEY_PUBLIC_KEYSET"),
	}
	if c.TraceURL == "" && !c.Emulator {
		c.TraceURL = "https://console.cloud.google.com/traces/list?project={project}&tid={traceId}"
	}
	var err error
	if c.ConfigCacheTTL, err = envconfig.DurationUpTo(getenv, "CONFIG_CACHE_TTL", accountstore.MaxTTL, accountstore.MaxTTL); err != nil {
		return nil, err
	}
	if c.APIURLs, err = account.APIURLPolicyFromEnv(getenv, c.Emulator); err != nil {
		return nil, err
	}
	if c.PublishDelay, err = envconfig.Duration(getenv, "PUBSUB_PUBLISH_DELAY", time.Millisecond); err != nil {
		return nil, err
	}
	if c.PublishTimeout, err = envconfig.Duration(getenv, "PUBSUB_PUBLISH_TIMEOUT", 10*time.Second); err != nil {
		return nil, err
	}
	if c.Ordering, err = envconfig.Bool(getenv, "PUBSUB_ORDERING", false); err != nil {
		return nil, err
	}
	if c.PublishMaxBytes, err = envconfig.Int(getenv, "PUBSUB_PUBLISH_MAX_BYTES", 64<<20); err != nil {
		return nil, err
	}
	if c.MaxInflightBytes, err = envconfig.Int(getenv, "MAX_INFLIGHT_BYTES", receive.DefaultMaxInflightBytes); err != nil {
		return nil, err
	}
	return c, c.validate()
}

func (c *config) validate() error {
	errs := c.Service.Validate()
	if c.PublishMaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("PUBSUB_PUBLISH_MAX_BYTES=%d: want at least 1 MiB (an event may be 32 KB, a batch 500 KB)", c.PublishMaxBytes))
	}
	if c.MaxInflightBytes < receive.MinInflightBytes {
		errs = append(errs, fmt.Errorf("MAX_INFLIGHT_BYTES=%d: want at least %d (one maximal batch, with its context merged into 2,500 events)", c.MaxInflightBytes, receive.MinInflightBytes))
	}
	switch {
	case c.PublicKeyset != "":
		if _, err := keyseal.ReadPublic([]byte(c.PublicKeyset)); err != nil {
			errs = append(errs, fmt.Errorf("API_KEY_PUBLIC_KEYSET: %w", err))
		}
	case !c.FirestoreEmulator:
		errs = append(errs, errors.New("API_KEY_PUBLIC_KEYSET is required outside the emulators (deliver's public keyset; see infra/README.md)"))
	}
	return errors.Join(errs...)
}
