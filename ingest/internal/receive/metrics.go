package receive

import (
	"context"
	"sync"
	"sync/atomic"

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

	// Attribute sets built once instead of per event: by type label, and
	// by type and account (authenticated accounts only, so bounded by the
	// accounts that exist; past maxAttrSets new ones are built per call).
	// Each is kept as the option slice Add takes, so that a call does not
	// allocate one.
	byType    map[string][]metric.AddOption
	byAccount sync.Map // typeAccount -> []metric.AddOption
	nAccount  atomic.Int64
}

// maxAttrSets bounds the cached (type, account) attribute sets.
const maxAttrSets = 10_000

type typeAccount struct{ typ, account string }

func newMetrics(m metric.Meter) *metrics {
	// Creation fails only on invalid names; the no-op instruments returned
	// then are safe to use.
	received, _ := m.Int64Counter("ingest.events.received", metric.WithDescription("Events decoded from requests, by type"))
	published, _ := m.Int64Counter("ingest.events.published", metric.WithDescription("Events confirmed published to Pub/Sub, by type and account"))
	rejected, _ := m.Int64Counter("ingest.events.rejected", metric.WithDescription("Requests or events refused, by HTTP status and reason"))
	publish, _ := m.Float64Histogram("ingest.publish.duration", metric.WithUnit("s"), metric.WithDescription("Time from publish to Pub/Sub's confirmation"))
	byType := map[string][]metric.AddOption{}
	for _, t := range []segment.Type{segment.TypeIdentify, segment.TypeTrack, segment.TypePage, segment.TypeScreen, segment.TypeGroup, segment.TypeAlias, "unknown"} {
		byType[string(t)] = []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("type", string(t))))}
	}
	return &metrics{received: received, published: published, rejected: rejected, publish: publish, byType: byType}
}

// receivedEvent counts one event decoded, by its type label.
func (m *metrics) receivedEvent(ctx context.Context, t segment.Type) {
	m.received.Add(ctx, 1, m.byType[typeLabel(t)]...)
}

// publishedEvent counts one event confirmed published, by type and account.
func (m *metrics) publishedEvent(ctx context.Context, t segment.Type, account string) {
	k := typeAccount{string(t), account}
	if o, ok := m.byAccount.Load(k); ok {
		m.published.Add(ctx, 1, o.([]metric.AddOption)...)
		return
	}
	o := []metric.AddOption{metric.WithAttributeSet(attribute.NewSet(attribute.String("type", k.typ), attribute.String("account", account)))}
	if m.nAccount.Load() < maxAttrSets {
		if _, loaded := m.byAccount.LoadOrStore(k, o); !loaded {
			m.nAccount.Add(1)
		}
	}
	m.published.Add(ctx, 1, o...)
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
