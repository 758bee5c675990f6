package delivery

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// TestOutcomeMetrics counts deliver.events by outcome, and config lookups
// by source and result.
func TestOutcomeMetrics(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	t.Cleanup(func() { otel.SetMeterProvider(prev) })

	f := newFixture(t, simple)
	ctx := context.Background()
	f.p.Process(ctx, message(t, `{"type":"track","userId":"u1","event":"e","messageId":"a"}`))
	f.p.Process(ctx, message(t, `{"type":"track","userId":"u1","event":"e","messageId":"a"}`))
	f.p.Process(ctx, message(t, `{"type":"alias","userId":"u1","previousId":"p","messageId":"b"}`))
	f.p.Process(ctx, message(t, `{"type":"track","anonymousId":"x","event":"e","messageId":"c"}`))
	f.acc.entries = nil
	f.p.Process(ctx, message(t, `{"type":"track","userId":"u1","event":"e","messageId":"d"}`))

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	got := map[string]int64{}
	lookups := map[string]int64{}
	var e2e uint64
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			switch d := m.Data.(type) {
			case metricdata.Sum[int64]:
				for _, dp := range d.DataPoints {
					switch m.Name {
					case "deliver.events":
						o, _ := dp.Attributes.Value("outcome")
						got[o.AsString()] += dp.Value
					case "deliver.config.lookups":
						s, _ := dp.Attributes.Value("source")
						r, _ := dp.Attributes.Value("result")
						lookups[s.AsString()+"/"+r.AsString()] += dp.Value
					}
				}
			case metricdata.Histogram[float64]:
				if m.Name == "deliver.end_to_end.duration" {
					for _, dp := range d.DataPoints {
						e2e += dp.Count
					}
				}
			}
		}
	}
	// The anonymous track is skipped (class anonymous), not dead-lettered.
	want := map[string]int64{OutcomeDelivered: 1, OutcomeDuplicate: 1, OutcomeSkipped: 2, OutcomeDeadLettered: 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("deliver.events{outcome=%s} = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	// The duplicate is caught before the lookup; the fake store answers
	// found entries from its cache and reads unknown ones.
	if diff := cmp.Diff(map[string]int64{"cache/found": 3, "firestore/unknown": 1}, lookups); diff != "" {
		t.Errorf("deliver.config.lookups by source/result (-want +got):\n%s", diff)
	}
	if e2e != 1 {
		t.Errorf("end-to-end latency recorded %d times, want 1 (the delivered event)", e2e)
	}
}
