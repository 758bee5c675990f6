// Command startdeliver-standin serves the in-memory Startdeliver stand-in
// (package startdelivertest) for `make run`: the API at /api/v1 (point
// STARTDELIVER_API_URL at http://<addr>/api/v1), a read-only page of users,
// customers and the latest usage records at /_standin/, the state as JSON at
// /_standin/state, and fault and latency controls (POST/DELETE
// /_standin/faults, POST /_standin/latency).
//
// Configuration, flags overriding the environment:
//
//	-listen      STANDIN_LISTEN          address (default 127.0.0.1:8090)
//	-keys        STANDIN_KEYS            comma-separated API keys to accept
//	-any-key     STANDIN_ACCEPT_ANY_KEY  accept every non-empty key (true/false)
//	-latency     STANDIN_LATENCY         added latency per API call (e.g. 50ms)
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/command"
)

func main() {
	logger := slog.New(slog.NewJSONHandler(os.Stderr, nil))
	command.Main("startdeliver-standin", "", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, logger, nil) })
}

// config is the stand-in's configuration.
type config struct {
	Listen    string        // STANDIN_LISTEN
	Keys      []string      // STANDIN_KEYS
	AnyKey    bool          // STANDIN_ACCEPT_ANY_KEY
	Latency   time.Duration // STANDIN_LATENCY
	keysGiven bool
}

func parseConfig(args []string, getenv func(string) string) (config, error) {
	cfg := config{Listen: "127.0.0.1:8090"}
	if v := getenv("STANDIN_LISTEN"); v != "" {
		cfg.Listen = v
	}
	keys := getenv("STANDIN_KEYS")
	anyKey := getenv("STANDIN_ACCEPT_ANY_KEY")
	latency := getenv("STANDIN_LATENCY")

	fs := flag.NewFlagSet("startdeliver-standin", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&cfg.Listen, "listen", cfg.Listen, "listen address")
	fs.StringVar(&keys, "keys", keys, "comma-separated API keys to accept")
	fs.StringVar(&anyKey, "any-key", anyKey, "accept every non-empty API key")
	fs.StringVar(&latency, "latency", latency, "added latency per API call")
	if err := fs.Parse(args); err != nil {
		return cfg, fmt.Errorf("parse flags: %w", err)
	}
	for k := range strings.SplitSeq(keys, ",") {
		if k = strings.TrimSpace(k); k != "" {
			cfg.Keys = append(cfg.Keys, k)
		}
	}
	if anyKey != "" {
		b, err := strconv.ParseBool(anyKey)
		if err != nil {
			return cfg, fmt.Errorf("STANDIN_ACCEPT_ANY_KEY / -any-key %q: want true or false", anyKey)
		}
		cfg.AnyKey = b
	}
	if latency != "" {
		d, err := time.ParseDuration(latency)
		if err != nil || d < 0 {
			return cfg, fmt.Errorf("STANDIN_LATENCY / -latency %q: want a duration such as 50ms", latency)
		}
		cfg.Latency = d
	}
	if len(cfg.Keys) == 0 && !cfg.AnyKey {
		return cfg, errors.New("no API keys accepted: set STANDIN_KEYS or STANDIN_ACCEPT_ANY_KEY=true")
	}
	return cfg, nil
}

// run serves until ctx ends, then shuts down within a few seconds. ready,
// when set, is told the listening address.
func run(ctx context.Context, args []string, getenv func(string) string, logger *slog.Logger, ready func(net.Addr)) error {
	cfg, err := parseConfig(args, getenv)
	if err != nil {
		return err
	}
	standin := startdelivertest.New(startdelivertest.Options{Keys: cfg.Keys, AcceptAnyKey: cfg.AnyKey})
	standin.SetLatency(cfg.Latency)

	l, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", cfg.Listen, err)
	}
	srv := &http.Server{Handler: standin, ReadHeaderTimeout: 5 * time.Second}
	hashes := make([]string, len(cfg.Keys))
	for i, k := range cfg.Keys {
		hashes[i] = startdelivertest.KeyHash(k)
	}
	logger.Info("startdeliver stand-in serving",
		"api", "http://"+l.Addr().String()+startdelivertest.APIPrefix,
		"page", "http://"+l.Addr().String()+startdelivertest.ControlPrefix,
		"key_hashes", hashes, "accept_any_key", cfg.AnyKey)
	if ready != nil {
		ready(l.Addr())
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(l) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	standin.Close() // release hanging fault requests first
	shutdownCtx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(shutdownCtx); err != nil {
		return fmt.Errorf("shut down: %w", err)
	}
	return nil
}
