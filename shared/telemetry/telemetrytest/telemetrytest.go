// Package telemetrytest reads what code under test reports through the
// global OpenTelemetry meter provider, for tests of metrics.
package telemetrytest

import (
	"context"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
)

// Reader collects the metrics recorded since Metrics installed it.
type Reader struct {
	t      testing.TB
	reader *sdkmetric.ManualReader
}

// Metrics installs a meter provider with a manual reader as the global one
// until the test ends, when the previous one is put back. Tests that call
// it do not run in parallel with others that record metrics.
func Metrics(t testing.TB) *Reader {
	t.Helper()
	r := &Reader{t: t, reader: sdkmetric.NewManualReader()}
	prev := otel.GetMeterProvider()
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(r.reader)))
	t.Cleanup(func() { otel.SetMeterProvider(prev) })
	return r
}

// Collect is everything recorded so far (cumulative).
func (r *Reader) Collect() metricdata.ResourceMetrics {
	r.t.Helper()
	var rm metricdata.ResourceMetrics
	if err := r.reader.Collect(context.Background(), &rm); err != nil {
		r.t.Fatalf("collect metrics: %v", err)
	}
	return rm
}

// Sums is Sums of what Collect returns.
func (r *Reader) Sums(name string, keys ...string) map[string]int64 {
	r.t.Helper()
	return Sums(r.Collect(), name, keys...)
}

// HistogramCount is how many values the float64 histogram name recorded.
func (r *Reader) HistogramCount(name string) uint64 {
	r.t.Helper()
	var n uint64
	for m := range metrics(r.Collect(), name) {
		if h, ok := m.Data.(metricdata.Histogram[float64]); ok {
			for _, dp := range h.DataPoints {
				n += dp.Count
			}
		}
	}
	return n
}

// Sums totals the int64 sum name by the values of the attributes keys,
// joined with "/" ("outcome" gives {"delivered": 1, …}; "source", "result"
// gives {"cache/found": 3, …}; no keys gives {"": total}). A data point
// without one of the keys counts under an empty value.
func Sums(rm metricdata.ResourceMetrics, name string, keys ...string) map[string]int64 {
	out := map[string]int64{}
	for m := range metrics(rm, name) {
		s, ok := m.Data.(metricdata.Sum[int64])
		if !ok {
			continue
		}
		for _, dp := range s.DataPoints {
			vals := make([]string, len(keys))
			for i, k := range keys {
				if v, ok := dp.Attributes.Value(attribute.Key(k)); ok {
					vals[i] = v.Emit()
				}
			}
			out[strings.Join(vals, "/")] += dp.Value
		}
	}
	return out
}

// metrics yields the metrics called name.
func metrics(rm metricdata.ResourceMetrics, name string) func(yield func(metricdata.Metrics) bool) {
	return func(yield func(metricdata.Metrics) bool) {
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				if m.Name == name && !yield(m) {
					return
				}
			}
		}
	}
}
