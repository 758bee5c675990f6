package telemetry

import (
	"context"
	"net/http"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/baggage"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// callerRequest is ctx as ingest's HTTP server sees a request that carries
// traceparent (with the given flags), tracestate and baggage headers.
func callerRequest(ctx context.Context, flags string) context.Context {
	h := http.Header{}
	h.Set("traceparent", "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-"+flags)
	h.Set("tracestate", "vendor=opaque")
	h.Set("baggage", "userId=alice,apiKey=sd-secret")
	return otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(h))
}

// TestEdgeSampling: at the edge (ingest) whether a request is sampled is
// the service's decision; a caller's sampled flag raises it only with
// TRACE_HONOR_CALLER_SAMPLED=true and never lowers it. Elsewhere (deliver)
// a remote parent, ingest's span, decides as parent-based sampling says.
func TestEdgeSampling(t *testing.T) {
	ratio0 := map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0"}
	with := func(m map[string]string, k, v string) map[string]string {
		out := map[string]string{k: v}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	tests := []struct {
		name  string
		env   map[string]string
		edge  bool
		flags string // the caller's trace flags; "" for no caller
		want  bool
	}{
		{"edge: an unsampled caller does not lower the default", nil, true, "00", true},
		{"edge: a sampled caller does not force a ratio of 0", ratio0, true, "01", false},
		{"edge: honoured, a sampled caller raises it", with(ratio0, "TRACE_HONOR_CALLER_SAMPLED", "true"), true, "01", true},
		{"edge: honoured, an unsampled caller does not lower it", with(nil, "TRACE_HONOR_CALLER_SAMPLED", "true"), true, "00", true},
		{"edge: honoured, over parentbased_always_off", map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_always_off", "TRACE_HONOR_CALLER_SAMPLED": "true"}, true, "01", true},
		{"edge: no caller, the ratio decides", ratio0, true, "", false},
		{"deliver: a sampled remote parent decides", ratio0, false, "01", true},
		{"deliver: an unsampled remote parent decides", nil, false, "00", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resetGlobals(t)
			setenv(t, tt.env)
			ctx := context.Background()
			shutdown, err := Setup(ctx, Config{ServiceName: "ingest", Edge: tt.edge, SpanExporter: tracetest.NewInMemoryExporter()})
			if err != nil {
				t.Fatalf("Setup error: %v", err)
			}
			defer shutdown(ctx)
			if tt.flags != "" {
				ctx = callerRequest(ctx, tt.flags)
			}
			ctx, span := otel.Tracer("test").Start(ctx, "POST /", trace.WithSpanKind(trace.SpanKindServer))
			_, child := otel.Tracer("test").Start(ctx, "publish")
			defer span.End()
			defer child.End()
			sc := span.SpanContext()
			if sc.IsSampled() != tt.want {
				t.Errorf("server span sampled = %t, want %t", sc.IsSampled(), tt.want)
			}
			if child.SpanContext().IsSampled() != sc.IsSampled() {
				t.Errorf("child sampled = %t, want its parent's %t", child.SpanContext().IsSampled(), sc.IsSampled())
			}
			if tt.flags == "" {
				return
			}
			// The caller's trace goes on, sampled or not.
			if got := sc.TraceID().String(); got != "4bf92f3577b34da6a3ce929d0e0e4736" {
				t.Errorf("trace id = %s, want the caller's", got)
			}
			if got := sc.TraceState().String(); got != "vendor=opaque" {
				t.Errorf("tracestate = %q, want the caller's %q", got, "vendor=opaque")
			}
			if got := Inject(ctx)["traceparent"]; got != "00-4bf92f3577b34da6a3ce929d0e0e4736-"+sc.SpanID().String()+"-"+sc.TraceFlags().String() {
				t.Errorf("outbound traceparent = %q, want the caller's trace with this span", got)
			}
		})
	}
}

// TestEdgeSamplingIgnoresCallerTraceID: TraceIDRatioBased reads the trace
// id, which a caller chooses; at the edge the ratio applies to the
// service's own draw, so a trace id that the ratio always samples does not
// make every request sampled.
func TestEdgeSamplingIgnoresCallerTraceID(t *testing.T) {
	resetGlobals(t)
	setenv(t, map[string]string{"OTEL_TRACES_SAMPLER": "parentbased_traceidratio", "OTEL_TRACES_SAMPLER_ARG": "0.5"})
	ctx := context.Background()
	shutdown, err := Setup(ctx, Config{ServiceName: "ingest", Edge: true, SpanExporter: tracetest.NewInMemoryExporter()})
	if err != nil {
		t.Fatalf("Setup error: %v", err)
	}
	defer shutdown(ctx)
	h := http.Header{}
	h.Set("traceparent", "00-ffffffffffffffff0000000000000000-00f067aa0ba902b7-00") // always under the ratio's bound
	caller := otel.GetTextMapPropagator().Extract(ctx, propagation.HeaderCarrier(h))
	sampled := 0
	const n = 64
	for range n {
		_, span := otel.Tracer("test").Start(caller, "POST /")
		if span.SpanContext().IsSampled() {
			sampled++
		}
		span.End()
	}
	if sampled == 0 || sampled == n {
		t.Errorf("%d of %d requests with one chosen trace id sampled at ratio 0.5, want some and not all", sampled, n)
	}
}

// TestNoBaggage: only traceparent and tracestate are taken from a caller;
// a caller's baggage is neither in the context nor passed on.
func TestNoBaggage(t *testing.T) {
	for _, edge := range []bool{true, false} {
		resetGlobals(t)
		setenv(t, nil)
		ctx := context.Background()
		shutdown, err := Setup(ctx, Config{ServiceName: "ingest", Edge: edge})
		if err != nil {
			t.Fatalf("Setup error: %v", err)
		}
		ctx = callerRequest(ctx, "01")
		if b := baggage.FromContext(ctx); b.Len() != 0 {
			t.Errorf("Edge=%t: caller's baggage extracted: %v", edge, b)
		}
		ctx, span := otel.Tracer("test").Start(ctx, "POST /")
		out := Inject(ctx)
		if _, ok := out["baggage"]; ok {
			t.Errorf("Edge=%t: Inject() = %v, want no baggage", edge, out)
		}
		if out["traceparent"] == "" || out["tracestate"] != "vendor=opaque" {
			t.Errorf("Edge=%t: Inject() = %v, want traceparent and the caller's tracestate", edge, out)
		}
		h := http.Header{}
		otel.GetTextMapPropagator().Inject(ctx, propagation.HeaderCarrier(h))
		if h.Get("baggage") != "" {
			t.Errorf("Edge=%t: outbound headers %v carry baggage", edge, h)
		}
		span.End()
		shutdown(ctx)
	}
}
