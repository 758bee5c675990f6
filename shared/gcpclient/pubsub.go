package gcpclient

import (
	"context"
	"fmt"
	"strings"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TopicName is the full resource name of topic in project; a name that is
// already full is returned as it is.
func TopicName(project, topic string) string {
	if strings.HasPrefix(topic, "projects/") {
		return topic
	}
	return "projects/" + project + "/topics/" + topic
}

// SubscriptionName is the full resource name of sub in project; a name that
// is already full is returned as it is.
func SubscriptionName(project, sub string) string {
	if strings.HasPrefix(sub, "projects/") {
		return sub
	}
	return "projects/" + project + "/subscriptions/" + sub
}

// ProvisionEmulator creates the topics (short or full names) and then the
// subscriptions that do not exist yet. It is for the emulators only: in
// Google Cloud, Terraform owns topics and subscriptions, and the services
// may not create them.
func ProvisionEmulator(ctx context.Context, ps *pubsub.Client, project string, topics []string, subs ...*pubsubpb.Subscription) error {
	for _, t := range topics {
		if _, err := ps.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: TopicName(project, t)}); err != nil && status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("create topic %s: %w", t, err)
		}
	}
	for _, s := range subs {
		if _, err := ps.SubscriptionAdminClient.CreateSubscription(ctx, s); err != nil && status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("create subscription %s: %w", s.Name, err)
		}
	}
	return nil
}
