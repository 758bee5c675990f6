package telemetry

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"slices"
	"strings"

	"go.opentelemetry.io/otel/trace"

	"github.com/startdeliver/segment-destination/shared/abbrev"
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

// ParseLevel reads a LOG_LEVEL value, in any case: slog's names (debug,
// info, warn, error, and offsets such as INFO+2) or Cloud Logging's
// severities (default, debug, info, notice, warning, error, critical,
// alert, emergency), each at its place among slog's levels; empty means
// info.
func ParseLevel(s string) (l slog.Level, err error) {
	s = strings.TrimSpace(s)
	if l, ok := cloudSeverities[strings.ToLower(s)]; ok {
		return l, nil
	}
	if s != "" && l.UnmarshalText([]byte(s)) != nil {
		return slog.LevelInfo, fmt.Errorf("LOG_LEVEL: unknown level %q (want debug, info, warn or error, or a Cloud Logging severity)", abbrev.String(s, 20))
	}
	return l, nil
}

// cloudSeverities are Cloud Logging's severity names that slog does not
// know, as slog levels: DEFAULT is below DEBUG, NOTICE between INFO and
// WARNING, and CRITICAL, ALERT and EMERGENCY above ERROR (deliver and
// ingest log nothing that high, so they show no lines).
var cloudSeverities = map[string]slog.Level{
	"default":   slog.LevelDebug - 4,
	"notice":    slog.LevelInfo + 2,
	"warning":   slog.LevelWarn,
	"critical":  slog.LevelError + 4,
	"alert":     slog.LevelError + 8,
	"emergency": slog.LevelError + 12,
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
// printed as "[redacted]".
func NewLogger(w io.Writer, level string, projectID string) *slog.Logger {
	lvl, _ := ParseLevel(level)
	root := slog.NewJSONHandler(w, &slog.HandlerOptions{Level: lvl, ReplaceAttr: replaceAttr})
	return slog.New(&traceHandler{Handler: root, root: root, projectID: projectID})
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
	k := separators.Replace(strings.ToLower(key))
	return slices.ContainsFunc(credentialWords, func(w string) bool { return strings.Contains(k, w) })
}

var (
	separators      = strings.NewReplacer("_", "", "-", "", ".", "", " ", "")
	credentialWords = []string{"apikey", "authorization", "password", "secret", "token", "credential", "bearer"}
)

// traceHandler adds the Cloud Logging trace fields from the record's
// context. The fields must be top-level even under WithGroup, so the
// handler remembers the WithAttrs and WithGroup calls and, for a record
// with a span under a group, replays them on top of the root handler given
// the trace fields; without a group they join the record's own attributes.
type traceHandler struct {
	slog.Handler // root with ops applied
	root         slog.Handler
	ops          []func(slog.Handler) slog.Handler
	grouped      bool // a WithGroup is among ops
	projectID    string
}

func (h *traceHandler) Handle(ctx context.Context, r slog.Record) error {
	sc := trace.SpanContextFromContext(ctx)
	if !sc.IsValid() {
		return h.Handler.Handle(ctx, r)
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
		return h.Handler.Handle(ctx, r)
	}
	hh := h.root.WithAttrs(fields)
	for _, op := range h.ops {
		hh = op(hh)
	}
	return hh.Handle(ctx, r)
}

func (h *traceHandler) WithAttrs(attrs []slog.Attr) slog.Handler {
	return h.with(func(x slog.Handler) slog.Handler { return x.WithAttrs(attrs) }, false)
}

func (h *traceHandler) WithGroup(name string) slog.Handler {
	return h.with(func(x slog.Handler) slog.Handler { return x.WithGroup(name) }, name != "")
}

func (h *traceHandler) with(op func(slog.Handler) slog.Handler, group bool) *traceHandler {
	return &traceHandler{Handler: op(h.Handler), root: h.root, ops: append(slices.Clip(h.ops), op),
		grouped: h.grouped || group, projectID: h.projectID}
}
