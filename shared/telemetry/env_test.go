package telemetry

import (
	"testing"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/attribute"
)

// env returns a getenv over a fixed map.
func env(m map[string]string) func(string) string {
	return func(k string) string { return m[k] }
}

func TestChooseExporters(t *testing.T) {
	tests := []struct {
		name        string
		env         map[string]string
		wantTraces  exporterChoice
		wantMetrics exporterChoice
	}{
		{
			name: "nothing set exports nothing",
			env:  nil,
		},
		{
			name:        "otlp endpoint defaults to otlp over http",
			env:         map[string]string{"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
			wantTraces:  exporterChoice{Exporters: []string{"otlp"}, Protocol: "http/protobuf"},
			wantMetrics: exporterChoice{Exporters: []string{"otlp"}, Protocol: "http/protobuf"},
		},
		{
			name: "grpc protocol",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4317",
				"OTEL_EXPORTER_OTLP_PROTOCOL": "grpc",
			},
			wantTraces:  exporterChoice{Exporters: []string{"otlp"}, Protocol: "grpc"},
			wantMetrics: exporterChoice{Exporters: []string{"otlp"}, Protocol: "grpc"},
		},
		{
			name: "per-signal protocol wins",
			env: map[string]string{
				"OTEL_EXPORTER_OTLP_ENDPOINT":         "http://127.0.0.1:4317",
				"OTEL_EXPORTER_OTLP_PROTOCOL":         "grpc",
				"OTEL_EXPORTER_OTLP_METRICS_PROTOCOL": "http/protobuf",
			},
			wantTraces:  exporterChoice{Exporters: []string{"otlp"}, Protocol: "grpc"},
			wantMetrics: exporterChoice{Exporters: []string{"otlp"}, Protocol: "http/protobuf"},
		},
		{
			name:       "per-signal endpoint selects otlp for that signal only",
			env:        map[string]string{"OTEL_EXPORTER_OTLP_TRACES_ENDPOINT": "http://127.0.0.1:4318/v1/traces"},
			wantTraces: exporterChoice{Exporters: []string{"otlp"}, Protocol: "http/protobuf"},
		},
		{
			name:        "cloud run defaults to gcp",
			env:         map[string]string{"K_SERVICE": "ingest"},
			wantTraces:  exporterChoice{Exporters: []string{"gcp"}},
			wantMetrics: exporterChoice{Exporters: []string{"gcp"}},
		},
		{
			name:        "otlp endpoint wins over cloud run default",
			env:         map[string]string{"K_SERVICE": "ingest", "OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318"},
			wantTraces:  exporterChoice{Exporters: []string{"otlp"}, Protocol: "http/protobuf"},
			wantMetrics: exporterChoice{Exporters: []string{"otlp"}, Protocol: "http/protobuf"},
		},
		{
			name:        "explicit none on cloud run",
			env:         map[string]string{"K_SERVICE": "ingest", "OTEL_TRACES_EXPORTER": "none", "OTEL_METRICS_EXPORTER": "none"},
			wantTraces:  exporterChoice{},
			wantMetrics: exporterChoice{},
		},
		{
			name: "console with files",
			env: map[string]string{
				"OTEL_TRACES_EXPORTER":      "console",
				"OTEL_METRICS_EXPORTER":     "Console",
				"OTEL_CONSOLE_FILE":         ".run/traces.jsonl",
				"OTEL_CONSOLE_METRICS_FILE": ".run/metrics.jsonl",
			},
			wantTraces:  exporterChoice{Exporters: []string{"console"}, File: ".run/traces.jsonl"},
			wantMetrics: exporterChoice{Exporters: []string{"console"}, File: ".run/metrics.jsonl"},
		},
		{
			name: "list of exporters, duplicates and none dropped",
			env: map[string]string{
				"OTEL_TRACES_EXPORTER":        "otlp, console,none,otlp",
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
			},
			wantTraces:  exporterChoice{Exporters: []string{"otlp", "console"}, Protocol: "http/protobuf"},
			wantMetrics: exporterChoice{Exporters: []string{"otlp"}, Protocol: "http/protobuf"},
		},
		{
			name: "sdk disabled wins over everything",
			env: map[string]string{
				"OTEL_SDK_DISABLED":           "true",
				"OTEL_TRACES_EXPORTER":        "console",
				"OTEL_EXPORTER_OTLP_ENDPOINT": "http://127.0.0.1:4318",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			for _, c := range []struct {
				s    signal
				want exporterChoice
			}{{signalTraces, tt.wantTraces}, {signalMetrics, tt.wantMetrics}} {
				got, err := chooseExporters(env(tt.env), c.s)
				if err != nil {
					t.Fatalf("chooseExporters(%v, %s) error: %v", tt.env, c.s, err)
				}
				if diff := cmp.Diff(c.want, got); diff != "" {
					t.Errorf("chooseExporters(%v, %s) mismatch (-want +got):\n%s", tt.env, c.s, diff)
				}
			}
		})
	}
}

func TestChooseExportersErrors(t *testing.T) {
	tests := []map[string]string{
		{"OTEL_TRACES_EXPORTER": "jaeger"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_PROTOCOL": "http/json"},
		{"OTEL_TRACES_EXPORTER": "otlp", "OTEL_EXPORTER_OTLP_TRACES_PROTOCOL": "udp"},
	}
	for _, e := range tests {
		if got, err := chooseExporters(env(e), signalTraces); err == nil {
			t.Errorf("chooseExporters(%v) = %+v, want error", e, got)
		}
	}
}

func TestSamplerFromEnv(t *testing.T) {
	tests := []struct {
		sampler, arg string
		want         string // the sampler's Description
		wantErr      bool
	}{
		{sampler: "", want: "ParentBased{root:AlwaysOnSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"},
		{sampler: "always_on", want: "AlwaysOnSampler"},
		{sampler: "always_off", want: "AlwaysOffSampler"},
		{sampler: "traceidratio", arg: "0.25", want: "TraceIDRatioBased{0.25}"},
		{sampler: "traceidratio", want: "TraceIDRatioBased{1}"},
		{sampler: "parentbased_traceidratio", arg: "0.5", want: "ParentBased{root:TraceIDRatioBased{0.5},remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"},
		{sampler: "parentbased_always_off", want: "ParentBased{root:AlwaysOffSampler,remoteParentSampled:AlwaysOnSampler,remoteParentNotSampled:AlwaysOffSampler,localParentSampled:AlwaysOnSampler,localParentNotSampled:AlwaysOffSampler}"},
		{sampler: "traceidratio", arg: "2", wantErr: true},
		{sampler: "traceidratio", arg: "half", wantErr: true},
		{sampler: "jaeger_remote", wantErr: true},
	}
	for _, tt := range tests {
		t.Run(tt.sampler+"/"+tt.arg, func(t *testing.T) {
			s, err := samplerFromEnv(env(map[string]string{"OTEL_TRACES_SAMPLER": tt.sampler, "OTEL_TRACES_SAMPLER_ARG": tt.arg}))
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
		})
	}
}

func TestResourceAttributesFromEnv(t *testing.T) {
	got, err := resourceAttributesFromEnv(env(map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "deployment.environment=dev, team=a%20b,"}))
	if err != nil {
		t.Fatalf("resourceAttributesFromEnv error: %v", err)
	}
	want := []attribute.KeyValue{attribute.String("deployment.environment", "dev"), attribute.String("team", "a b")}
	if diff := cmp.Diff(want, got, cmp.Comparer(func(a, b attribute.KeyValue) bool { return a == b })); diff != "" {
		t.Errorf("resourceAttributesFromEnv mismatch (-want +got):\n%s", diff)
	}
	if _, err := resourceAttributesFromEnv(env(map[string]string{"OTEL_RESOURCE_ATTRIBUTES": "novalue"})); err == nil {
		t.Errorf("resourceAttributesFromEnv(%q) succeeded, want error", "novalue")
	}
}
