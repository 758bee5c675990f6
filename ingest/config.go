package main

import (
	"errors"
	"fmt"
	"strconv"
	"time"

	"github.com/startdeliver/segment-destination/ingest/internal/receive"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envconfig"
	"github.com/startdeliver/segment-destination/shared/keyseal"
)

// config is ingest's configuration, read from the environment.
type config struct {
	// Port is PORT: where the HTTP API listens (default 8080).
	Port string
	// Host is HOST: the interface to listen on (default all; 127.0.0.1
	// keeps a local run on loopback).
	Host string
	// Project is GOOGLE_CLOUD_PROJECT.
	Project string
	// Topic is PUBSUB_TOPIC (default segment-events).
	Topic string
	// FirestoreDatabase is FIRESTORE_DATABASE (default "(default)").
	FirestoreDatabase string
	// AccountsCollection is ACCOUNTS_COLLECTION (default accounts).
	AccountsCollection string
	// ConfigCacheTTL is CONFIG_CACHE_TTL (default and maximum 10m).
	ConfigCacheTTL time.Duration
	// LogLevel is LOG_LEVEL (debug, info, warn, error; default info).
	LogLevel string
	// Ordering is PUBSUB_ORDERING (default true): publish with an ordering
	// key per account and person.
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
	// Emulator is true when PUBSUB_EMULATOR_HOST is set: the topic is then
	// created when missing.
	Emulator bool
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
	// FirestoreEmulator is true when FIRESTORE_EMULATOR_HOST is set.
	FirestoreEmulator bool
}

func loadConfig(getenv func(string) string) (*config, error) {
	c := &config{
		Port:                 envconfig.String(getenv, "PORT", "8080"),
		Host:                 getenv("HOST"),
		Project:              getenv("GOOGLE_CLOUD_PROJECT"),
		Topic:                envconfig.String(getenv, "PUBSUB_TOPIC", "segment-events"),
		FirestoreDatabase:    envconfig.String(getenv, "FIRESTORE_DATABASE", "(default)"),
		AccountsCollection:   envconfig.String(getenv, "ACCOUNTS_COLLECTION", "accounts"),
		LogLevel:             envconfig.String(getenv, "LOG_LEVEL", "info"),
		Emulator:             getenv("PUBSUB_EMULATOR_HOST") != "",
		DeliveriesCollection: envconfig.String(getenv, "DELIVERIES_COLLECTION", "deliveries"),
		StartdeliverAPIURL:   envconfig.String(getenv, "STARTDELIVER_API_URL", "https://app.startdeliver.com/api/v1"),
		TraceURL:             getenv("CONSOLE_TRACE_URL"),
		PublicKeyset:         getenv("API_KEY_PUBLIC_KEYSET"),
		FirestoreEmulator:    getenv("FIRESTORE_EMULATOR_HOST") != "",
	}
	if c.TraceURL == "" && !c.Emulator {
		c.TraceURL = "https://console.cloud.google.com/traces/list?project={project}&tid={traceId}"
	}
	var err error
	if c.ConfigCacheTTL, err = envconfig.Duration(getenv, "CONFIG_CACHE_TTL", accountstore.MaxTTL); err != nil {
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
	if c.Ordering, err = envconfig.Bool(getenv, "PUBSUB_ORDERING", true); err != nil {
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
	var errs []error
	if c.Project == "" {
		errs = append(errs, errors.New("GOOGLE_CLOUD_PROJECT is required"))
	}
	if c.ConfigCacheTTL <= 0 || c.ConfigCacheTTL > accountstore.MaxTTL {
		errs = append(errs, fmt.Errorf("CONFIG_CACHE_TTL=%s: want more than 0 and at most %s", c.ConfigCacheTTL, accountstore.MaxTTL))
	}
	if c.PublishMaxBytes < 1<<20 {
		errs = append(errs, fmt.Errorf("PUBSUB_PUBLISH_MAX_BYTES=%d: want at least 1 MiB (an event may be 32 KB, a batch 500 KB)", c.PublishMaxBytes))
	}
	if c.MaxInflightBytes < receive.MinInflightBytes {
		errs = append(errs, fmt.Errorf("MAX_INFLIGHT_BYTES=%d: want at least %d (one maximal batch, with its context merged into 2,500 events)", c.MaxInflightBytes, receive.MinInflightBytes))
	}
	if _, err := strconv.ParseUint(c.Port, 10, 16); err != nil {
		errs = append(errs, fmt.Errorf("PORT=%q: want a port number", c.Port))
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
