// Package gcpclient builds the Pub/Sub and Firestore clients both services
// use, from a getenv rather than the process environment, so that the
// emulator variables a service is given are the ones it uses.
package gcpclient

import (
	"context"
	"fmt"

	"cloud.google.com/go/firestore"
	"cloud.google.com/go/pubsub/v2"
	"google.golang.org/api/option"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

// emulatorOptions point a client at an emulator: plain gRPC, no
// credentials.
func emulatorOptions(host string) []option.ClientOption {
	return []option.ClientOption{
		option.WithEndpoint(host),
		option.WithoutAuthentication(),
		option.WithGRPCDialOption(grpc.WithTransportCredentials(insecure.NewCredentials())),
	}
}

// PubSub returns a Pub/Sub client for project, on PUBSUB_EMULATOR_HOST when
// getenv has it.
func PubSub(ctx context.Context, project string, getenv func(string) string, cfg *pubsub.ClientConfig) (*pubsub.Client, error) {
	var opts []option.ClientOption
	if host := getenv("PUBSUB_EMULATOR_HOST"); host != "" {
		opts = emulatorOptions(host)
	}
	c, err := pubsub.NewClientWithConfig(ctx, project, cfg, opts...)
	if err != nil {
		return nil, fmt.Errorf("pubsub client: %w", err)
	}
	return c, nil
}

// Firestore returns a Firestore client for database of project, on
// FIRESTORE_EMULATOR_HOST when getenv has it.
func Firestore(ctx context.Context, project, database string, getenv func(string) string) (*firestore.Client, error) {
	var opts []option.ClientOption
	if host := getenv("FIRESTORE_EMULATOR_HOST"); host != "" {
		opts = emulatorOptions(host)
	}
	if database == "" {
		database = firestore.DefaultDatabaseID
	}
	c, err := firestore.NewClientWithDatabase(ctx, project, database, opts...)
	if err != nil {
		return nil, fmt.Errorf("firestore client: %w", err)
	}
	return c, nil
}
