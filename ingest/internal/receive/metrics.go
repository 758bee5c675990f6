package receive

import (
	"context"

	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"

	"github.com/startdeliver/segment-destination/shared/segment"
)

// metrics are ingest's instruments: every event received, published or
// rejected, and why.
type metrics struct {
	received  metric.Int64Counter
	published metric.Int64Counter
	rejected  metric.Int64Counter
	publish   metric.Float64Histogram
}

func newMetrics(m metric.Meter) *metrics {
	// Creation fails only on invalid names; the no-op instruments returned
	// then are safe to use.
	received, _ := m.Int64Counter("ingest.events.received", metric.WithDescription("Events decoded from requests, by type"))
	published, _ := m.Int64Counter("ingest.events.published", metric.WithDescription("Events confirmed published to Pub/Sub, by type and account"))
	rejected, _ := m.Int64Counter("ingest.events.rejected", metric.WithDescription("Requests or events refused, by HTTP status and reason"))
	publish, _ := m.Float64Histogram("ingest.publish.duration", metric.WithUnit("s"), metric.WithDescription("Time from publish to Pub/Sub's confirmation"))
	return &metrics{received: received, published: published, rejected: rejected, publish: publish}
}

func (m *metrics) reject(ctx context.Context, status int, reason string) {
	m.rejected.Add(ctx, 1, metric.WithAttributes(attribute.Int("http.response.status_code", status), attribute.String("reason", reason)))
}

// typeLabel is an event's type as a metric attribute: the caller's value
// only when it is one of Segment's types, so that a caller cannot make up
// new time series.
func typeLabel(t segment.Type) string {
	if t.Known() {
		return string(t)
	}
	return "unknown"
}
