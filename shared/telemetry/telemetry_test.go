package telemetry

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/startdeliver/segment-destination/shared/telemetry/telemetrytest"
)

// Setup installs globals, so these tests do not run in parallel.

const callerTraceparent = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

// resetGlobals puts back a propagator that propagates nothing, so a test
// sees only what Setup installs.
func resetGlobals(t *testing.T) {
	t.Helper()
	otel.SetTextMapPropagator(propagation.NewCompositeTextMapPropagator())
}

func TestSetupPropagatesWithNoExporter(t *testing.T) {
	resetGlobals(t)
	ctx := context.Background()
	setenv(t, map[string]string{
		"OTEL_TRACES_EXPORTER":  "none",
		"OTEL_METRICS_EXPORTER": "none",
	})
	shutdown, err := Setup(ctx, Config{ServiceName: "ingest"})
	if err != nil {
		t.Fatalf("Setup error: %v", err)
	}
	defer shutdown(ctx)

	// A caller's traceparent arrives on an HTTP request ...
	in := http.Header{}
	in.Set("traceparent", callerTraceparent)
	ctx = otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(in))
	ctx, span := otel.Tracer("test").Start(ctx, "handle")
	defer span.End()

	// ... and its trace id leaves on the next hop, with this span as parent.
	out := Inject(ctx)
	got := out["traceparent"]
	want := "00-4bf92f3577b34da6a3ce929d0e0e4736-" + span.SpanContext().SpanID().String() + "-01"
	if got != want {
		t.Errorf("Inject() traceparent = %q, want %q", got, want)
	}
	if span.SpanContext().SpanID().String() == "00f067aa0ba902b7" {
		t.Errorf("span id = caller's span id, want a new span")
	}
}

func TestSetupSDKDisabledStillPropagates(t *testing.T) {
	resetGlobals(t)
	ctx := context.Background()
	setenv(t, map[string]string{"OTEL_SDK_DISABLED": "true"})
	shutdown, err := Setup(ctx, Config{ServiceName: "deliver"})
	if err != nil {
		t.Fatalf("Setup error: %v", err)
	}
	defer shutdown(ctx)
	ctx = Extract(ctx, map[string]string{"traceparent": callerTraceparent})
	if got := Inject(ctx)["traceparent"]; got != callerTraceparent {
		t.Errorf("Inject(Extract(%q)) = %q, want it unchanged", callerTraceparent, got)
	}
}

func TestSetupRejectsBadEnv(t *testing.T) {
	for _, e := range []map[string]string{
		{"OTEL_TRACES_EXPORTER": "zipkin"},
		{"OTEL_TRACES_EXPORTER": "jaeger"},
		{"OTEL_METRICS_EXPORTER": "statsd"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"},
		{"OTEL_TRACES_SAMPLER": "sometimes"},
		{"OTEL_RESOURCE_ATTRIBUTES": "x"}, // not key=value
		{"TRACE_HONOR_CALLER_SAMPLED": "maybe"},
	} {
		resetGlobals(t)
		setenv(t, e)
		shutdown, err := Setup(context.Background(), Config{ServiceName: "ingest", Edge: true})
		if err == nil {
			shutdown(context.Background())
			t.Errorf("Setup(%v) succeeded, want error", e)
		}
		// The propagator is installed even when Setup fails.
		ctx := Extract(context.Background(), map[string]string{"traceparent": callerTraceparent})
		if !trace.SpanContextFromContext(ctx).IsValid() {
			t.Errorf("after Setup(%v) failed, no propagator extracts traceparent", e)
		}
	}
}

func TestShutdownFlushes(t *testing.T) {
	resetGlobals(t)
	ctx := context.Background()
	// InMemoryExporter forgets its spans when shut down; keep them to see
	// what Shutdown flushed.
	exp := keepOnShutdown{tracetest.NewInMemoryExporter()}
	reader := sdkmetric.NewManualReader()
	setenv(t, map[string]string{"OTEL_SERVICE_NAME": "deliver-override", "OTEL_RESOURCE_ATTRIBUTES": "service.name=ignored,deployment.environment=test"})
	shutdown, err := Setup(ctx, Config{ServiceName: "deliver", ServiceVersion: "v1.2.3", SpanExporter: exp, MetricReader: reader})
	if err != nil {
		t.Fatalf("Setup error: %v", err)
	}

	ctx, parent := otel.Tracer("test").Start(ctx, "process")
	_, child := otel.Tracer("test").Start(ctx, "startdeliver.call")
	child.End()
	parent.End()

	counter, err := otel.Meter("test").Int64Counter("events.delivered")
	if err != nil {
		t.Fatalf("Int64Counter error: %v", err)
	}
	counter.Add(ctx, 2, metric.WithAttributes(attribute.String("type", "track")))
	var rm metricdata.ResourceMetrics
	if err := reader.Collect(ctx, &rm); err != nil {
		t.Fatalf("Collect error: %v", err)
	}
	if got := telemetrytest.Sums(rm, "events.delivered")[""]; got != 2 {
		t.Errorf("events.delivered = %d, want 2", got)
	}

	if err := shutdown(ctx); err != nil {
		t.Fatalf("Shutdown error: %v", err)
	}
	spans := exp.GetSpans()
	var names []string
	for _, s := range spans {
		names = append(names, s.Name)
	}
	if diff := cmp.Diff([]string{"startdeliver.call", "process"}, names); diff != "" {
		t.Fatalf("exported spans after Shutdown mismatch (-want +got):\n%s", diff)
	}
	if got, want := spans[0].Parent.SpanID(), spans[1].SpanContext.SpanID(); got != want {
		t.Errorf("child parent span id = %s, want %s", got, want)
	}

	res := map[string]string{}
	for _, kv := range spans[0].Resource.Attributes() {
		res[string(kv.Key)] = kv.Value.Emit()
	}
	for k, want := range map[string]string{
		"service.name":           "deliver-override",
		"service.version":        "v1.2.3",
		"deployment.environment": "test",
	} {
		if res[k] != want {
			t.Errorf("resource %s = %q, want %q", k, res[k], want)
		}
	}
	if res["service.instance.id"] == "" {
		t.Errorf("resource service.instance.id is empty, want a unique id")
	}
	if _, ok := res["faas.name"]; ok {
		t.Errorf("resource has faas.name outside Cloud Run")
	}

	// A second Shutdown is harmless.
	if err := shutdown(ctx); err != nil {
		t.Errorf("second Shutdown error: %v", err)
	}
}

func TestResourceOnCloudRun(t *testing.T) {
	setenv(t, map[string]string{
		"GOOGLE_CLOUD_PROJECT": "proj",
		"K_SERVICE":            "segment-ingest",
		"K_REVISION":           "segment-ingest-00042-abc",
		"K_CONFIGURATION":      "segment-ingest",
	})
	res, err := newResource(context.Background(), Config{ServiceName: "ingest"})
	if err != nil {
		t.Fatalf("newResource error: %v", err)
	}
	got := map[string]string{}
	for _, kv := range res.Attributes() {
		got[string(kv.Key)] = kv.Value.Emit()
	}
	for k, want := range map[string]string{
		"service.name":                "ingest",
		"cloud.provider":              "gcp",
		"cloud.platform":              "gcp_cloud_run",
		"cloud.account.id":            "proj",
		"faas.name":                   "segment-ingest",
		"faas.version":                "segment-ingest-00042-abc",
		"gcp.cloud_run.configuration": "segment-ingest",
	} {
		if got[k] != want {
			t.Errorf("resource %s = %q, want %q", k, got[k], want)
		}
	}
}

// TestConsoleFile checks that the console exporter appends one JSON span
// per line to OTEL_CONSOLE_FILE and that two processes can share it.
func TestConsoleFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "traces.jsonl")
	ctx := context.Background()
	for _, svc := range []string{"ingest", "deliver"} {
		resetGlobals(t)
		setenv(t, map[string]string{
			"OTEL_TRACES_EXPORTER":  "console",
			"OTEL_CONSOLE_FILE":     path,
			"OTEL_METRICS_EXPORTER": "none",
		})
		shutdown, err := Setup(ctx, Config{ServiceName: svc})
		if err != nil {
			t.Fatalf("Setup(%s) error: %v", svc, err)
		}
		_, span := otel.Tracer("test").Start(ctx, svc+".work")
		span.End()
		if err := shutdown(ctx); err != nil {
			t.Fatalf("Shutdown error: %v", err)
		}
	}

	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var names []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		var s struct{ Name string }
		if err := json.Unmarshal(sc.Bytes(), &s); err != nil {
			t.Fatalf("line %q is not JSON: %v", sc.Text(), err)
		}
		names = append(names, s.Name)
	}
	if diff := cmp.Diff([]string{"ingest.work", "deliver.work"}, names); diff != "" {
		t.Errorf("spans in console file mismatch (-want +got):\n%s", diff)
	}
}

func TestInjectExtractRoundTrip(t *testing.T) {
	resetGlobals(t)
	ctx := context.Background()
	exp := tracetest.NewInMemoryExporter()
	setenv(t, nil)
	shutdown, err := Setup(ctx, Config{ServiceName: "ingest", SpanExporter: exp})
	if err != nil {
		t.Fatalf("Setup error: %v", err)
	}
	defer shutdown(ctx)

	pubCtx, span := otel.Tracer("test").Start(ctx, "publish")
	carrier := Inject(pubCtx)
	span.End()

	got := trace.SpanContextFromContext(Extract(ctx, carrier))
	if !got.IsRemote() || got.TraceID() != span.SpanContext().TraceID() || got.SpanID() != span.SpanContext().SpanID() {
		t.Errorf("Extract(Inject()) = %v, want remote span context of %v", got, span.SpanContext())
	}
	if got := Extract(ctx, nil); got != ctx {
		t.Errorf("Extract(ctx, nil) returned a different context")
	}
}

// keepOnShutdown is an in-memory exporter whose spans survive Shutdown.
type keepOnShutdown struct{ *tracetest.InMemoryExporter }

func (keepOnShutdown) Shutdown(context.Context) error { return nil }

// TestOTLPHTTPExports checks that an OTLP endpoint in the environment makes
// Setup export spans and metrics there over http/protobuf.
func TestOTLPHTTPExports(t *testing.T) {
	var mu sync.Mutex
	paths := map[string]int{}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		paths[r.Method+" "+r.URL.Path]++
		mu.Unlock()
		w.Header().Set("Content-Type", "application/x-protobuf")
	}))
	defer srv.Close()
	setenv(t, map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": srv.URL})

	resetGlobals(t)
	ctx := context.Background()
	shutdown, err := Setup(ctx, Config{ServiceName: "ingest"})
	if err != nil {
		t.Fatalf("Setup error: %v", err)
	}
	_, span := otel.Tracer("test").Start(ctx, "publish")
	span.End()
	c, err := otel.Meter("test").Int64Counter("events.published")
	if err != nil {
		t.Fatalf("Int64Counter error: %v", err)
	}
	c.Add(ctx, 1)
	if err := shutdown(ctx); err != nil {
		t.Fatalf("Shutdown error: %v", err)
	}
	mu.Lock()
	defer mu.Unlock()
	for _, p := range []string{"POST /v1/traces", "POST /v1/metrics"} {
		if paths[p] == 0 {
			t.Errorf("collector got no %s, got %v", p, paths)
		}
	}
}
