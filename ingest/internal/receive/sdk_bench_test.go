package receive

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"strings"
	"testing"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"

	"github.com/startdeliver/segment-destination/shared/telemetry"
)

// deployedHandler is ingest's handler as main builds it, less the network:
// the OpenTelemetry SDKs recording every span and metric (export off, as in
// scripts/bench.sh), the server span of telemetry.Server (or, with
// library, otelhttp's), API keys sealed, and a publisher that confirms at
// once. It restores the global providers when the benchmark ends.
func deployedHandler(b *testing.B, library bool) http.Handler {
	prevT, prevM, prevP := otel.GetTracerProvider(), otel.GetMeterProvider(), otel.GetTextMapPropagator()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSampler(sdktrace.AlwaysSample()))
	mp := sdkmetric.NewMeterProvider(sdkmetric.WithReader(sdkmetric.NewManualReader()))
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)
	otel.SetTextMapPropagator(propagation.TraceContext{})
	b.Cleanup(func() {
		otel.SetTracerProvider(prevT)
		otel.SetMeterProvider(prevM)
		otel.SetTextMapPropagator(prevP)
	})
	h := New(Options{Publisher: noopPublisher{}, Accounts: fakeAccounts{}, Sealer: testSealer, Topic: "segment-events"})
	if library {
		return otelhttp.NewHandler(h, "ingest")
	}
	return telemetry.Server(h, telemetry.ServerOptions{})
}

// BenchmarkDeployed is ingest's own CPU per event as deployed (see
// deployedHandler) for one event at POST / and for a /v1/batch of 100, each
// against the same baseline as BenchmarkHandler in the same run: decoding
// the same bytes into maps with encoding/json ("x-baseline" is the ratio).
func BenchmarkDeployed(b *testing.B) {
	data, err := os.ReadFile("../../../scripts/bench/track.json")
	if err != nil {
		b.Fatal(err)
	}
	template := strings.TrimSpace(string(data))
	events := make([]string, 100)
	for i := range events {
		events[i] = strings.Replace(template, "USERID", fmt.Sprint("user-", i), 1)
	}
	single := events[0]
	batch := `{"batch":[` + strings.Join(events, ",") + `]}`
	for _, c := range []struct {
		name, path, body string
		events           int
	}{
		{"single", "/", single, 1},
		{"batch-100", "/v1/batch", batch, 100},
	} {
		var base float64
		b.Run(c.name+"/baseline-decode", func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := decodeLikeB([]byte(c.body)); err != nil {
					b.Fatal(err)
				}
			}
			base = float64(b.Elapsed().Nanoseconds()) / float64(b.N*c.events)
			b.ReportMetric(base, "ns/event")
		})
		for _, v := range []struct {
			name    string
			library bool
		}{{"ingest", false}, {"ingest-otelhttp", true}} {
			b.Run(c.name+"/"+v.name, func(b *testing.B) {
				h := deployedHandler(b, v.library)
				b.ReportAllocs()
				for b.Loop() {
					postOK(b, h, c.path, c.body)
				}
				per := float64(b.Elapsed().Nanoseconds()) / float64(b.N*c.events)
				b.ReportMetric(per, "ns/event")
				if base > 0 {
					b.ReportMetric(per/base, "x-baseline")
				}
			})
		}
	}
}

// decodeLikeB decodes a body as the bench's floor B does
// (scripts/bench/baseline): encoding/json into a map, a batch's events
// taken from it.
func decodeLikeB(body []byte) ([]map[string]any, error) {
	var v map[string]any
	if err := json.Unmarshal(body, &v); err != nil {
		return nil, err
	}
	if b, ok := v["batch"].([]any); ok {
		out := make([]map[string]any, 0, len(b))
		for _, e := range b {
			if m, ok := e.(map[string]any); ok {
				out = append(out, m)
			}
		}
		return out, nil
	}
	return []map[string]any{v}, nil
}
