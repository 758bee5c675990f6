// Package telemetry sets up OpenTelemetry tracing and metrics, Cloud Logging
// structured logs and trace-context propagation for both services, so that
// one Segment event tells its whole story in one trace.
//
// A service calls [Setup] once at start and the shutdown function it returns
// last when it stops; [NewLogger] builds the slog logger whose lines link to
// the trace of the context they are logged with; [Inject] and [Extract]
// carry the trace context through a Pub/Sub message.
//
// Configuration is OpenTelemetry's own, read from the process environment by
// the SDK and go.opentelemetry.io/contrib/exporters/autoexport:
// OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER (otlp, console, none,
// prometheus for metrics, and gcp, registered here: Cloud Trace and Cloud
// Monitoring), the OTEL_EXPORTER_OTLP_* variables, OTEL_SERVICE_NAME,
// OTEL_RESOURCE_ATTRIBUTES, OTEL_BSP_*, OTEL_METRIC_EXPORT_INTERVAL,
// OTEL_TRACES_SAMPLER and OTEL_TRACES_SAMPLER_ARG. This package adds only:
//
//   - no exporter is named: otlp when an OTLP endpoint is set, gcp on Cloud
//     Run (K_SERVICE), else none (rather than OTLP to a collector that is
//     not there);
//   - OTEL_SDK_DISABLED=true exports nothing;
//   - console with OTEL_CONSOLE_FILE (traces) or OTEL_CONSOLE_METRICS_FILE
//     appends JSON lines to that file, which several processes may share
//     (deliver/cmd/tracetree reads it);
//   - the resource carries a unique service.instance.id, the project
//     (GOOGLE_CLOUD_PROJECT) and Cloud Run's K_SERVICE, K_REVISION and
//     K_CONFIGURATION;
//   - at the edge (Config.Edge), sampling is this service's decision
//     (edgeSampler), and TRACE_HONOR_CALLER_SAMPLED=true lets a caller's
//     sampled flag raise it.
//
// Only W3C trace context (traceparent, tracestate) propagates, whatever the
// exporter: no baggage, so nothing a caller puts in one reaches Startdeliver.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"

	mexporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/metric"
	texporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/trace"
	"github.com/google/uuid"
	"go.opentelemetry.io/contrib/exporters/autoexport"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Config is what a service tells Setup about itself.
type Config struct {
	// ServiceName is service.name unless OTEL_SERVICE_NAME is set.
	ServiceName string
	// ServiceVersion is service.version, for example the build's commit.
	ServiceVersion string
	// Edge marks a service whose requests come from outside (ingest): a
	// remote parent is a caller, who does not decide whether the request is
	// sampled.
	Edge bool
	// SpanExporter and MetricReader, when set, replace what the environment
	// asks for (tests pass in-memory ones; spans are batched as in
	// production, so shut down before reading).
	SpanExporter sdktrace.SpanExporter
	MetricReader sdkmetric.Reader
}

var registerGCP sync.Once

// Setup installs the propagator, a tracer provider and a meter provider
// globally. The propagator is installed first and always, so trace context
// propagates even when Setup fails or nothing is exported.
//
// shutdown flushes and stops the exporters and closes their files; call it
// last, after the work that makes spans has stopped. Calls after the first
// return the first call's result.
func Setup(ctx context.Context, cfg Config) (shutdown func(context.Context) error, err error) {
	otel.SetTextMapPropagator(propagation.TraceContext{})
	registerGCP.Do(func() {
		autoexport.RegisterSpanExporter("gcp", gcpSpanExporter)
		autoexport.RegisterMetricReader("gcp", gcpMetricReader)
	})
	sampler, root, err := samplerFromEnv()
	if err == nil && cfg.Edge {
		sampler, err = newEdgeSampler(sampler, root)
	}
	var res *resource.Resource
	if err == nil {
		res, err = newResource(ctx, cfg)
	}
	off := strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true")
	var files []*os.File
	exp, reader := cfg.SpanExporter, cfg.MetricReader
	if err == nil && exp == nil && !off {
		exp, err = spanExporter(ctx, &files)
	}
	if err == nil && reader == nil && !off {
		if reader, err = metricReader(ctx, &files); err != nil && exp != nil && cfg.SpanExporter == nil {
			_ = exp.Shutdown(ctx)
		}
	}
	if err != nil {
		for _, f := range files {
			_ = f.Close()
		}
		return nil, fmt.Errorf("telemetry setup: %w", err)
	}

	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sampler)}
	if exp != nil {
		topts = append(topts, sdktrace.WithBatcher(exp))
	}
	mopts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	if reader != nil {
		mopts = append(mopts, sdkmetric.WithReader(reader))
	}
	tp, mp := sdktrace.NewTracerProvider(topts...), sdkmetric.NewMeterProvider(mopts...)
	otel.SetTracerProvider(tp)
	otel.SetMeterProvider(mp)

	var once sync.Once
	var serr error
	return func(ctx context.Context) error {
		once.Do(func() {
			errs := []error{tp.Shutdown(ctx), mp.Shutdown(ctx)}
			for _, f := range files {
				errs = append(errs, f.Close())
			}
			serr = errors.Join(errs...)
		})
		return serr
	}, nil
}

// spanExporter is the exporter OTEL_TRACES_EXPORTER names, or nil for none.
func spanExporter(ctx context.Context, files *[]*os.File) (sdktrace.SpanExporter, error) {
	if f, err := consoleFile("OTEL_TRACES_EXPORTER", "OTEL_CONSOLE_FILE", files); f != nil || err != nil {
		if err != nil {
			return nil, err
		}
		return stdouttrace.New(stdouttrace.WithWriter(f))
	}
	exp, err := autoexport.NewSpanExporter(ctx, autoexport.WithFallbackSpanExporter(func(ctx context.Context) (sdktrace.SpanExporter, error) {
		switch defaultExporter("TRACES") {
		case "otlp":
			return autoexport.NewSpanExporter(ctx) // with no fallback, otlp
		case "gcp":
			return gcpSpanExporter(ctx)
		}
		return nil, nil
	}))
	if err != nil || exp == nil || autoexport.IsNoneSpanExporter(exp) {
		return nil, wrap("OTEL_TRACES_EXPORTER", err)
	}
	return exp, nil
}

// metricReader is the reader OTEL_METRICS_EXPORTER names, or nil for none.
func metricReader(ctx context.Context, files *[]*os.File) (sdkmetric.Reader, error) {
	if f, err := consoleFile("OTEL_METRICS_EXPORTER", "OTEL_CONSOLE_METRICS_FILE", files); f != nil || err != nil {
		if err != nil {
			return nil, err
		}
		exp, err := stdoutmetric.New(stdoutmetric.WithWriter(f))
		return sdkmetric.NewPeriodicReader(exp), err
	}
	r, err := autoexport.NewMetricReader(ctx, autoexport.WithFallbackMetricReader(func(ctx context.Context) (sdkmetric.Reader, error) {
		switch defaultExporter("METRICS") {
		case "otlp":
			return autoexport.NewMetricReader(ctx)
		case "gcp":
			return gcpMetricReader(ctx)
		}
		return nil, nil
	}))
	if err != nil || r == nil || autoexport.IsNoneMetricReader(r) {
		return nil, wrap("OTEL_METRICS_EXPORTER", err)
	}
	return r, nil
}

func wrap(name string, err error) error {
	if err != nil {
		return fmt.Errorf("%s: %w", name, err)
	}
	return nil
}

// consoleFile opens the file named by fileVar for appending when exporterVar
// is console; nil otherwise. O_APPEND lets processes share it: each span is
// one write.
func consoleFile(exporterVar, fileVar string, files *[]*os.File) (*os.File, error) {
	path := os.Getenv(fileVar)
	if os.Getenv(exporterVar) != "console" || path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", fileVar, err)
	}
	*files = append(*files, f)
	return f, nil
}

// defaultExporter is the exporter of a signal ("TRACES", "METRICS") whose
// OTEL_<signal>_EXPORTER is not set.
func defaultExporter(signal string) string {
	switch {
	case os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != "":
		return "otlp"
	case os.Getenv("K_SERVICE") != "":
		return "gcp"
	}
	return "none"
}

func gcpSpanExporter(context.Context) (sdktrace.SpanExporter, error) {
	if p := os.Getenv("GOOGLE_CLOUD_PROJECT"); p != "" {
		return texporter.New(texporter.WithProjectID(p))
	}
	return texporter.New()
}

func gcpMetricReader(context.Context) (sdkmetric.Reader, error) {
	opts := []mexporter.Option{}
	if p := os.Getenv("GOOGLE_CLOUD_PROJECT"); p != "" {
		opts = append(opts, mexporter.WithProjectID(p))
	}
	exp, err := mexporter.New(opts...)
	if err != nil {
		return nil, err
	}
	return sdkmetric.NewPeriodicReader(exp), nil
}

// newResource describes this process: a unique instance id (Cloud
// Monitoring needs one time series per instance), the project and Cloud
// Run's service and revision; then what OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES say, which win.
func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	attrs := []attribute.KeyValue{semconv.ServiceInstanceID(uuid.NewString())}
	if p := os.Getenv("GOOGLE_CLOUD_PROJECT"); p != "" {
		attrs = append(attrs, semconv.CloudAccountID(p))
	}
	if svc := os.Getenv("K_SERVICE"); svc != "" {
		attrs = append(attrs, semconv.CloudProviderGCP, semconv.CloudPlatformGCPCloudRun, semconv.FaaSName(svc))
		if rev := os.Getenv("K_REVISION"); rev != "" {
			attrs = append(attrs, semconv.FaaSVersion(rev))
		}
		if conf := os.Getenv("K_CONFIGURATION"); conf != "" {
			attrs = append(attrs, attribute.String("gcp.cloud_run.configuration", conf))
		}
	}
	if cfg.ServiceName != "" {
		attrs = append(attrs, semconv.ServiceName(cfg.ServiceName))
	}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, semconv.ServiceVersion(cfg.ServiceVersion))
	}
	res, err := resource.New(ctx, resource.WithTelemetrySDK(), resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	return res, nil
}
