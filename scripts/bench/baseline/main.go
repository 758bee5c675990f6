// Command benchbaseline serves the two baselines `make bench` measures ingest
// against, on the same payloads in the same run:
//
//   - ceiling: a bare net/http handler that reads and decodes the body and
//     answers 200 (what HTTP and JSON alone cost);
//   - floor: a minimal server that decodes each event and publishes it with a
//     default pubsub/v2 publisher, waiting for the result (the least any
//     honest ingest must do).
//
// It is a benchmark tool, not part of the product: it lives beside
// scripts/bench.sh, in a module of its own, so that the services' modules and
// `make build` hold only what ships.
package main

import (
	"context"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"log"
	"net/http"
	"os"
	"os/signal"
	"sync"
	"syscall"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"cloud.google.com/go/pubsub/v2/apiv1/pubsubpb"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/startdeliver/segment-destination/shared/gcpclient"
)

func main() {
	mode := flag.String("mode", "ceiling", "ceiling or floor")
	addr := flag.String("addr", "127.0.0.1:8095", "listen address")
	topic := flag.String("topic", "bench-floor", "topic the floor publishes to")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	if err := run(ctx, *mode, *addr, *topic); err != nil {
		log.Fatalf("benchbaseline: %v", err)
	}
}

func run(ctx context.Context, mode, addr, topic string) error {
	var h http.Handler
	switch mode {
	case "ceiling":
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if _, err := decode(r); err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"success":true}`))
		})
	case "floor":
		client, err := gcpclient.PubSub(ctx, os.Getenv("GOOGLE_CLOUD_PROJECT"), os.Getenv, &pubsub.ClientConfig{})
		if err != nil {
			return err
		}
		defer client.Close()
		name := "projects/" + os.Getenv("GOOGLE_CLOUD_PROJECT") + "/topics/" + topic
		if _, err := client.TopicAdminClient.CreateTopic(ctx, &pubsubpb.Topic{Name: name}); err != nil && status.Code(err) != codes.AlreadyExists {
			return fmt.Errorf("create topic: %w", err)
		}
		pub := client.Publisher(topic) // default settings
		defer pub.Stop()
		h = http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			events, err := decode(r)
			if err != nil {
				http.Error(w, err.Error(), http.StatusBadRequest)
				return
			}
			results := make([]*pubsub.PublishResult, len(events))
			for i, e := range events {
				data, _ := json.Marshal(e)
				results[i] = pub.Publish(r.Context(), &pubsub.Message{Data: data})
			}
			for _, res := range results {
				if _, err := res.Get(r.Context()); err != nil {
					http.Error(w, err.Error(), http.StatusServiceUnavailable)
					return
				}
			}
			w.Header().Set("Content-Type", "application/json")
			_, _ = w.Write([]byte(`{"success":true}`))
		})
	default:
		return fmt.Errorf("unknown mode %q", mode)
	}
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	var wg sync.WaitGroup
	wg.Go(func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		_ = srv.Shutdown(sctx)
	})
	if err := srv.ListenAndServe(); err != http.ErrServerClosed {
		return err
	}
	wg.Wait()
	return nil
}

// decode reads a single event or a {"batch":[...]} body into its events.
func decode(r *http.Request) ([]map[string]any, error) {
	body, err := io.ReadAll(io.LimitReader(r.Body, 512<<10))
	if err != nil {
		return nil, err
	}
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	if b, ok := v["batch"].([]any); ok {
		out := make([]map[string]any, 0, len(b))
		for _, e := range b {
			if m, ok := e.(map[string]any); ok {
				out = append(out, m)
			}
		}
		return out, nil
	}
	return []map[string]any{v}, nil
}
