// Command replay moves dead-lettered events from the dead-letter
// subscription back to the main topic, after the cause (an account's config,
// a Startdeliver setting) has been fixed.
//
// Usage:
//
//	replay -dry-run [filters]           list what would move, move nothing
//	replay -account 3f2a9c [-class invalid-config] [-limit 100]
//	replay -message <Segment messageId>
//	replay -all                         move every message
//
// Filters combine with AND: -account matches the account id (the API key's
// SHA-256) or a prefix of it, -class the errorClass attribute deliver wrote
// (messages that Pub/Sub's own dead-letter policy forwarded have none; they
// have the class max-delivery-attempts), -message the Segment messageId.
// Moving without any filter needs -all, so that a forgotten flag does not
// replay everything.
//
// Each message is seen once per run. A message that moves is acked only
// after the main topic confirmed its publish, so a crash in between leaves
// at worst a duplicate, which deliver drops by messageId. Messages that do
// not match (and all of them in a dry-run) stay leased until the run ends
// and are then released, so they stay in the subscription. A matching
// message whose body cannot be decoded is reported and kept. The run ends
// when two pulls in a row find nothing.
//
// The republished message has the original body, the original attributes
// without the dead-letter ones (error, errorClass, failedAt,
// sourceMessageId, CloudPubSubDeadLetter*) plus replayedAt, and the ordering
// key ingest gives it, recomputed from the body.
//
// Environment, as for the services: GOOGLE_CLOUD_PROJECT (required),
// PUBSUB_EMULATOR_HOST, PUBSUB_TOPIC (default segment-events) and
// DEAD_LETTER_SUBSCRIPTION (default segment-events-dead-inspect).
//
// The listing and the summary go to stdout; progress (every 1,000 messages
// or every -progress interval) and reports of messages that cannot move go
// to stderr. The exit status is 1 when a matching message could not be
// moved (a dry-run only reports them).
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"
	"time"

	"cloud.google.com/go/pubsub/v2"

	"github.com/startdeliver/segment-destination/shared/command"
	"github.com/startdeliver/segment-destination/shared/gcpclient"
)

func main() {
	command.Main("replay", "", func(ctx context.Context) error { return run(ctx, os.Args[1:], os.Getenv, os.Stdout, os.Stderr) })
}

// config is what one run does, from flags and the environment.
type config struct {
	// Project is GOOGLE_CLOUD_PROJECT.
	Project string
	// Topic is PUBSUB_TOPIC (default segment-events): where messages move.
	Topic string
	// Subscription is DEAD_LETTER_SUBSCRIPTION (default
	// segment-events-dead-inspect): where they come from.
	Subscription string

	filter   filter
	all      bool
	dryRun   bool
	limit    int
	wait     time.Duration
	progress time.Duration
}

// parse reads flags and environment.
func parse(args []string, getenv func(string) string, stderr io.Writer) (*config, error) {
	c := &config{
		Project:      getenv("GOOGLE_CLOUD_PROJECT"),
		Topic:        or(getenv("PUBSUB_TOPIC"), "segment-events"),
		Subscription: or(getenv("DEAD_LETTER_SUBSCRIPTION"), "segment-events-dead-inspect"),
	}
	fs := flag.NewFlagSet("replay", flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.StringVar(&c.filter.account, "account", "", "move only this account's messages: its id (the API key's SHA-256) or a prefix of it")
	fs.StringVar(&c.filter.class, "class", "", "move only messages of this errorClass (max-delivery-attempts for those Pub/Sub's dead-letter policy forwarded)")
	fs.StringVar(&c.filter.message, "message", "", "move only the message(s) with this Segment messageId")
	fs.BoolVar(&c.all, "all", false, "move every message (needed when no filter is given)")
	fs.BoolVar(&c.dryRun, "dry-run", false, "list what would move and move nothing")
	fs.IntVar(&c.limit, "limit", 0, "move (or list) at most this many messages; 0 means no limit")
	fs.DurationVar(&c.wait, "wait", 2*time.Second, "how long one pull waits for messages; the run ends after two empty pulls")
	fs.DurationVar(&c.progress, "progress", 2*time.Second, "interval of the progress line on stderr (it also appears every 1,000 messages); 0 turns it off")
	if err := fs.Parse(args); err != nil {
		return nil, err
	}
	if fs.NArg() > 0 {
		return nil, fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	c.filter.account = strings.ToLower(strings.TrimSpace(c.filter.account))
	var errs []error
	if c.Project == "" {
		errs = append(errs, errors.New("GOOGLE_CLOUD_PROJECT is required"))
	}
	if c.limit < 0 {
		errs = append(errs, fmt.Errorf("-limit %d: want 0 or more", c.limit))
	}
	if c.wait <= 0 {
		errs = append(errs, fmt.Errorf("-wait %s: want more than 0", c.wait))
	}
	if c.progress < 0 {
		errs = append(errs, fmt.Errorf("-progress %s: want 0 or more", c.progress))
	}
	if c.filter.empty() && !c.all && !c.dryRun {
		errs = append(errs, errors.New("no filter: give -account, -class or -message, or -all to move every message"))
	}
	if !c.filter.empty() && c.all {
		errs = append(errs, errors.New("-all moves every message: it cannot be combined with a filter"))
	}
	return c, errors.Join(errs...)
}

// run parses args and the environment, then moves (or lists) the messages
// of the dead-letter subscription. The listing and summary go to stdout;
// progress and problems to stderr.
func run(ctx context.Context, args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	cfg, err := parse(args, getenv, stderr)
	if err != nil {
		return err
	}
	client, err := gcpclient.PubSub(ctx, cfg.Project, getenv, &pubsub.ClientConfig{})
	if err != nil {
		return err
	}
	defer client.Close()

	publisher := client.Publisher(cfg.Topic)
	publisher.EnableMessageOrdering = true
	defer publisher.Stop()

	r := &replayer{
		subs:         adminSubscriptions{client.SubscriptionAdminClient},
		publisher:    topicPublisher{publisher},
		subscription: gcpclient.SubscriptionName(cfg.Project, cfg.Subscription),
		topic:        cfg.Topic,
		filter:       cfg.filter,
		dryRun:       cfg.dryRun,
		limit:        cfg.limit,
		wait:         cfg.wait,
		progress:     cfg.progress,
		stdout:       stdout,
		stderr:       stderr,
		now:          time.Now,
	}
	return r.run(ctx)
}

func or(v, def string) string {
	if v == "" {
		return def
	}
	return v
}
