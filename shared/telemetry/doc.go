// Package telemetry sets up OpenTelemetry tracing and metrics, Cloud Logging
// structured logs and trace-context propagation for both services, so that
// one Segment event tells its whole story in one trace.
//
// A service calls [Setup] once at start and [Telemetry.Shutdown] last when it
// stops; [NewLogger] builds the slog logger whose lines link to the trace of
// the context they are logged with; [Inject] and [Extract] carry the trace
// context through a Pub/Sub message.
//
// The W3C trace-context and baggage propagator is installed globally whatever
// the exporter, so a caller's traceparent is honoured and passed on even when
// nothing is exported.
//
// # Environment
//
// Setup reads these variables through the getenv function it is given:
//
//	OTEL_SERVICE_NAME            service.name; overrides Config.ServiceName.
//	OTEL_RESOURCE_ATTRIBUTES     extra resource attributes, key=value,key2=value2
//	                             (values URL-encoded); OTEL_SERVICE_NAME still wins.
//	OTEL_SDK_DISABLED            "true": export nothing (propagation still works).
//	OTEL_TRACES_EXPORTER         comma-separated list of otlp, gcp, console, none.
//	OTEL_METRICS_EXPORTER        the same for metrics.
//	                             Default for both: otlp when OTEL_EXPORTER_OTLP_ENDPOINT
//	                             (or the signal's OTEL_EXPORTER_OTLP_TRACES_ENDPOINT /
//	                             OTEL_EXPORTER_OTLP_METRICS_ENDPOINT) is set, else gcp
//	                             on Cloud Run (K_SERVICE set), else none.
//	OTEL_EXPORTER_OTLP_PROTOCOL  grpc or http/protobuf (default http/protobuf, as the
//	                             OpenTelemetry specification says); the per-signal
//	                             OTEL_EXPORTER_OTLP_TRACES_PROTOCOL and
//	                             OTEL_EXPORTER_OTLP_METRICS_PROTOCOL override it.
//	OTEL_TRACES_SAMPLER          always_on, always_off, traceidratio,
//	                             parentbased_always_on (default),
//	                             parentbased_always_off, parentbased_traceidratio.
//	OTEL_TRACES_SAMPLER_ARG      the ratio for the traceidratio samplers (default 1).
//	OTEL_CONSOLE_FILE            console trace exporter: append one JSON span per line
//	                             to this file instead of stdout (read it with
//	                             deliver/cmd/tracetree). Several processes may share it.
//	OTEL_CONSOLE_METRICS_FILE    console metric exporter: append to this file instead
//	                             of stdout.
//	GOOGLE_CLOUD_PROJECT         project for the gcp exporters (otherwise found from
//	                             the application default credentials) and
//	                             cloud.account.id.
//	K_SERVICE, K_REVISION,       set by Cloud Run: faas.name, faas.version and
//	K_CONFIGURATION              gcp.cloud_run.configuration resource attributes.
//
// The OTLP exporters themselves read the rest of the standard variables
// (OTEL_EXPORTER_OTLP_ENDPOINT, _HEADERS, _INSECURE, _TIMEOUT, ...) and the
// periodic metric reader reads OTEL_METRIC_EXPORT_INTERVAL, all from the
// process environment.
//
// [NewLogger] takes the level from LOG_LEVEL (debug, info, warn, error) as
// the caller passes it.
package telemetry
