package main

import (
	"errors"
	"fmt"
	"strconv"
	"strings"
	"time"

	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envconfig"
	"github.com/startdeliver/segment-destination/shared/server"
)

// config is deliver's configuration, read from the environment.
type config struct {
	// Service is what both services read alike; PORT, for the health,
	// push and CloudEvent endpoints, defaults to 8081.
	envconfig.Service
	// Mode is DELIVER_MODE: pull (default) or push.
	Mode string
	// Topic is PUBSUB_TOPIC (default segment-events): only used to create
	// the subscription on an emulator.
	Topic string
	// Subscription is PUBSUB_SUBSCRIPTION (default segment-events-deliver).
	Subscription string
	// DeadLetterTopic is DEAD_LETTER_TOPIC (default segment-events-dead).
	DeadLetterTopic string
	// DeliveriesCollection is DELIVERIES_COLLECTION (default deliveries):
	// the record of completed events.
	DeliveriesCollection string
	// IdentitiesCollection is IDENTITIES_COLLECTION (default identities):
	// claims that keep two events from creating one person twice.
	IdentitiesCollection string
	// ConfigCacheTTL is CONFIG_CACHE_TTL (default and maximum 10m).
	ConfigCacheTTL time.Duration
	// ConfigListener is CONFIG_LISTENER (default true in pull mode): a
	// Firestore listener makes account changes visible at once.
	ConfigListener bool
	// StartdeliverURL is STARTDELIVER_API_URL.
	StartdeliverURL string
	// APIURLs is the allow-list of a per-account startdeliverApiUrl:
	// STARTDELIVER_API_HOSTS (default app.startdeliver.com), https only;
	// loopback hosts only on the emulators.
	APIURLs account.APIURLPolicy
	// PushAudience is PUSH_AUDIENCE: push and CloudEvent requests need a
	// Google OIDC token for it (required in push mode outside the
	// emulators; without it in pull mode those endpoints are off outside
	// the emulators).
	PushAudience string
	// PushServiceAccount is PUSH_SERVICE_ACCOUNT: the token's verified
	// email must be this service account (required with PushAudience in
	// push mode outside the emulators).
	PushServiceAccount string
	// Streams is PULL_STREAMS (default 4), MaxOutstanding is
	// PULL_MAX_OUTSTANDING (default 2048 messages;
	// delivery's package doc says why so many).
	Streams        int
	MaxOutstanding int
	// AckExtension is PULL_ACK_EXTENSION (default 30s): the longest single
	// lease extension, which bounds how long a crashed instance's messages
	// stay leased before Pub/Sub redelivers them.
	AckExtension time.Duration
	// PerAccount is ACCOUNT_CONCURRENCY (default 8): events of one account
	// in progress at once; the others wait their turn in process.
	PerAccount int
	// Budget is DELIVERY_BUDGET (default 5s): the most one delivery takes
	// from its turn to its outcome, in-process retries included. With the
	// outcome's writes (finishTimeout) it must fit in the shutdown grace.
	Budget time.Duration
	// RecordPayloads is RECORD_PAYLOADS (default false): keep each event's
	// properties and traits in its record, for the event console.
	RecordPayloads bool
	// MaxRate is STARTDELIVER_MAX_RATE (default 20): the most requests per
	// second deliver sends for one account; a 429 lowers it for a while.
	MaxRate float64
	// AckDeadline is ACK_DEADLINE (default 60s): the subscription's ack
	// deadline, which bounds how long a push request may wait for its turn.
	AckDeadline time.Duration
	// Keyset is API_KEY_KEYSET: deliver's private keyset (Tink JSON),
	// encrypted by the Cloud KMS key KeysetKEK, as `deliver/cmd/keys`
	// writes it; in Cloud Run it comes from Secret Manager. Required
	// outside the emulators; on the Firestore emulator, when empty, the
	// development keyset kept there is used.
	Keyset string
	// KeysetKEK is API_KEY_KEYSET_KEK: the Cloud KMS key that encrypts
	// Keyset (gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K),
	// called once at start. Required with Keyset outside the emulators;
	// on the emulators a Keyset without it is read as clear text.
	KeysetKEK string
}

func loadConfig(getenv func(string) string) (*config, error) {
	c := &config{
		Service:              envconfig.ReadService(getenv, "8081"),
		Mode:                 envconfig.String(getenv, "DELIVER_MODE", "pull"),
		Topic:                envconfig.String(getenv, "PUBSUB_TOPIC", "segment-events"),
		Subscription:         envconfig.String(getenv, "PUBSUB_SUBSCRIPTION", "segment-events-deliver"),
		DeadLetterTopic:      envconfig.String(getenv, "DEAD_LETTER_TOPIC", "segment-events-dead"),
		DeliveriesCollection: envconfig.String(getenv, "DELIVERIES_COLLECTION", "deliveries"),
		IdentitiesCollection: envconfig.String(getenv, "IDENTITIES_COLLECTION", "identities"),
		StartdeliverURL:      envconfig.String(getenv, "STARTDELIVER_API_URL", "https://app.startdeliver.com/api/v1"),
		PushAudience:         getenv("PUSH_AUDIENCE"),
		PushServiceAccount:   getenv("PUSH_SERVICE_ACCOUNT"),
		Keyset:               getenv("API_KEY_KEYSET"),
		KeysetKEK:            getenv("API_KEY_KEYSET_KEK"),
	}
	var err error
	if c.ConfigCacheTTL, err = envconfig.DurationUpTo(getenv, "CONFIG_CACHE_TTL", accountstore.MaxTTL, accountstore.MaxTTL); err != nil {
		return nil, err
	}
	if c.APIURLs, err = account.APIURLPolicyFromEnv(getenv, c.Emulator); err != nil {
		return nil, err
	}
	if c.AckExtension, err = envconfig.Duration(getenv, "PULL_ACK_EXTENSION", 30*time.Second); err != nil {
		return nil, err
	}
	if c.Streams, err = envconfig.Int(getenv, "PULL_STREAMS", 4); err != nil {
		return nil, err
	}
	if c.MaxOutstanding, err = envconfig.Int(getenv, "PULL_MAX_OUTSTANDING", 2048); err != nil {
		return nil, err
	}
	if c.PerAccount, err = envconfig.Int(getenv, "ACCOUNT_CONCURRENCY", 8); err != nil {
		return nil, err
	}
	if c.Budget, err = envconfig.Duration(getenv, "DELIVERY_BUDGET", 5*time.Second); err != nil {
		return nil, err
	}
	if c.AckDeadline, err = envconfig.Duration(getenv, "ACK_DEADLINE", 60*time.Second); err != nil {
		return nil, err
	}
	if c.RecordPayloads, err = envconfig.Bool(getenv, "RECORD_PAYLOADS", false); err != nil {
		return nil, err
	}
	if v := getenv("STARTDELIVER_MAX_RATE"); v != "" {
		if c.MaxRate, err = strconv.ParseFloat(v, 64); err != nil {
			return nil, fmt.Errorf("STARTDELIVER_MAX_RATE=%q: want requests per second", v)
		}
	} else {
		c.MaxRate = 20
	}
	if c.ConfigListener, err = envconfig.Bool(getenv, "CONFIG_LISTENER", c.Mode == "pull"); err != nil {
		return nil, err
	}

	return c, c.validate()
}

func (c *config) validate() error {
	errs := c.Service.Validate()
	if c.Mode != "pull" && c.Mode != "push" {
		errs = append(errs, fmt.Errorf("DELIVER_MODE=%q: want pull or push", c.Mode))
	}
	if c.Mode == "push" && !c.Emulator && (c.PushAudience == "" || c.PushServiceAccount == "") {
		// Push and Eventarc requests must prove they come from the
		// subscription's or trigger's service account; only the emulators,
		// which send no tokens, may go without.
		errs = append(errs, errors.New("DELIVER_MODE=push needs PUSH_AUDIENCE and PUSH_SERVICE_ACCOUNT outside the emulators"))
	}
	switch {
	case c.Keyset == "" && !c.FirestoreEmulator:
		errs = append(errs, errors.New("API_KEY_KEYSET is required outside the emulators (deliver's private keyset; see infra/README.md)"))
	case c.Keyset != "" && c.KeysetKEK == "" && !c.FirestoreEmulator:
		errs = append(errs, errors.New("API_KEY_KEYSET_KEK is required with API_KEY_KEYSET outside the emulators (the Cloud KMS key that encrypts it)"))
	}
	if c.KeysetKEK != "" && !strings.HasPrefix(c.KeysetKEK, "gcp-kms://") {
		errs = append(errs, errors.New("API_KEY_KEYSET_KEK: want gcp-kms://projects/P/locations/L/keyRings/R/cryptoKeys/K"))
	}
	for name, v := range map[string]int{"PULL_STREAMS": c.Streams, "PULL_MAX_OUTSTANDING": c.MaxOutstanding, "ACCOUNT_CONCURRENCY": c.PerAccount} {
		if v <= 0 {
			errs = append(errs, fmt.Errorf("%s=%d: want a positive number", name, v))
		}
	}
	if c.Budget <= 0 || c.Budget+finishTimeout > server.DefaultGrace-time.Second {
		errs = append(errs, fmt.Errorf("DELIVERY_BUDGET=%s: want more than 0 and at most %s, so that a delivery and its outcome end within the %s shutdown grace", c.Budget, server.DefaultGrace-time.Second-finishTimeout, server.DefaultGrace))
	}
	if c.MaxRate <= 0 {
		errs = append(errs, fmt.Errorf("STARTDELIVER_MAX_RATE=%v: want a positive number", c.MaxRate))
	}
	if c.AckDeadline < 10*time.Second || c.AckDeadline > 600*time.Second {
		errs = append(errs, fmt.Errorf("ACK_DEADLINE=%s: want the subscription's, between 10s and 600s", c.AckDeadline))
	}
	return errors.Join(errs...)
}

// finishTimeout bounds a delivery's outcome writes (completion record, dead
// letter).
const finishTimeout = 2 * time.Second

// turnWait is how long a push request waits for its account's turn: what
// the ack deadline leaves after the delivery's budget, its outcome and a
// margin for Pub/Sub's round trip.
func (c *config) turnWait() time.Duration {
	return max(c.AckDeadline-c.Budget-finishTimeout-5*time.Second, time.Second)
}
