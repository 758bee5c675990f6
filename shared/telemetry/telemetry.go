package telemetry

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"sync"

	mexporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/metric"
	texporter "github.com/GoogleCloudPlatform/opentelemetry-operations-go/exporter/trace"
	"github.com/google/uuid"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetricgrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlpmetric/otlpmetrichttp"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracegrpc"
	"go.opentelemetry.io/otel/exporters/otlp/otlptrace/otlptracehttp"
	"go.opentelemetry.io/otel/exporters/stdout/stdoutmetric"
	"go.opentelemetry.io/otel/exporters/stdout/stdouttrace"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/resource"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
)

// Config is what a service tells Setup about itself. The environment decides
// everything else (see the package documentation).
type Config struct {
	// ServiceName is service.name unless OTEL_SERVICE_NAME is set.
	ServiceName string
	// ServiceVersion is service.version, for example the build's commit.
	ServiceVersion string
	// ProjectID is the Google Cloud project for the gcp exporters and
	// cloud.account.id; empty means GOOGLE_CLOUD_PROJECT.
	ProjectID string
	// ErrorLog, when set, receives errors the OpenTelemetry SDK reports in
	// the background (failed exports). It is installed as the global
	// OpenTelemetry error handler.
	ErrorLog *slog.Logger

	// SpanExporter, when set, replaces the exporters the environment asks
	// for traces (tests pass a tracetest.InMemoryExporter). Spans are
	// batched as in production: call ForceFlush or Shutdown before reading.
	SpanExporter sdktrace.SpanExporter
	// MetricReader, when set, replaces the metric exporters the environment
	// asks for (tests pass an sdkmetric.ManualReader).
	MetricReader sdkmetric.Reader
}

// Telemetry holds the providers Setup installed globally. Services may use
// the globals (otel.Tracer, otel.Meter) or pass these explicitly.
type Telemetry struct {
	// TracerProvider is the installed tracer provider. It creates real,
	// sampled spans even when nothing is exported, so that log lines and
	// outbound traceparent headers carry this service's span ids.
	TracerProvider *sdktrace.TracerProvider
	// MeterProvider is the installed meter provider.
	MeterProvider *sdkmetric.MeterProvider
	// Propagator is the W3C trace-context and baggage propagator, also
	// installed globally.
	Propagator propagation.TextMapPropagator

	closers      []io.Closer
	shutdownOnce sync.Once
	shutdownErr  error
}

// Setup installs the propagator, a tracer provider and a meter provider
// globally, with exporters chosen from the environment read through getenv
// (os.Getenv in main). The propagator is installed first and always, so
// trace context propagates even when Setup fails or exports nothing.
//
// The returned Telemetry must be shut down when the service stops, after
// all other work, to flush what is buffered.
func Setup(ctx context.Context, cfg Config, getenv func(string) string) (*Telemetry, error) {
	prop := propagation.NewCompositeTextMapPropagator(propagation.TraceContext{}, propagation.Baggage{})
	otel.SetTextMapPropagator(prop)

	if cfg.ErrorLog != nil {
		log := cfg.ErrorLog
		otel.SetErrorHandler(otel.ErrorHandlerFunc(func(err error) {
			log.Error("telemetry export failed", "error", err)
		}))
	}
	if cfg.ProjectID == "" {
		cfg.ProjectID = getenv("GOOGLE_CLOUD_PROJECT")
	}

	sampler, err := samplerFromEnv(getenv)
	if err != nil {
		return nil, fmt.Errorf("telemetry setup: %w", err)
	}
	res, err := newResource(ctx, cfg, getenv)
	if err != nil {
		return nil, fmt.Errorf("telemetry setup: %w", err)
	}

	t := &Telemetry{Propagator: prop}
	fail := func(err error) (*Telemetry, error) {
		// Release what was built so far; the caller gets nothing to shut down.
		_ = t.Shutdown(ctx)
		return nil, fmt.Errorf("telemetry setup: %w", err)
	}

	topts := []sdktrace.TracerProviderOption{sdktrace.WithResource(res), sdktrace.WithSampler(sampler)}
	if cfg.SpanExporter != nil {
		topts = append(topts, sdktrace.WithBatcher(cfg.SpanExporter))
	} else {
		choice, err := chooseExporters(getenv, signalTraces)
		if err != nil {
			return fail(err)
		}
		for _, kind := range choice.Exporters {
			exp, err := t.newSpanExporter(ctx, kind, choice, cfg.ProjectID)
			if err != nil {
				return fail(err)
			}
			topts = append(topts, sdktrace.WithBatcher(exp))
		}
	}
	t.TracerProvider = sdktrace.NewTracerProvider(topts...)

	mopts := []sdkmetric.Option{sdkmetric.WithResource(res)}
	if cfg.MetricReader != nil {
		mopts = append(mopts, sdkmetric.WithReader(cfg.MetricReader))
	} else {
		choice, err := chooseExporters(getenv, signalMetrics)
		if err != nil {
			return fail(err)
		}
		for _, kind := range choice.Exporters {
			exp, err := t.newMetricExporter(ctx, kind, choice, cfg.ProjectID)
			if err != nil {
				return fail(err)
			}
			mopts = append(mopts, sdkmetric.WithReader(sdkmetric.NewPeriodicReader(exp)))
		}
	}
	t.MeterProvider = sdkmetric.NewMeterProvider(mopts...)

	otel.SetTracerProvider(t.TracerProvider)
	otel.SetMeterProvider(t.MeterProvider)
	return t, nil
}

// ForceFlush exports every span and metric buffered so far. Tests call it
// before reading an in-memory exporter; services need only Shutdown.
func (t *Telemetry) ForceFlush(ctx context.Context) error {
	var errs []error
	if t.TracerProvider != nil {
		if err := t.TracerProvider.ForceFlush(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flush traces: %w", err))
		}
	}
	if t.MeterProvider != nil {
		if err := t.MeterProvider.ForceFlush(ctx); err != nil {
			errs = append(errs, fmt.Errorf("flush metrics: %w", err))
		}
	}
	return errors.Join(errs...)
}

// Shutdown flushes and stops the exporters, then closes the console files.
// It blocks until done or ctx ends; call it last, after the work that makes
// spans has stopped. Calls after the first return the first call's result.
func (t *Telemetry) Shutdown(ctx context.Context) error {
	t.shutdownOnce.Do(func() {
		var errs []error
		if t.TracerProvider != nil {
			if err := t.TracerProvider.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("shut down traces: %w", err))
			}
		}
		if t.MeterProvider != nil {
			if err := t.MeterProvider.Shutdown(ctx); err != nil {
				errs = append(errs, fmt.Errorf("shut down metrics: %w", err))
			}
		}
		for _, c := range t.closers {
			if err := c.Close(); err != nil {
				errs = append(errs, fmt.Errorf("close console file: %w", err))
			}
		}
		t.shutdownErr = errors.Join(errs...)
	})
	return t.shutdownErr
}

// consoleWriter opens the console exporter's file for appending, or returns
// stdout when no file is named. O_APPEND lets ingest and deliver share one
// file: each span is written with a single write.
func (t *Telemetry) consoleWriter(path string) (io.Writer, error) {
	if path == "" {
		return os.Stdout, nil
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return nil, fmt.Errorf("open console file: %w", err)
	}
	t.closers = append(t.closers, f)
	return f, nil
}

func (t *Telemetry) newSpanExporter(ctx context.Context, kind string, c exporterChoice, projectID string) (sdktrace.SpanExporter, error) {
	switch kind {
	case ExporterOTLP:
		if c.Protocol == ProtocolGRPC {
			return otlptracegrpc.New(ctx)
		}
		return otlptracehttp.New(ctx)
	case ExporterGCP:
		var opts []texporter.Option
		if projectID != "" {
			opts = append(opts, texporter.WithProjectID(projectID))
		}
		exp, err := texporter.New(opts...)
		if err != nil {
			return nil, fmt.Errorf("cloud trace exporter: %w", err)
		}
		return exp, nil
	case ExporterConsole:
		w, err := t.consoleWriter(c.File)
		if err != nil {
			return nil, err
		}
		return stdouttrace.New(stdouttrace.WithWriter(w))
	}
	return nil, fmt.Errorf("unknown trace exporter %q", kind)
}

func (t *Telemetry) newMetricExporter(ctx context.Context, kind string, c exporterChoice, projectID string) (sdkmetric.Exporter, error) {
	switch kind {
	case ExporterOTLP:
		if c.Protocol == ProtocolGRPC {
			return otlpmetricgrpc.New(ctx)
		}
		return otlpmetrichttp.New(ctx)
	case ExporterGCP:
		var opts []mexporter.Option
		if projectID != "" {
			opts = append(opts, mexporter.WithProjectID(projectID))
		}
		exp, err := mexporter.New(opts...)
		if err != nil {
			return nil, fmt.Errorf("cloud monitoring exporter: %w", err)
		}
		return exp, nil
	case ExporterConsole:
		w, err := t.consoleWriter(c.File)
		if err != nil {
			return nil, err
		}
		return stdoutmetric.New(stdoutmetric.WithWriter(w))
	}
	return nil, fmt.Errorf("unknown metric exporter %q", kind)
}

// newResource describes this process: service name, version and a unique
// instance id (Cloud Monitoring needs one time series per instance), plus
// the Cloud Run service and revision when running there.
func newResource(ctx context.Context, cfg Config, getenv func(string) string) (*resource.Resource, error) {
	var attrs []attribute.KeyValue
	if svc := getenv("K_SERVICE"); svc != "" {
		attrs = append(attrs,
			semconv.CloudProviderGCP,
			semconv.CloudPlatformGCPCloudRun,
			semconv.FaaSName(svc),
		)
		if rev := getenv("K_REVISION"); rev != "" {
			attrs = append(attrs, semconv.FaaSVersion(rev))
		}
		if conf := getenv("K_CONFIGURATION"); conf != "" {
			attrs = append(attrs, attribute.String("gcp.cloud_run.configuration", conf))
		}
	}
	if cfg.ProjectID != "" {
		attrs = append(attrs, semconv.CloudAccountID(cfg.ProjectID))
	}
	attrs = append(attrs, semconv.ServiceInstanceID(uuid.NewString()))
	if cfg.ServiceName != "" {
		attrs = append(attrs, semconv.ServiceName(cfg.ServiceName))
	}
	if cfg.ServiceVersion != "" {
		attrs = append(attrs, semconv.ServiceVersion(cfg.ServiceVersion))
	}
	fromEnv, err := resourceAttributesFromEnv(getenv)
	if err != nil {
		return nil, err
	}
	attrs = append(attrs, fromEnv...)
	if name := getenv("OTEL_SERVICE_NAME"); name != "" {
		attrs = append(attrs, semconv.ServiceName(name))
	}
	// Later attributes win over earlier ones with the same key.
	res, err := resource.New(ctx,
		resource.WithTelemetrySDK(),
		resource.WithSchemaURL(semconv.SchemaURL),
		resource.WithAttributes(attrs...),
	)
	if err != nil {
		return nil, fmt.Errorf("resource: %w", err)
	}
	return res, nil
}
