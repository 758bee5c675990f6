package delivery

import (
	"context"
	"errors"
	"time"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envelope"
)

// metrics are deliver's per-event instruments.
type metrics struct {
	events     metric.Int64Counter
	endToEnd   metric.Float64Histogram
	processing metric.Float64Histogram
	lookups    metric.Int64Counter
}

func newMetrics(m metric.Meter) *metrics {
	// Instrument creation fails only on invalid names; the no-op
	// instruments it then returns are safe to use.
	events, _ := m.Int64Counter("deliver.events",
		metric.WithDescription("Events processed, by outcome (delivered, duplicate, skipped, retried, dead_lettered), type and account"))
	e2e, _ := m.Float64Histogram("deliver.end_to_end.duration", metric.WithUnit("s"),
		metric.WithDescription("Time from ingest receiving an event to its delivery"))
	proc, _ := m.Float64Histogram("deliver.processing.duration", metric.WithUnit("s"),
		metric.WithDescription("Time deliver spent on one message"))
	lookups, _ := m.Int64Counter("deliver.config.lookups",
		metric.WithDescription("Account config lookups, by source (cache: a hit; firestore: a miss, read now; stale: Firestore failing, last good entry served) and result"))
	return &metrics{events: events, endToEnd: e2e, processing: proc, lookups: lookups}
}

// lookup counts one config lookup: where it was answered from, and whether
// it found the account (found, unknown, error).
func (m *metrics) lookup(ctx context.Context, source accountstore.Source, err error) {
	result := "found"
	switch {
	case errors.Is(err, accountstore.ErrUnknown):
		result = "unknown"
	case err != nil:
		result = "error"
	}
	m.lookups.Add(ctx, 1, metric.WithAttributes(attribute.String("source", string(source)), attribute.String("result", result)))
}

func (m *metrics) record(ctx context.Context, res Result, attrs map[string]string, received time.Time, took time.Duration, now time.Time) {
	set := metric.WithAttributes(
		attribute.String("outcome", res.Outcome),
		attribute.String("type", attrs[envelope.AttrType]),
		attribute.String("account", attrs[envelope.AttrAccountID]),
		attribute.String("error_class", res.Class),
	)
	m.events.Add(ctx, 1, set)
	m.processing.Record(ctx, took.Seconds(), metric.WithAttributes(attribute.String("outcome", res.Outcome)))
	if res.Outcome == OutcomeDelivered && !received.IsZero() {
		m.endToEnd.Record(ctx, now.Sub(received).Seconds(), metric.WithAttributes(attribute.String("type", attrs[envelope.AttrType])))
	}
}
