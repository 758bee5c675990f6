package receive

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestMetrics counts events received (by type), published and rejected by
// reason.
func TestMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	t.Cleanup(func() { otel.SetMeterProvider(prev) })

	h := newTestHandler(&fakePublisher{})
	auth := map[string]string{"Authorization": basic(goodKey)}
	req{path: "/", body: track, header: auth}.do(t, h)
	req{path: "/", body: track, header: auth}.do(t, h)
	req{path: "/", body: `{"type":"track","userId":"u"}`, header: auth}.do(t, h)
	req{path: "/", body: track, header: map[string]string{"Authorization": basic("nope")}}.do(t, h)
	req{path: "/", body: `{"type":"made-up-1","userId":"u","messageId":"x"}`, header: auth}.do(t, h)

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	sums := map[string]int64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if s, ok := m.Data.(metricdata.Sum[int64]); ok {
				for _, dp := range s.DataPoints {
					name := m.Name
					if r, ok := dp.Attributes.Value("reason"); ok {
						name += "/" + r.AsString()
					}
					if typ, ok := dp.Attributes.Value("type"); ok && m.Name == "ingest.events.received" {
						sums[name+"{type="+typ.AsString()+"}"] += dp.Value
					}
					sums[name] += dp.Value
				}
			}
		}
	}
	want := map[string]int64{
		"ingest.events.received":                 4,
		"ingest.events.received{type=track}":     3,
		"ingest.events.received{type=unknown}":   1, // a made-up type is not a new series
		"ingest.events.published":                2,
		"ingest.events.rejected/invalid":         2,
		"ingest.events.rejected/unauthenticated": 1,
	}
	for k, v := range want {
		if sums[k] != v {
			t.Errorf("%s = %d, want %d (all: %v)", k, sums[k], v, sums)
		}
	}
}
