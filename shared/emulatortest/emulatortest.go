// Package emulatortest helps tests use Google's Pub/Sub and Firestore
// emulators with the real client libraries: it finds the emulators (or
// skips, or fails under CI=true), and makes uniquely named topics,
// subscriptions and collections that clean up after the test.
package emulatortest

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os"
	"strings"
	"sync"
	"testing"
	"time"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/types/known/durationpb"

	"github.com/startdeliver/segment-destination/shared/gcpclient"
)

// Env is the emulator environment of a test.
type Env struct {
	Project       string
	PubSubHost    string
	FirestoreHost string
}

// Getenv returns a getenv for a service under test: the emulator variables
// and project, then vars, then nothing (the process environment is not
// consulted, so tests do not depend on the caller's shell).
func (e Env) Getenv(vars map[string]string) func(string) string {
	return func(k string) string {
		if v, ok := vars[k]; ok {
			return v
		}
		switch k {
		case "GOOGLE_CLOUD_PROJECT":
			return e.Project
		case "PUBSUB_EMULATOR_HOST":
			return e.PubSubHost
		case "FIRESTORE_EMULATOR_HOST":
			return e.FirestoreHost
		}
		return ""
	}
}

// Require returns the emulator environment, skipping the test when no
// emulator is configured, or failing it under CI=true. Run tests through
// `scripts/emulators.sh run` (make test does) to have them.
func Require(t testing.TB) Env {
	t.Helper()
	e := Env{
		Project:       os.Getenv("GOOGLE_CLOUD_PROJECT"),
		PubSubHost:    os.Getenv("PUBSUB_EMULATOR_HOST"),
		FirestoreHost: os.Getenv("FIRESTORE_EMULATOR_HOST"),
	}
	if e.PubSubHost == "" || e.FirestoreHost == "" {
		msg := "needs the Pub/Sub and Firestore emulators: run `make test` or `scripts/emulators.sh run go test ./...`"
		if os.Getenv("CI") == "true" {
			t.Fatal(msg)
		}
		t.Skip(msg)
	}
	if e.Project == "" {
		e.Project = "local-project"
	}
	return e
}

// Name returns a name unique to this test run, safe for Pub/Sub and
// Firestore: prefix, the test's name, and random hex.
func Name(t testing.TB, prefix string) string {
	b := make([]byte, 4)
	_, _ = rand.Read(b)
	n := strings.Map(func(r rune) rune {
		switch {
		case r >= 'a' && r <= 'z', r >= 'A' && r <= 'Z', r >= '0' && r <= '9', r == '-':
			return r
		}
		return '-'
	}, t.Name())
	if len(n) > 60 {
		n = n[len(n)-60:]
	}
	return fmt.Sprintf("%s-%s-%s", prefix, strings.Trim(n, "-"), hex.EncodeToString(b))
}

// PubSub returns a client for the emulator, closed when the test ends.
func PubSub(t testing.TB, e Env) *pubsub.Client {
	t.Helper()
	t.Setenv("PUBSUB_EMULATOR_HOST", e.PubSubHost)
	c, err := pubsub.NewClient(context.Background(), e.Project)
	if err != nil {
		t.Fatalf("pubsub client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// Firestore returns a client for the emulator, closed when the test ends.
func Firestore(t testing.TB, e Env) *firestore.Client {
	t.Helper()
	t.Setenv("FIRESTORE_EMULATOR_HOST", e.FirestoreHost)
	c, err := firestore.NewClient(context.Background(), e.Project)
	if err != nil {
		t.Fatalf("firestore client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// FirestoreWith is Firestore over a connection dialled with opts as well
// (interceptors that count or hold calls), authenticated as the emulator's
// owner the way the client library does against an emulator.
func FirestoreWith(t testing.TB, e Env, opts ...grpc.DialOption) *firestore.Client {
	t.Helper()
	t.Setenv("FIRESTORE_EMULATOR_HOST", e.FirestoreHost)
	dial := append([]grpc.DialOption{
		grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithPerRPCCredentials(emulatorOwner{}),
	}, opts...)
	conn, err := grpc.NewClient(e.FirestoreHost, dial...)
	if err != nil {
		t.Fatalf("dial firestore emulator: %v", err)
	}
	c, err := firestore.NewClient(context.Background(), e.Project, option.WithGRPCConn(conn))
	if err != nil {
		t.Fatalf("firestore client: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

// emulatorOwner is the credential the Firestore emulator takes for admin
// access, as the client library sends it.
type emulatorOwner struct{}

func (emulatorOwner) GetRequestMetadata(context.Context, ...string) (map[string]string, error) {
	return map[string]string{"authorization": "Bearer owner"}, nil
}
func (emulatorOwner) RequireTransportSecurity() bool { return false }

// CreateTopic creates a topic, deleted when the test ends.
func CreateTopic(t testing.TB, c *pubsub.Client, project, topic string) {
	t.Helper()
	name := gcpclient.TopicName(project, topic)
	if _, err := c.TopicAdminClient.CreateTopic(context.Background(), &pubsubpb.Topic{Name: name}); err != nil {
		t.Fatalf("create topic %s: %v", topic, err)
	}
	t.Cleanup(func() {
		_ = c.TopicAdminClient.DeleteTopic(context.Background(), &pubsubpb.DeleteTopicRequest{Topic: name})
	})
}

// SubscriptionOptions tune CreateSubscription.
type SubscriptionOptions struct {
	Ordering            bool
	AckDeadline         time.Duration
	DeadLetterTopic     string // short name
	MaxDeliveryAttempts int32
	PushEndpoint        string
	MinBackoff          time.Duration
}

// CreateSubscription creates a subscription on topic, deleted when the test
// ends.
func CreateSubscription(t testing.TB, c *pubsub.Client, project, topic, sub string, o SubscriptionOptions) {
	t.Helper()
	s := &pubsubpb.Subscription{
		Name:                  gcpclient.SubscriptionName(project, sub),
		Topic:                 gcpclient.TopicName(project, topic),
		EnableMessageOrdering: o.Ordering,
		AckDeadlineSeconds:    10,
	}
	if o.AckDeadline > 0 {
		s.AckDeadlineSeconds = int32(o.AckDeadline / time.Second)
	}
	if o.DeadLetterTopic != "" {
		s.DeadLetterPolicy = &pubsubpb.DeadLetterPolicy{DeadLetterTopic: gcpclient.TopicName(project, o.DeadLetterTopic), MaxDeliveryAttempts: o.MaxDeliveryAttempts}
	}
	if o.PushEndpoint != "" {
		s.PushConfig = &pubsubpb.PushConfig{PushEndpoint: o.PushEndpoint}
	}
	if o.MinBackoff > 0 {
		s.RetryPolicy = &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(o.MinBackoff), MaximumBackoff: durationpb.New(o.MinBackoff * 2)}
	}
	if _, err := c.SubscriptionAdminClient.CreateSubscription(context.Background(), s); err != nil {
		t.Fatalf("create subscription %s: %v", sub, err)
	}
	t.Cleanup(func() {
		_ = c.SubscriptionAdminClient.DeleteSubscription(context.Background(), &pubsubpb.DeleteSubscriptionRequest{Subscription: s.Name})
	})
}

// Receive pulls messages from sub until it has n or timeout passes, acking
// each, and returns them in arrival order.
func Receive(t testing.TB, c *pubsub.Client, sub string, n int, timeout time.Duration) []*pubsub.Message {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	var (
		mu  sync.Mutex
		out []*pubsub.Message
	)
	err := c.Subscriber(sub).Receive(ctx, func(_ context.Context, m *pubsub.Message) {
		m.Ack()
		mu.Lock()
		defer mu.Unlock()
		out = append(out, m)
		if len(out) >= n {
			cancel()
		}
	})
	if err != nil && ctx.Err() == nil {
		t.Fatalf("receive from %s: %v", sub, err)
	}
	mu.Lock()
	defer mu.Unlock()
	return out
}
