// Package telemetry sets up OpenTelemetry for both services, so that one
// Segment event tells its whole story in one trace: [Setup] once at start,
// and the shutdown function it returns last; [NewLogger] for Cloud Logging
// lines linked to their trace; [Inject] and [Extract] to carry the trace
// context inside a Pub/Sub message; [Server] for an HTTP server's span and
// request duration.
//
// Configuration is OpenTelemetry's own (OTEL_*), read by the SDK and by
// go.opentelemetry.io/contrib/exporters/autoexport, with the exporter gcp
// (Cloud Trace, Cloud Monitoring) registered there; docs/observability.md
// lists the variables and what this package adds: the default exporter,
// console output to a shared file, the Cloud Run resource and, at the edge,
// the sampling rule. Only W3C trace context (traceparent, tracestate)
// propagates, whatever the exporter: no baggage, so nothing a caller puts
// in one reaches Startdeliver.
package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"strings"
	"sync"

	mexporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/metric"
	texporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/trace"
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
	// ServiceName is service.name unless OTEL_SERVICE_NAME is set;
	// ServiceVersion is service.version, for example the build's commit.
	ServiceName, ServiceVersion string
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
	var files []io.Closer
	stop := func(ctx context.Context, errs ...error) error {
		for _, f := range files {
			errs = append(errs, f.Close())
		}
		return errors.Join(errs...)
	}
	sampler, root, err := samplerFromEnv()
	if err == nil && cfg.Edge {
		sampler, err = newEdgeSampler(root)
	}
	var res *resource.Resource
	if err == nil {
		res, err = newResource(ctx, cfg)
	}
	exp, reader := cfg.SpanExporter, cfg.MetricReader
	if err == nil && exp == nil {
		exp, err = exporter(ctx, "TRACES", "OTEL_CONSOLE_FILE", &files,
			func(w io.Writer) (sdktrace.SpanExporter, error) { return stdouttrace.New(stdouttrace.WithWriter(w)) },
			func(ctx context.Context, fallback func(context.Context) (sdktrace.SpanExporter, error)) (sdktrace.SpanExporter, error) {
				return autoexport.NewSpanExporter(ctx, autoexport.WithFallbackSpanExporter(fallback))
			}, gcpSpanExporter)
	}
	if err == nil && reader == nil {
		reader, err = exporter(ctx, "METRICS", "OTEL_CONSOLE_METRICS_FILE", &files,
			func(w io.Writer) (sdkmetric.Reader, error) {
				exp, err := stdoutmetric.New(stdoutmetric.WithWriter(w))
				return sdkmetric.NewPeriodicReader(exp), err
			},
			func(ctx context.Context, fallback func(context.Context) (sdkmetric.Reader, error)) (sdkmetric.Reader, error) {
				return autoexport.NewMetricReader(ctx, autoexport.WithFallbackMetricReader(fallback))
			}, gcpMetricReader)
	}
	if err != nil {
		if exp != nil && cfg.SpanExporter == nil {
			_ = exp.Shutdown(ctx)
		}
		_ = stop(ctx)
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
	return func(ctx context.Context) error {
		once.Do(func() { err = stop(ctx, tp.Shutdown(ctx), mp.Shutdown(ctx)) })
		return err
	}, nil
}

// exporter is the span exporter or metric reader of one signal ("TRACES",
// "METRICS"): none (the zero T) for none or OTEL_SDK_DISABLED=true; console
// into fileVar's file when OTEL_<signal>_EXPORTER is console and fileVar is
// set (O_APPEND: each line is one write, so processes may share the file);
// else what autoexport builds for the variable or, when it is unset,
// defaultExporter's choice.
func exporter[T any](ctx context.Context, signal, fileVar string, files *[]io.Closer,
	console func(io.Writer) (T, error),
	auto func(context.Context, func(context.Context) (T, error)) (T, error),
	gcp func(context.Context) (T, error),
) (t T, err error) {
	name := "OTEL_" + signal + "_EXPORTER"
	if os.Getenv(name) == "none" || strings.EqualFold(strings.TrimSpace(os.Getenv("OTEL_SDK_DISABLED")), "true") {
		return t, nil
	}
	if path := os.Getenv(fileVar); path != "" && os.Getenv(name) == "console" {
		f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
		if err != nil {
			return t, fmt.Errorf("%s: %w", fileVar, err)
		}
		*files = append(*files, f)
		return console(f)
	}
	t, err = auto(ctx, func(ctx context.Context) (none T, err error) {
		switch defaultExporter(signal) {
		case "otlp":
			return auto(ctx, nil) // with no fallback, otlp
		case "gcp":
			return gcp(ctx)
		}
		return none, nil
	})
	if err != nil {
		return t, fmt.Errorf("%s: %w", name, err)
	}
	return t, nil
}

// defaultExporter is the exporter of a signal whose OTEL_<signal>_EXPORTER
// is not set.
func defaultExporter(signal string) string {
	switch {
	case os.Getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || os.Getenv("OTEL_EXPORTER_OTLP_"+signal+"_ENDPOINT") != "":
		return "otlp"
	case os.Getenv("K_SERVICE") != "":
		return "gcp"
	}
	return "none"
}

// gcpSpanExporter and gcpMetricReader are the exporter gcp: Cloud Trace and
// Cloud Monitoring, in GOOGLE_CLOUD_PROJECT or else the credentials'
// project.
func gcpSpanExporter(context.Context) (sdktrace.SpanExporter, error) {
	return texporter.New(texporter.WithProjectID(os.Getenv("GOOGLE_CLOUD_PROJECT")))
}

func gcpMetricReader(context.Context) (sdkmetric.Reader, error) {
	exp, err := mexporter.New(mexporter.WithProjectID(os.Getenv("GOOGLE_CLOUD_PROJECT")))
	if err != nil {
		return nil, err
	}
	return sdkmetric.NewPeriodicReader(exp), nil
}

// newResource describes this process: a unique service.instance.id (Cloud
// Monitoring needs one time series per instance), the project and Cloud
// Run's service and revision; then what OTEL_SERVICE_NAME and
// OTEL_RESOURCE_ATTRIBUTES say, which win.
func newResource(ctx context.Context, cfg Config) (*resource.Resource, error) {
	var attrs []attribute.KeyValue
	add := func(v string, kv ...attribute.KeyValue) {
		if v != "" {
			attrs = append(attrs, kv...)
		}
	}
	project, svc := os.Getenv("GOOGLE_CLOUD_PROJECT"), os.Getenv("K_SERVICE")
	add(project, semconv.CloudAccountID(project))
	add(svc, semconv.CloudProviderGCP, semconv.CloudPlatformGCPCloudRun, semconv.FaaSName(svc))
	if svc != "" {
		add(os.Getenv("K_REVISION"), semconv.FaaSVersion(os.Getenv("K_REVISION")))
		add(os.Getenv("K_CONFIGURATION"), attribute.String("gcp.cloud_run.configuration", os.Getenv("K_CONFIGURATION")))
	}
	add(cfg.ServiceName, semconv.ServiceName(cfg.ServiceName))
	add(cfg.ServiceVersion, semconv.ServiceVersion(cfg.ServiceVersion))
	res, err := resource.New(ctx, resource.WithService(), resource.WithTelemetrySDK(), resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(attrs...), resource.WithFromEnv())
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	return res, nil
}

// Inject returns the trace context of ctx (traceparent, tracestate) as a
// map, for carrying it inside a Pub/Sub message body; empty with no span.
func Inject(ctx context.Context) map[string]string {
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	return carrier
}

// Extract returns ctx carrying the remote trace context that Inject wrote,
// so that spans started from it continue that trace; with an empty carrier,
// ctx itself.
func Extract(ctx context.Context, carrier map[string]string) context.Context {
	if len(carrier) == 0 {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(carrier))
}
