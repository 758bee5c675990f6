package startdeliver_test

import (
	"context"
	"fmt"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/plan"
)

// TestCallLatencyAndStatusByRoute: every attempt is one client span and one
// http.client.request.duration measurement, both named by the route
// template (never the id) and the answer's status.
func TestCallLatencyAndStatusByRoute(t *testing.T) {
	reader := sdkmetric.NewManualReader()
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader))
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	c, srv, acct := newTestClient(t, startdeliver.Options{TracerProvider: tp, MeterProvider: mp})
	ctx := context.Background()

	id := srv.AddUser(testKey, map[string]any{"a": 1})
	if _, err := c.Find(ctx, acct, startdeliver.KindUser, plan.Match{Field: "a", Value: 1}); err != nil {
		t.Fatalf("Find = %v", err)
	}
	srv.FailNext(1, startdelivertest.Fault{Status: 503, Route: "PATCH /user/{id}"})
	if _, err := c.Update(ctx, acct, startdeliver.KindUser, id, startdeliver.Fields{"a": 2}); err != nil {
		t.Fatalf("Update = %v", err)
	}
	if _, err := c.Update(ctx, acct, startdeliver.KindUser, id+1000, startdeliver.Fields{}); err == nil {
		t.Fatal("Update of a missing user = nil error, want 404")
	}

	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatal(err)
	}
	calls := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			h, ok := m.Data.(metricdata.Histogram[float64])
			if m.Name != "http.client.request.duration" || !ok {
				continue
			}
			for _, dp := range h.DataPoints {
				method, _ := dp.Attributes.Value("http.request.method")
				tmpl, _ := dp.Attributes.Value("url.template")
				status, _ := dp.Attributes.Value("http.response.status_code")
				calls[fmt.Sprintf("%s %s %d", method.AsString(), tmpl.AsString(), status.AsInt64())] += dp.Count
			}
		}
	}
	want := map[string]uint64{
		"GET /user 200":        1,
		"PATCH /user/{id} 404": 1,
		"PATCH /user/{id} 503": 1,
		"PATCH /user/{id} 200": 1,
	}
	if diff := cmp.Diff(want, calls); diff != "" {
		t.Errorf("http.client.request.duration counts by method, url.template and status (-want +got):\n%s", diff)
	}

	spans := map[string]int{}
	for _, s := range rec.Ended() {
		tmpl, status := "", int64(0)
		for _, a := range s.Attributes() {
			switch a.Key {
			case "url.template":
				tmpl = a.Value.AsString()
			case "http.response.status_code":
				status = a.Value.AsInt64()
			}
		}
		spans[fmt.Sprintf("%s|%s %d", s.Name(), tmpl, status)]++
	}
	wantSpans := map[string]int{
		"GET /user|/user 200":             1,
		"PATCH /user/{id}|/user/{id} 404": 1,
		"PATCH /user/{id}|/user/{id} 503": 1,
		"PATCH /user/{id}|/user/{id} 200": 1,
	}
	if diff := cmp.Diff(wantSpans, spans); diff != "" {
		t.Errorf("client spans as name|url.template status (-want +got):\n%s", diff)
	}
}
