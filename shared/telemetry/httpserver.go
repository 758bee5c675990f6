package telemetry

import (
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"time"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	semconv "go.opentelemetry.io/otel/semconv/v1.43.0"
	"go.opentelemetry.io/otel/trace"
)

// scope is the instrumentation scope of this package's spans and metrics.
const scope = "github.com/startdeliver/segment-destination/shared/telemetry"

// ServerOptions configures [Server].
type ServerOptions struct {
	// SpanName names a request's server span; by default its method.
	SpanName func(*http.Request) string
	// Skip, when it reports true, serves a request with neither span nor
	// metric (health probes).
	Skip func(*http.Request) bool
}

// Server wraps next in OpenTelemetry's HTTP server instrumentation, as the
// semantic conventions name it: a server span per request, child of the
// caller's W3C trace context (taken with the global propagator), given
// when the handler is done the request's attributes (http.request.method,
// url.scheme, url.path, server.address and server.port,
// network.peer.address and port, client.address, user_agent.original,
// network.protocol.version), the route that matched (http.route) and the
// answer's http.response.status_code, with status Error for a 5xx; and the
// http.server.request.duration histogram (in seconds, by method, scheme,
// route, status code and protocol version).
//
// It replaces otelhttp.NewHandler at ingest, which cost more in the same
// run: BenchmarkDeployed (ingest/internal/receive) 48–64 µs per event
// with otelhttp's against 37–47 with this, 114 against 85 allocations;
// under load the gap shows at 64 connections and is inside the noise at
// 256 and for batches (docs/benchmarks.md, "The server span"). otelhttp
// builds every attribute before knowing whether the span is sampled, and
// adds them in two calls (the SDK grows the span's attribute slice on each), builds a
// new attribute set for its metrics on every request, records two body
// size histograms beside the duration, and wraps the request body and the
// response writer (httpsnoop's many-interface wrapper). Here the span's
// attributes are built only for a recording span, in one call; the
// metric's attribute sets are built once per (method, scheme, route,
// status, protocol), which are all bounded (the method is one of HTTP's or
// _OTHER, the route is the pattern that matched, never the path); and the
// response writer's wrapper only notes the status (http.ResponseController
// reaches the server's writer through its Unwrap, for Hijack and the like).
func Server(next http.Handler, opts ServerOptions) http.Handler {
	duration, _ := otel.Meter(scope).Float64Histogram("http.server.request.duration",
		metric.WithUnit("s"),
		metric.WithDescription("Duration of HTTP server requests."),
		// The semantic conventions' advice, as otelhttp sets it.
		metric.WithExplicitBucketBoundaries(0.005, 0.01, 0.025, 0.05, 0.075, 0.1, 0.25, 0.5, 0.75, 1, 2.5, 5, 7.5, 10))
	return &server{next: next, opts: opts, tracer: otel.Tracer(scope), duration: duration}
}

type server struct {
	next     http.Handler
	opts     ServerOptions
	tracer   trace.Tracer
	duration metric.Float64Histogram
	// sets holds the metric's attribute sets by metricKey, as
	// []metric.RecordOption.
	sets sync.Map
}

// metricKey is what the duration's attributes are made of; each field
// takes a bounded set of values.
type metricKey struct {
	method, route, proto string
	tls                  bool
	status               int
}

func (s *server) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if s.opts.Skip != nil && s.opts.Skip(r) {
		s.next.ServeHTTP(w, r)
		return
	}
	start := time.Now()
	ctx := otel.GetTextMapPropagator().Extract(r.Context(), propagation.HeaderCarrier(r.Header))
	name := r.Method
	if s.opts.SpanName != nil {
		name = s.opts.SpanName(r)
	}
	method := standardMethod(r.Method)
	ctx, span := s.tracer.Start(ctx, name, serverKind...)
	defer span.End()

	sw := &statusWriter{ResponseWriter: w}
	r2 := r.WithContext(ctx)
	s.next.ServeHTTP(sw, r2)

	status := sw.status
	if status == 0 {
		// Nothing written: net/http answers 200.
		status = http.StatusOK
	}
	route := routeOf(r2.Pattern)
	if span.IsRecording() {
		// All of the request's attributes in one call, now that the
		// status and route are known: the SDK grows a span's attribute
		// slice on each call.
		SetAttributes(span, func(attrs []attribute.KeyValue) []attribute.KeyValue {
			return appendRequestAttributes(attrs, r, method, status, route)
		})
		if status >= 500 {
			span.SetStatus(codes.Error, "")
		}
	}
	s.duration.Record(ctx, time.Since(start).Seconds(),
		s.attributeSet(metricKey{method: method, route: route, proto: protocolVersion(r.Proto), tls: r.TLS != nil, status: status})...)
}

// SetAttributes sets on span, in one call, the attributes fill appends to
// the empty slice it is given: a scratch slice kept for the next span, as
// the SDK copies what SetAttributes is given (the span's own slice grows
// on each call, so one call is also cheaper than several).
func SetAttributes(span trace.Span, fill func([]attribute.KeyValue) []attribute.KeyValue) {
	buf := attrBuffers.Get().(*[]attribute.KeyValue)
	attrs := fill((*buf)[:0])
	span.SetAttributes(attrs...)
	clear(attrs) // no strings kept alive by the pool
	*buf = attrs[:0]
	attrBuffers.Put(buf)
}

var attrBuffers = sync.Pool{New: func() any {
	b := make([]attribute.KeyValue, 0, 16)
	return &b
}}

// serverKind is the span start option of every server span, built once:
// options are interfaces, and a variadic slice of them passed to an
// interface's method is allocated on each call.
var serverKind = []trace.SpanStartOption{trace.WithSpanKind(trace.SpanKindServer)}

// attributeSet returns the duration's attributes for k, built once, as
// the option slice Record takes.
func (s *server) attributeSet(k metricKey) []metric.RecordOption {
	if o, ok := s.sets.Load(k); ok {
		return o.([]metric.RecordOption)
	}
	attrs := []attribute.KeyValue{
		semconv.HTTPRequestMethodKey.String(k.method),
		scheme(k.tls),
		semconv.HTTPResponseStatusCode(k.status),
	}
	if k.route != "" {
		attrs = append(attrs, semconv.HTTPRoute(k.route))
	}
	if k.proto != "" {
		attrs = append(attrs, semconv.NetworkProtocolVersion(k.proto))
	}
	o, _ := s.sets.LoadOrStore(k, []metric.RecordOption{metric.WithAttributeSet(attribute.NewSet(attrs...))})
	return o.([]metric.RecordOption)
}

// appendRequestAttributes appends a server span's attributes from its
// request and its answer's status (and route, when a pattern matched).
func appendRequestAttributes(attrs []attribute.KeyValue, r *http.Request, method string, status int, route string) []attribute.KeyValue {
	attrs = append(attrs, semconv.HTTPRequestMethodKey.String(method), scheme(r.TLS != nil), semconv.HTTPResponseStatusCode(status))
	if route != "" {
		attrs = append(attrs, semconv.HTTPRoute(route))
	}
	if method == "_OTHER" {
		attrs = append(attrs, semconv.HTTPRequestMethodOriginal(r.Method))
	}
	if host, port := splitHostPort(r.Host); host != "" {
		attrs = append(attrs, semconv.ServerAddress(host))
		if port > 0 {
			attrs = append(attrs, semconv.ServerPort(port))
		}
	}
	peer, peerPort := splitHostPort(r.RemoteAddr)
	if peer != "" {
		attrs = append(attrs, semconv.NetworkPeerAddress(peer))
		if peerPort > 0 {
			attrs = append(attrs, semconv.NetworkPeerPort(peerPort))
		}
	}
	// The client is the first address a proxy (Cloud Run's front end)
	// forwarded for, else the peer.
	client, _, _ := strings.Cut(r.Header.Get("X-Forwarded-For"), ",")
	if client = strings.TrimSpace(client); client == "" {
		client = peer
	}
	if client != "" {
		attrs = append(attrs, semconv.ClientAddress(client))
	}
	if ua := r.UserAgent(); ua != "" {
		attrs = append(attrs, semconv.UserAgentOriginal(ua))
	}
	if r.URL != nil && r.URL.Path != "" {
		attrs = append(attrs, semconv.URLPath(r.URL.Path))
	}
	if v := protocolVersion(r.Proto); v != "" {
		attrs = append(attrs, semconv.NetworkProtocolVersion(v))
	}
	return attrs
}

// standardMethod is the method as the semantic conventions name it: one of
// HTTP's, or _OTHER (so that a caller cannot make up metric series).
func standardMethod(m string) string {
	switch m {
	case http.MethodGet, http.MethodPost, http.MethodPut, http.MethodPatch, http.MethodDelete,
		http.MethodHead, http.MethodOptions, http.MethodConnect, http.MethodTrace:
		return m
	}
	return "_OTHER"
}

func scheme(tls bool) attribute.KeyValue {
	if tls {
		return semconv.URLScheme("https")
	}
	return semconv.URLScheme("http")
}

// protocolVersion is "1.1" of "HTTP/1.1": net/http accepts only HTTP/1.0,
// HTTP/1.1 and HTTP/2.0 here, so the values are bounded.
func protocolVersion(proto string) string {
	switch proto {
	case "HTTP/1.1":
		return "1.1"
	case "HTTP/2.0":
		return "2"
	case "HTTP/1.0":
		return "1.0"
	}
	if _, v, ok := strings.Cut(proto, "/"); ok && len(v) <= 3 {
		return v
	}
	return ""
}

// routeOf is the route of a ServeMux pattern ("POST /v1/{type}" →
// "/v1/{type}", "POST /{$}" → "/"), or "" when no pattern matched.
func routeOf(pattern string) string {
	if i := strings.IndexByte(pattern, '/'); i >= 0 {
		return strings.TrimSuffix(pattern[i:], "{$}")
	}
	return ""
}

// splitHostPort splits "host:port", "[v6]:port" or a bare host; port is 0
// when absent or not a number.
func splitHostPort(hostport string) (string, int) {
	host, p, err := net.SplitHostPort(hostport)
	if err != nil {
		return strings.Trim(hostport, "[]"), 0
	}
	port, err := strconv.Atoi(p)
	if err != nil || port < 0 || port > 65535 {
		return host, 0
	}
	return host, port
}

// statusWriter notes the status a handler answers with.
type statusWriter struct {
	http.ResponseWriter
	status int
}

func (w *statusWriter) WriteHeader(code int) {
	// 1xx answers are interim; the final status comes after them.
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(b []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(b)
}

// Flush lets a handler that asserts http.Flusher stream through the
// wrapper.
func (w *statusWriter) Flush() {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	_ = http.NewResponseController(w.ResponseWriter).Flush()
}

// Unwrap is for http.ResponseController.
func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }
