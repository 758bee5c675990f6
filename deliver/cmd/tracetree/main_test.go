package main

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/startdeliver/segment-destination/shared/telemetry"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/trace"
)

var base = time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)

func at(ms int) time.Time { return base.Add(time.Duration(ms) * time.Millisecond) }

// spanAt starts and ends a span at fixed times, so the printed tree does
// not depend on the clock.
func spanAt(ctx context.Context, tr trace.Tracer, name string, kind trace.SpanKind, start, end int, attrs ...attribute.KeyValue) context.Context {
	ctx, s := tr.Start(ctx, name, trace.WithTimestamp(at(start)), trace.WithSpanKind(kind), trace.WithAttributes(attrs...))
	s.End(trace.WithTimestamp(at(end)))
	return ctx
}

// writeSpans records two traces the way the services would, through the
// real SDK and telemetry's console file exporter, and returns the file.
//
// Trace 4bf9... continues a caller's traceparent: ingest's request and
// publish, then deliver's processing (config lookup and a failed
// Startdeliver call). A second, later trace is one ingest request.
func writeSpans(t *testing.T) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "traces.jsonl")
	// Setup reads OpenTelemetry's variables from the process environment.
	t.Setenv("OTEL_TRACES_EXPORTER", "console")
	t.Setenv("OTEL_CONSOLE_FILE", path)
	t.Setenv("OTEL_METRICS_EXPORTER", "none")
	setup := func(service string) (func(context.Context) error, trace.Tracer) {
		flush, err := telemetry.Setup(context.Background(), telemetry.Config{ServiceName: service})
		if err != nil {
			t.Fatalf("telemetry.Setup(%s): %v", service, err)
		}
		return flush, otel.Tracer("tracetree-test")
	}
	shutdown := func(flush func(context.Context) error) {
		if err := flush(context.Background()); err != nil {
			t.Fatalf("Shutdown: %v", err)
		}
	}

	// ingest
	tel, tr := setup("ingest")
	caller := telemetry.Extract(context.Background(), map[string]string{
		"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	})
	req := spanAt(caller, tr, "POST /v1/track", trace.SpanKindServer, 0, 12,
		attribute.String("http.request.method", "POST"),
		attribute.String("http.route", "/v1/track"),
		attribute.Int("http.response.status_code", 200),
		attribute.String("network.protocol.version", "1.1"))
	pub := spanAt(req, tr, "segment-events publish", trace.SpanKindProducer, 2, 10,
		attribute.String("messaging.system", "gcp_pubsub"),
		attribute.String("messaging.message.id", "pm-1"),
		attribute.String("segment.message_id", "msg-1"))
	carrier := telemetry.Inject(pub)
	spanAt(context.Background(), tr, "POST /v1/identify", trace.SpanKindServer, 1000, 1005,
		attribute.String("segment.message_id", "msg-2"))
	shutdown(tel)

	// deliver
	tel, tr = setup("deliver")
	ctx, proc := tr.Start(telemetry.Extract(context.Background(), carrier), "segment-events process",
		trace.WithTimestamp(at(20)), trace.WithSpanKind(trace.SpanKindConsumer),
		trace.WithAttributes(attribute.String("segment.message_id", "msg-1"), attribute.String("outcome", "retried")))
	spanAt(ctx, tr, "config lookup", trace.SpanKindInternal, 21, 22, attribute.Bool("cache.hit", true))
	_, call := tr.Start(ctx, "PUT /customers", trace.WithTimestamp(at(25)), trace.WithSpanKind(trace.SpanKindClient),
		trace.WithAttributes(attribute.Int("http.response.status_code", 500)))
	call.RecordError(errors.New("startdeliver: 500 Internal Server Error"), trace.WithTimestamp(at(64)))
	call.SetStatus(codes.Error, "")
	call.End(trace.WithTimestamp(at(65)))
	proc.SetStatus(codes.Error, "startdeliver 500")
	proc.End(trace.WithTimestamp(at(70)))
	shutdown(tel)
	return path
}

const wantTree = `trace 4bf92f3577b34da6a3ce929d0e0e4736  2026-01-02T03:04:05Z  5 spans  70ms
      +0s      12ms  POST /v1/track  (ingest server)  [parent 00f067aa0ba902b7 not in file]  http.request.method=POST  http.route=/v1/track  http.response.status_code=200
     +2ms       8ms  └─ segment-events publish  (ingest producer)  messaging.system=gcp_pubsub  messaging.message.id=pm-1  segment.message_id=msg-1
    +20ms      50ms     └─ segment-events process  (deliver consumer)  ERROR: startdeliver 500  segment.message_id=msg-1  outcome=retried
    +21ms       1ms        ├─ config lookup  (deliver internal)  cache.hit=true
    +25ms      40ms        └─ PUT /customers  (deliver client)  ERROR  http.response.status_code=500
                                ! exception: startdeliver: 500 Internal Server Error
`

const wantSecond = `trace %s  2026-01-02T03:04:06Z  1 spans  5ms
      +0s       5ms  POST /v1/identify  (ingest server)  segment.message_id=msg-2
`

func TestRun(t *testing.T) {
	path := writeSpans(t)
	// The id of the second trace is random; read it from the listing.
	var list bytes.Buffer
	if err := run([]string{"-file", path}, noEnv, &list, &bytes.Buffer{}); err != nil {
		t.Fatalf("run(list) error: %v", err)
	}
	listLines := strings.Split(strings.TrimSpace(list.String()), "\n")
	if len(listLines) != 2 {
		t.Fatalf("run(list) wrote %d lines, want 2:\n%s", len(listLines), list.String())
	}
	secondID := strings.Fields(listLines[1])[0]
	second := strings.Replace(wantSecond, "%s", secondID, 1)

	tests := []struct {
		name string
		args []string
		env  map[string]string
		want string
	}{
		{
			name: "list",
			args: []string{"-file", path},
			want: "4bf92f3577b34da6a3ce929d0e0e4736  2026-01-02T03:04:05.000Z    5 spans       70ms  POST /v1/track (ingest)\n" +
				secondID + "  2026-01-02T03:04:06.000Z    1 spans        5ms  POST /v1/identify (ingest)\n",
		},
		{
			name: "list the latest one",
			args: []string{"-file", path, "-n", "1"},
			want: secondID + "  2026-01-02T03:04:06.000Z    1 spans        5ms  POST /v1/identify (ingest)\n",
		},
		{name: "trace by id", args: []string{"-file", path, "-trace", "4bf92f3577b34da6a3ce929d0e0e4736"}, want: wantTree},
		{name: "trace by prefix", args: []string{"-file", path, "-trace", "4BF92F"}, want: wantTree},
		{name: "by segment messageId", args: []string{"-file", path, "-message", "msg-1"}, want: wantTree},
		{name: "by pubsub message id", args: []string{"-file", path, "-message", "pm-1"}, want: wantTree},
		{name: "last", args: []string{"-file", path, "-last"}, want: second},
		{name: "file from OTEL_CONSOLE_FILE", args: []string{"-last"}, env: map[string]string{"OTEL_CONSOLE_FILE": path}, want: second},
		{
			name: "verbose shows transport attributes",
			args: []string{"-file", path, "-message", "msg-1", "-v"},
			want: strings.Replace(wantTree, "http.response.status_code=200\n", "http.response.status_code=200  network.protocol.version=1.1\n", 1),
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var out, errOut bytes.Buffer
			if err := run(tt.args, func(k string) string { return tt.env[k] }, &out, &errOut); err != nil {
				t.Fatalf("run(%q) error: %v", tt.args, err)
			}
			if diff := cmp.Diff(tt.want, out.String()); diff != "" {
				t.Errorf("run(%q) output mismatch (-want +got):\n%s", tt.args, diff)
			}
			if errOut.Len() > 0 {
				t.Errorf("run(%q) wrote to stderr: %s", tt.args, errOut.String())
			}
		})
	}
}

func TestRunErrors(t *testing.T) {
	path := writeSpans(t)
	empty := filepath.Join(t.TempDir(), "empty.jsonl")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		args []string
		want string // in the error
	}{
		{"unknown trace", []string{"-file", path, "-trace", "ffff"}, "no trace ffff"},
		{"unknown message", []string{"-file", path, "-message", "nope"}, `"nope"`},
		{"two modes", []string{"-file", path, "-last", "-message", "msg-1"}, "at most one"},
		{"missing file", []string{"-file", filepath.Join(t.TempDir(), "none.jsonl")}, "open span file"},
		{"empty file", []string{"-file", empty}, "no spans yet"},
		{"stray argument", []string{"-file", path, "extra"}, "unexpected arguments"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := run(tt.args, noEnv, &bytes.Buffer{}, &bytes.Buffer{})
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("run(%q) = %v, want error containing %q", tt.args, err, tt.want)
			}
		})
	}
}

// TestRunSkipsPartialLine checks that a line still being written by a
// service does not stop the tool.
func TestRunSkipsPartialLine(t *testing.T) {
	path := writeSpans(t)
	f, err := os.OpenFile(path, os.O_APPEND|os.O_WRONLY, 0)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := f.WriteString(`{"Name":"half a sp`); err != nil {
		t.Fatal(err)
	}
	f.Close()
	var out, errOut bytes.Buffer
	if err := run([]string{"-file", path, "-trace", "4bf92f"}, noEnv, &out, &errOut); err != nil {
		t.Fatalf("run error: %v", err)
	}
	if diff := cmp.Diff(wantTree, out.String()); diff != "" {
		t.Errorf("output mismatch (-want +got):\n%s", diff)
	}
	if want := "skipped 1 line(s)"; !strings.Contains(errOut.String(), want) {
		t.Errorf("stderr = %q, want it to contain %q", errOut.String(), want)
	}
}

func noEnv(string) string { return "" }
