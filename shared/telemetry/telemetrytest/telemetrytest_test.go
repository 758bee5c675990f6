package telemetrytest

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
)

func TestMetrics(t *testing.T) {
	before := otel.GetMeterProvider()
	t.Run("recording", func(t *testing.T) {
		m := Metrics(t)
		ctx := context.Background()
		c, _ := otel.Meter("test").Int64Counter("events")
		c.Add(ctx, 2, metric.WithAttributes(attribute.String("outcome", "delivered"), attribute.String("type", "track")))
		c.Add(ctx, 1, metric.WithAttributes(attribute.String("outcome", "skipped"), attribute.String("type", "track")))
		c.Add(ctx, 4, metric.WithAttributes(attribute.String("outcome", "delivered")))
		h, _ := otel.Meter("test").Float64Histogram("latency")
		h.Record(ctx, 0.5)
		h.Record(ctx, 1.5)
		for _, tt := range []struct {
			keys []string
			want map[string]int64
		}{
			{nil, map[string]int64{"": 7}},
			{[]string{"outcome"}, map[string]int64{"delivered": 6, "skipped": 1}},
			{[]string{"outcome", "type"}, map[string]int64{"delivered/track": 2, "skipped/track": 1, "delivered/": 4}},
		} {
			if diff := cmp.Diff(tt.want, m.Sums("events", tt.keys...)); diff != "" {
				t.Errorf("Sums(events, %q) (-want +got):\n%s", tt.keys, diff)
			}
		}
		if got := m.Sums("absent"); len(got) != 0 {
			t.Errorf("Sums(absent) = %v, want none", got)
		}
		if got := m.HistogramCount("latency"); got != 2 {
			t.Errorf("HistogramCount(latency) = %d, want 2", got)
		}
	})
	if otel.GetMeterProvider() != before {
		t.Errorf("the meter provider was not put back after the test")
	}
}
