package gcpclient

import (
	"context"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"cloud.google.com/go/pubsub/v2/pstest"
	"google.golang.org/protobuf/types/known/durationpb"
)

func TestNames(t *testing.T) {
	tests := []struct{ got, want string }{
		{TopicName("p", "events"), "projects/p/topics/events"},
		{TopicName("p", "projects/q/topics/events"), "projects/q/topics/events"},
		{SubscriptionName("p", "deliver"), "projects/p/subscriptions/deliver"},
		{SubscriptionName("p", "projects/q/subscriptions/deliver"), "projects/q/subscriptions/deliver"},
	}
	for _, tt := range tests {
		if tt.got != tt.want {
			t.Errorf("name = %q, want %q", tt.got, tt.want)
		}
	}
}

// TestProvisionEmulator: topics and subscriptions are created once; a second
// call (another instance starting) finds them and succeeds.
func TestProvisionEmulator(t *testing.T) {
	srv := pstest.NewServer()
	defer srv.Close()
	ctx := context.Background()
	ps, err := PubSub(ctx, "p", func(k string) string {
		if k == "PUBSUB_EMULATOR_HOST" {
			return srv.Addr
		}
		return ""
	}, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ps.Close()
	sub := &pubsubpb.Subscription{
		Name: SubscriptionName("p", "deliver"), Topic: TopicName("p", "events"),
		RetryPolicy: &pubsubpb.RetryPolicy{MinimumBackoff: durationpb.New(time.Second)},
	}
	for i := range 2 {
		if err := ProvisionEmulator(ctx, ps, "p", []string{"events", "dead"}, sub); err != nil {
			t.Fatalf("ProvisionEmulator call %d: %v", i+1, err)
		}
	}
	for _, name := range []string{"projects/p/topics/events", "projects/p/topics/dead"} {
		if _, err := ps.TopicAdminClient.GetTopic(ctx, &pubsubpb.GetTopicRequest{Topic: name}); err != nil {
			t.Errorf("GetTopic(%s): %v", name, err)
		}
	}
	got, err := ps.SubscriptionAdminClient.GetSubscription(ctx, &pubsubpb.GetSubscriptionRequest{Subscription: sub.Name})
	if err != nil {
		t.Fatalf("GetSubscription: %v", err)
	}
	if got.Topic != sub.Topic {
		t.Errorf("subscription topic = %s, want %s", got.Topic, sub.Topic)
	}
	if err := ProvisionEmulator(ctx, ps, "p", nil, &pubsubpb.Subscription{Name: SubscriptionName("p", "orphan"), Topic: TopicName("p", "missing")}); err == nil {
		t.Errorf("subscription on a missing topic: no error")
	}
}
