package telemetry

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/google/go-cmp/cmp/cmpopts"
	"go.opentelemetry.io/otel/trace"
)

const apiKey = "sd-live-0123456789abcdef"

// spanContext returns ctx holding a fixed span context.
func spanContext(t *testing.T, sampled bool) context.Context {
	t.Helper()
	tid, _ := trace.TraceIDFromHex("4bf92f3577b34da6a3ce929d0e0e4736")
	sid, _ := trace.SpanIDFromHex("00f067aa0ba902b7")
	var flags trace.TraceFlags
	if sampled {
		flags = trace.FlagsSampled
	}
	return trace.ContextWithSpanContext(context.Background(),
		trace.NewSpanContext(trace.SpanContextConfig{TraceID: tid, SpanID: sid, TraceFlags: flags}))
}

// lines parses each JSON line the logger wrote.
func lines(t *testing.T, buf *bytes.Buffer) []map[string]any {
	t.Helper()
	var out []map[string]any
	for _, l := range strings.Split(strings.TrimSpace(buf.String()), "\n") {
		if l == "" {
			continue
		}
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Fatalf("log line %q is not JSON: %v", l, err)
		}
		out = append(out, m)
	}
	return out
}

var ignoreTime = cmpopts.IgnoreMapEntries(func(k string, _ any) bool { return k == "time" })

func TestLoggerShape(t *testing.T) {
	tests := []struct {
		name      string
		project   string
		ctx       context.Context
		log       func(l *slog.Logger, ctx context.Context)
		want      map[string]any
		wantLines int
	}{
		{
			name:    "trace fields with project",
			project: "proj",
			ctx:     spanContext(t, true),
			log: func(l *slog.Logger, ctx context.Context) {
				l.InfoContext(ctx, "event delivered", "messageId", "m-1", "account_hash", "ab12")
			},
			want: map[string]any{
				"severity":                             "INFO",
				"message":                              "event delivered",
				"messageId":                            "m-1",
				"account_hash":                         "ab12",
				"logging.googleapis.com/trace":         "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736",
				"logging.googleapis.com/spanId":        "00f067aa0ba902b7",
				"logging.googleapis.com/trace_sampled": true,
			},
		},
		{
			name: "bare trace id without project, not sampled",
			ctx:  spanContext(t, false),
			log: func(l *slog.Logger, ctx context.Context) {
				l.WarnContext(ctx, "retrying")
			},
			want: map[string]any{
				"severity":                             "WARNING",
				"message":                              "retrying",
				"logging.googleapis.com/trace":         "4bf92f3577b34da6a3ce929d0e0e4736",
				"logging.googleapis.com/spanId":        "00f067aa0ba902b7",
				"logging.googleapis.com/trace_sampled": false,
			},
		},
		{
			name:    "no span, no trace fields",
			project: "proj",
			ctx:     context.Background(),
			log: func(l *slog.Logger, ctx context.Context) {
				l.ErrorContext(ctx, "publish failed", "error", "boom")
			},
			want: map[string]any{"severity": "ERROR", "message": "publish failed", "error": "boom"},
		},
		{
			name:    "trace fields stay top level under a group",
			project: "proj",
			ctx:     spanContext(t, true),
			log: func(l *slog.Logger, ctx context.Context) {
				l.With("service", "deliver").WithGroup("event").InfoContext(ctx, "processing", "type", "track")
			},
			want: map[string]any{
				"severity":                             "INFO",
				"message":                              "processing",
				"service":                              "deliver",
				"event":                                map[string]any{"type": "track"},
				"logging.googleapis.com/trace":         "projects/proj/traces/4bf92f3577b34da6a3ce929d0e0e4736",
				"logging.googleapis.com/spanId":        "00f067aa0ba902b7",
				"logging.googleapis.com/trace_sampled": true,
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			tt.log(NewLogger(&buf, "debug", tt.project), tt.ctx)
			got := lines(t, &buf)
			if len(got) != 1 {
				t.Fatalf("logger wrote %d lines, want 1: %s", len(got), buf.String())
			}
			if _, ok := got[0]["time"].(string); !ok {
				t.Errorf("time = %v, want an RFC 3339 string", got[0]["time"])
			}
			if diff := cmp.Diff(tt.want, got[0], ignoreTime); diff != "" {
				t.Errorf("log line mismatch (-want +got):\n%s", diff)
			}
		})
	}
}

func TestLoggerLevel(t *testing.T) {
	tests := []struct {
		level string
		want  []string // severities written
	}{
		{"debug", []string{"DEBUG", "INFO", "WARNING", "ERROR"}},
		{"", []string{"INFO", "WARNING", "ERROR"}},
		{"info", []string{"INFO", "WARNING", "ERROR"}},
		{"WARN", []string{"WARNING", "ERROR"}},
		{"warning", []string{"WARNING", "ERROR"}},
		{"error", []string{"ERROR"}},
		{"verbose", []string{"INFO", "WARNING", "ERROR"}}, // unknown means info
	}
	for _, tt := range tests {
		t.Run(tt.level, func(t *testing.T) {
			var buf bytes.Buffer
			l := NewLogger(&buf, tt.level, "")
			ctx := spanContext(t, true)
			l.DebugContext(ctx, "d")
			l.InfoContext(ctx, "i")
			l.WarnContext(ctx, "w")
			l.ErrorContext(ctx, "e")
			var got []string
			for _, m := range lines(t, &buf) {
				got = append(got, m["severity"].(string))
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("NewLogger(level %q) severities mismatch (-want +got):\n%s", tt.level, diff)
			}
		})
	}
}

func TestParseLevel(t *testing.T) {
	for in, want := range map[string]slog.Level{"debug": slog.LevelDebug, "": slog.LevelInfo, "Info": slog.LevelInfo, "warn": slog.LevelWarn, "ERROR": slog.LevelError,
		// Cloud Logging's severities, at their places among slog's.
		"DEFAULT": slog.LevelDebug - 4, "notice": slog.LevelInfo + 2, "Warning": slog.LevelWarn, "critical": slog.LevelError + 4, "EMERGENCY": slog.LevelError + 12,
		"info+2": slog.LevelInfo + 2} {
		if got, err := ParseLevel(in); err != nil || got != want {
			t.Errorf("ParseLevel(%q) = %v, %v, want %v", in, got, err, want)
		}
	}
	if got, err := ParseLevel("loud"); err == nil {
		t.Errorf("ParseLevel(%q) = %v, want error", "loud", got)
	}
}

func TestLoggerRedactsSecrets(t *testing.T) {
	var buf bytes.Buffer
	l := NewLogger(&buf, "debug", "proj")
	ctx := spanContext(t, true)
	l.InfoContext(ctx, "named like a key", "apiKey", apiKey, "api_key", apiKey, "Authorization", "Basic "+apiKey)
	l.With("X-Api-Key", apiKey).WithGroup("req").InfoContext(ctx, "grouped", "token", apiKey)

	if strings.Contains(buf.String(), apiKey) {
		t.Fatalf("log output contains the API key:\n%s", buf.String())
	}
	got := lines(t, &buf)
	if len(got) != 2 {
		t.Fatalf("logger wrote %d lines, want 2", len(got))
	}
	if got[0]["apiKey"] != "[redacted]" || got[0]["Authorization"] != "[redacted]" {
		t.Errorf("credential-named attributes = %v, want [redacted]", got[0])
	}
}
