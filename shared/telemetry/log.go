package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"strings"

	"go.opentelemetry.io/otel/trace"
)

// Cloud Logging's special JSON fields; see
// https://cloud.google.com/logging/docs/structured-logging.
const (
	logKeyTrace        = "logging.googleapis.com/trace"
	logKeySpanID       = "logging.googleapis.com/spanId"
	logKeyTraceSampled = "logging.googleapis.com/trace_sampled"
)

// redacted replaces every value the logger must not print.
const redacted = "[redacted]"

// Secret is a string that never prints: as a log value, with fmt and in
// JSON it shows as "[redacted]". Use Reveal where the value is really
// needed, such as the Authorization header.
type Secret string

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(redacted) }

// String implements fmt.Stringer.
func (Secret) String() string { return redacted }

// GoString implements fmt.GoStringer, for %#v.
func (Secret) GoString() string { return redacted }

// MarshalText implements encoding.TextMarshaler, for JSON and friends.
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }

// Reveal returns the secret itself.
func (s Secret) Reveal() string { return string(s) }

// ParseLevel reads a LOG_LEVEL value: debug, info, warn (or warning) or
// error, in any case; empty means info.
func ParseLevel(s string) (slog.Level, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "debug":
		return slog.LevelDebug, nil
	case "", "info":
		return slog.LevelInfo, nil
	case "warn", "warning":
		return slog.LevelWarn, nil
	case "error":
		return slog.LevelError, nil
	}
	return slog.LevelInfo, fmt.Errorf("LOG_LEVEL: unknown level %q (want debug, info, warn or error)", s)
}

// NewLogger returns a logger that writes one Cloud Logging JSON object per
// line to w: severity, message, time, the record's attributes and, when the
// context passed to a ...Context method holds a valid span, the trace
// fields that link the line to its trace. projectID makes the trace field a
// full resource name (projects/<project>/traces/<id>), which Cloud Logging
// needs to link; empty leaves the bare trace id.
//
// level is LOG_LEVEL as ParseLevel reads it; an unknown value means info
// (validate it with ParseLevel at start to fail instead). Attributes named
// like credentials (api key, authorization, password, secret, token) are
// printed as "[redacted]", a safety net behind the Secret type.
func NewLogger(w io.Writer, level string, projectID string) *slog.Logger {
	lvl, _ := ParseLevel(level)
	root := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl, ReplaceAttr: replaceAttr})
	return slog.New(&traceHandler{root: root, inner: root, projectID: projectID})
}

// replaceAttr renames slog's built-in keys to Cloud Logging's and redacts
// credential-like attributes.
func replaceAttr(groups []string, a slog.Attr) slog.Attr {
	if len(groups) == 0 {
		switch a.Key {
		case slog.LevelKey:
			lvl, _ := a.Value.Any().(slog.Level)
			return slog.String("severity", severity(lvl))
		case slog.MessageKey:
			a.Key = "message"
			return a
		case slog.TimeKey, logKeyTrace, logKeySpanID, logKeyTraceSampled:
			return a
		}
	}
	if sensitiveKey(a.Key) {
		return slog.String(a.Key, redacted)
	}
	return a
}

// severity maps a slog level to Cloud Logging's LogSeverity names.
func severity(l slog.Level) string {
	switch {
	case l < slog.LevelInfo:
		return "DEBUG"
	case l < slog.LevelWarn:
		return "INFO"
	case l < slog.LevelError:
		return "WARNING"
	default:
		return "ERROR"
	}
}

// sensitiveKey reports whether an attribute name looks like it holds a
// credential. It ignores case and separators: api_key, apiKey, X-Api-Key.
func sensitiveKey(key string) bool {
	k := strings.Map(func(r rune) rune {
		switch r {
		case '_', '-', '.', ' ':
			return -1
		}
		return r
	}, strings.ToLower(key))
	for _, s := range []string{"apikey", "authorization", "password", "secret", "token", "credential", "bearer"} {
		if strings.Contains(k, s) {
			return true
		}
	}
	return false
}

// traceHandler adds the Cloud Logging trace fields from the record's
// context. The fields must be top-level even under WithGroup, so the
// handler remembers the WithAttrs and WithGroup calls and, for a record
// with a span, replays them on top of a root handler that carries the trace
// fields.
type traceHandler struct {
	root      slog.Handler // the JSON handler itself
	inner     slog.Handler // root with ops applied
	ops       []func(slog.Handler) slog.Handler
	grouped   bool // a WithGroup is among ops
	projectID string
}

func (h *traceHandler) Enabled(ctx context.Context, l slog.Level) bool {
	return h.inner.Enabled(ctx, l)
}

func (h *traceHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return h.inner.Handle(ctx, r)
	}
	traceID := sc.TraceID().String()
	if h.projectID != "" {
		traceID = "projects/" + h.projectID + "/traces/" + traceID
	}
	fields := []slog.Attr{
		slog.String(logKeyTrace, traceID),
		slog.String(logKeySpanID, sc.SpanID().String()),
		slog.Bool(logKeyTraceSampled, sc.IsSampled()),
	}
	if !h.grouped {
		r = r.Clone()
		r.AddAttrs(fields...)
		return h.inner.Handle(ctx, r)
	}
	hh := h.root.WithAttrs(fields)
	for _, op := range h.ops {
		hh = op(hh)
	}
	return hh.Handle(ctx, r)
}

func (h *traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	if len(attrs) == 0 {
		return h
	}
	return h.with(func(x slog.Handler) slog.Handler { return x.WithAttrs(attrs) }, false)
}

func (h *traceHandler) WithGroup(name string) slog.Handler {
	if name == "" {
		return h
	}
	return h.with(func(x slog.Handler) slog.Handler { return x.WithGroup(name) }, true)
}

func (h *traceHandler) with(op func(slog.Handler) slog.Handler, group bool) *traceHandler {
	ops := make([]func(slog.Handler) slog.Handler, len(h.ops), len(h.ops)+1)
	copy(ops, h.ops)
	return &traceHandler{
		root:      h.root,
		inner:     op(h.inner),
		ops:       append(ops, op),
		grouped:   h.grouped || group,
		projectID: h.projectID,
	}
}
