package telemetry

import (
	"context"
	"testing"

	"go.opentelemetry.io/otel/attribute"
)

// otelVars are the variables these tests set; each test starts with all of
// them empty, whatever the environment of the test process.
var otelVars = []string{
	"OTEL_TRACES_EXPORTER", "OTEL_METRICS_EXPORTER", "OTEL_EXPORTER_OTLP_ENDPOINT",
	"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT", "OTEL_EXPORTER_OTLP_METRICS_ENDPOINT",
	"OTEL_EXPORTER_OTLP_PROTOCOL", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL", "OTEL_EXPORTER_OTLP_METRICS_PROTOCOL",
	"OTEL_CONSOLE_FILE", "OTEL_CONSOLE_METRICS_FILE", "OTEL_SDK_DISABLED", "OTEL_SERVICE_NAME",
	"OTEL_RESOURCE_ATTRIBUTES", "OTEL_TRACES_SAMPLER", "OTEL_TRACES_SAMPLER_ARG",
	"TRACE_HONOR_CALLER_SAMPLED", "K_SERVICE", "K_REVISION", "K_CONFIGURATION", "GOOGLE_CLOUD_PROJECT",
}

// setenv sets the process environment for one test: every variable of
// otelVars empty, then m.
func setenv(t *testing.T, m map[string]string) {
	t.Helper()
	for _, k := range otelVars {
		t.Setenv(k, "")
	}
	for k, v := range m {
		t.Setenv(k, v)
	}
}

func TestDefaultExporter(t *testing.T) {
	tests := []struct {
		name                string
		env                 map[string]string
		wantTraces, wantMet string
	}{
		{"nothing set exports nothing", nil, "none", "none"},
		{"otlp endpoint", map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "otlp", "otlp"},
		{"per-signal endpoint selects otlp for that signal only",
			map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"}, "otlp", "none"},
		{"cloud run", map[string]string{"K_SERVICE": "ingest"}, "gcp", "gcp"},
		{"otlp endpoint wins over cloud run", map[string]string{"K_SERVICE": "ingest", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"}, "otlp", "otlp"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			setenv(t, tt.env)
			if got := defaultExporter("TRACES"); got != tt.wantTraces {
				t.Errorf("defaultExporter(TRACES) = %q, want %q", got, tt.wantTraces)
			}
			if got := defaultExporter("METRICS"); got != tt.wantMet {
				t.Errorf("defaultExporter(METRICS) = %q, want %q", got, tt.wantMet)
			}
		})
	}
}

func TestSamplerFromEnv(t *testing.T) {
	tests := []struct {
		sampler, arg string
		want         string // the sampler's Description
		wantRoot     string
		wantErr      bool
	}{
		{sampler: "", want: "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}", wantRoot: "AlwaysOnSampler"},
		{sampler: "always_on", want: "AlwaysOnSampler", wantRoot: "AlwaysOnSampler"},
		{sampler: "always_off", want: "AlwaysOffSampler", wantRoot: "AlwaysOffSampler"},
		{sampler: "traceidratio", arg: "0.25", want: "TraceIDRatioBased{0.25}", wantRoot: "TraceIDRatioBased{0.25}"},
		{sampler: "traceidratio", want: "TraceIDRatioBased{1}", wantRoot: "TraceIDRatioBased{1}"},
		{sampler: "parentbased_traceidratio", arg: "0.5", want: "ParentBased{root:TraceIDRatioBased{0.5},remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}", wantRoot: "TraceIDRatioBased{0.5}"},
		{sampler: "parentbased_always_off", want: "ParentBased{root:AlwaysOffSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}", wantRoot: "AlwaysOffSampler"},
		{sampler: "traceidratio", arg: "2", wantErr: true},
		{sampler: "traceidratio", arg: "half", wantErr: true},
		{sampler: "jaeger_remote", wantErr: true},
		{sampler: "parentbased_jaeger_remote", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.sampler+"/"+tt.arg, func(t *testing.T) {
			setenv(t, map[string]string{"OTEL_TRACES_SAMPLER": tt.sampler, "OTEL_TRACES_SAMPLER_ARG": tt.arg})
			s, root, err := samplerFromEnv()
			if tt.wantErr {
				if err == nil {
					t.Fatalf("samplerFromEnv(%q, %q) = %s, want error", tt.sampler, tt.arg, s.Description())
				}
				return
			}
			if err != nil {
				t.Fatalf("samplerFromEnv(%q, %q) error: %v", tt.sampler, tt.arg, err)
			}
			if got := s.Description(); got != tt.want {
				t.Errorf("samplerFromEnv(%q, %q) = %s, want %s", tt.sampler, tt.arg, got, tt.want)
			}
			if got := root.Description(); got != tt.wantRoot {
				t.Errorf("samplerFromEnv(%q, %q) root = %s, want %s", tt.sampler, tt.arg, got, tt.wantRoot)
			}
		})
	}
}

func TestResourceAttributesFromEnv(t *testing.T) {
	setenv(t, map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=dev, team=a%20b"})
	res, err := newResource(context.Background(), Config{ServiceName: "ingest"})
	if err != nil {
		t.Fatalf("newResource error: %v", err)
	}
	got := map[attribute.Key]string{}
	for _, kv := range res.Attributes() {
		got[kv.Key] = kv.Value.Emit()
	}
	for k, want := range map[attribute.Key]string{"deployment.environment": "dev", "team": "a b", "service.name": "ingest"} {
		if got[k] != want {
			t.Errorf("resource %s = %q, want %q", k, got[k], want)
		}
	}
	setenv(t, map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "novalue"})
	if _, err := newResource(context.Background(), Config{}); err == nil {
		t.Errorf("newResource with OTEL_RESOURCE_ATTRIBUTES=%q succeeded, want error", "novalue")
	}
}
