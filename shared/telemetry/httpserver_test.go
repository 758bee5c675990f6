package telemetry

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdkmetric "go.opentelemetry.io/otel/sdk/metric"
	"go.opentelemetry.io/otel/sdk/metric/metricdata"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"
)

// instrumented is a real HTTP server whose handler is wrapped in Server,
// with the SDKs recording into memory: spans as they end, metrics when
// collected. The global providers are put back when the test ends.
type instrumented struct {
	url     string
	spans   *tracetest.SpanRecorder
	metrics *sdkmetric.ManualReader
}

func serveInstrumented(t *testing.T, sampler sdktrace.Sampler, next http.Handler, opts ServerOptions) *instrumented {
	t.Helper()
	prevT, prevM, prevP := otel.GetTracerProvider(), otel.GetMeterProvider(), otel.GetTextMapPropagator()
	spans := tracetest.NewSpanRecorder()
	reader := sdkmetric.NewManualReader()
	otel.SetTracerProvider(sdktrace.NewTracerProvider(sdktrace.WithSampler(sampler), sdktrace.WithSpanProcessor(spans)))
	otel.SetMeterProvider(sdkmetric.NewMeterProvider(sdkmetric.WithReader(reader)))
	otel.SetTextMapPropagator(propagation.TraceContext{})
	t.Cleanup(func() {
		otel.SetTracerProvider(prevT)
		otel.SetMeterProvider(prevM)
		otel.SetTextMapPropagator(prevP)
	})
	srv := httptest.NewServer(Server(next, opts))
	t.Cleanup(srv.Close)
	return &instrumented{url: srv.URL, spans: spans, metrics: reader}
}

// durations is each data point of http.server.request.duration: its
// attributes ("k=v,…" sorted by key) and count.
func (in *instrumented) durations(t *testing.T) map[string]uint64 {
	t.Helper()
	var rm metricdata.ResourceMetrics
	if err := in.metrics.Collect(context.Background(), &rm); err != nil {
		t.Fatal(err)
	}
	out := map[string]uint64{}
	for _, sm := range rm.ScopeMetrics {
		for _, m := range sm.Metrics {
			if m.Name != "http.server.request.duration" {
				continue
			}
			if m.Unit != "s" {
				t.Errorf("http.server.request.duration unit = %q, want s", m.Unit)
			}
			for _, dp := range m.Data.(metricdata.Histogram[float64]).DataPoints {
				var kv []string
				for _, a := range dp.Attributes.ToSlice() {
					kv = append(kv, string(a.Key)+"="+a.Value.Emit())
				}
				out[strings.Join(kv, ",")] += dp.Count
			}
		}
	}
	return out
}

func attrs(s sdktrace.ReadOnlySpan) map[string]string {
	m := map[string]string{}
	for _, a := range s.Attributes() {
		m[string(a.Key)] = a.Value.Emit()
	}
	return m
}

func testMux() *http.ServeMux {
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/{type}", func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.Copy(io.Discard, r.Body)
		// The handler sees the server span as its context's span.
		if !trace.SpanFromContext(r.Context()).SpanContext().IsValid() {
			http.Error(w, "no span in the request's context", http.StatusInternalServerError)
			return
		}
		w.WriteHeader(http.StatusAccepted)
	})
	mux.HandleFunc("POST /fail", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "down", http.StatusServiceUnavailable)
	})
	mux.HandleFunc("POST /refuse", func(w http.ResponseWriter, r *http.Request) {
		http.Error(w, "no", http.StatusUnauthorized)
	})
	mux.HandleFunc("GET /quiet/{$}", func(w http.ResponseWriter, r *http.Request) {})
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) { _, _ = w.Write([]byte("ok")) })
	return mux
}

func do(t *testing.T, method, url string, header map[string]string) int {
	t.Helper()
	req, err := http.NewRequest(method, url, strings.NewReader(`{"x":1}`))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range header {
		req.Header.Set(k, v)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	_, _ = io.Copy(io.Discard, resp.Body)
	_ = resp.Body.Close()
	return resp.StatusCode
}

// TestServerSpan: each request is one server span, child of the caller's
// traceparent, named by SpanName, with the semantic conventions' request
// attributes, the matched route and the answer's status; a 5xx is an
// error, a 4xx is not.
func TestServerSpan(t *testing.T) {
	in := serveInstrumented(t, sdktrace.AlwaysSample(), testMux(), ServerOptions{
		SpanName: func(r *http.Request) string { return r.Method + " " + r.URL.Path },
	})
	const caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
	if code := do(t, "POST", in.url+"/v1/track", map[string]string{
		"traceparent": caller, "User-Agent": "analytics-node/1", "X-Forwarded-For": "203.0.113.7, 10.0.0.1",
	}); code != http.StatusAccepted {
		t.Fatalf("POST /v1/track = %d, want 202", code)
	}
	if code := do(t, "POST", in.url+"/fail", nil); code != http.StatusServiceUnavailable {
		t.Fatalf("POST /fail = %d", code)
	}
	if code := do(t, "POST", in.url+"/refuse", nil); code != http.StatusUnauthorized {
		t.Fatalf("POST /refuse = %d", code)
	}
	ended := in.spans.Ended()
	if len(ended) != 3 {
		t.Fatalf("%d spans, want 3", len(ended))
	}
	track, fail, refuse := ended[0], ended[1], ended[2]
	if track.Name() != "POST /v1/track" || track.SpanKind() != trace.SpanKindServer {
		t.Errorf("span = %q kind %v, want POST /v1/track, server", track.Name(), track.SpanKind())
	}
	if got := track.Parent(); got.TraceID().String() != "4bf92f3577b34da6a3ce929d0e0e4736" || got.SpanID().String() != "00f067aa0ba902b7" || !got.IsRemote() {
		t.Errorf("parent = %v, want the caller's span", got)
	}
	host, port, _ := net.SplitHostPort(strings.TrimPrefix(in.url, "http://"))
	got := attrs(track)
	for k, want := range map[string]string{
		"http.request.method":       "POST",
		"url.scheme":                "http",
		"url.path":                  "/v1/track",
		"http.route":                "/v1/{type}",
		"http.response.status_code": "202",
		"server.address":            host,
		"server.port":               port,
		"network.peer.address":      "127.0.0.1",
		"client.address":            "203.0.113.7",
		"user_agent.original":       "analytics-node/1",
		"network.protocol.version":  "1.1",
	} {
		if got[k] != want {
			t.Errorf("%s = %q, want %q", k, got[k], want)
		}
	}
	if got["network.peer.port"] == "" {
		t.Errorf("no network.peer.port")
	}
	if track.Status().Code != codes.Unset {
		t.Errorf("202's span status = %v, want unset", track.Status())
	}
	if fail.Status().Code != codes.Error || attrs(fail)["http.response.status_code"] != "503" {
		t.Errorf("503's span status = %v, status code %q; want Error, 503", fail.Status(), attrs(fail)["http.response.status_code"])
	}
	if refuse.Status().Code != codes.Unset || attrs(refuse)["http.response.status_code"] != "401" {
		t.Errorf("401's span status = %v, status code %q; want unset, 401", refuse.Status(), attrs(refuse)["http.response.status_code"])
	}
	// Without a caller, a span is a root and the client is the peer.
	do(t, "POST", in.url+"/v1/page", nil)
	last := in.spans.Ended()[3]
	if last.Parent().IsValid() {
		t.Errorf("a request without traceparent has parent %v", last.Parent())
	}
	if a := attrs(last); a["client.address"] != "127.0.0.1" || a["user_agent.original"] != "Go-http-client/1.1" {
		t.Errorf("client.address = %q, user_agent.original = %q", a["client.address"], a["user_agent.original"])
	}
}

// TestServerMetric: every request but the skipped is counted in
// http.server.request.duration by method (a made-up one as _OTHER),
// scheme, route (the pattern, never the path), status and protocol.
func TestServerMetric(t *testing.T) {
	in := serveInstrumented(t, sdktrace.AlwaysSample(), testMux(), ServerOptions{
		Skip: func(r *http.Request) bool { return r.URL.Path == "/healthz" },
	})
	for i := range 3 {
		do(t, "POST", fmt.Sprintf("%s/v1/type%d", in.url, i), nil)
	}
	do(t, "POST", in.url+"/fail", nil)
	do(t, "GET", in.url+"/quiet/", nil)
	do(t, "BREW", in.url+"/v1/track", nil)
	do(t, "GET", in.url+"/healthz", nil)
	got := in.durations(t)
	want := map[string]uint64{
		"http.request.method=POST,http.response.status_code=202,http.route=/v1/{type},network.protocol.version=1.1,url.scheme=http": 3,
		"http.request.method=POST,http.response.status_code=503,http.route=/fail,network.protocol.version=1.1,url.scheme=http":      1,
		// A handler that writes nothing answers 200; an exact pattern's
		// route has no {$}.
		"http.request.method=GET,http.response.status_code=200,http.route=/quiet/,network.protocol.version=1.1,url.scheme=http": 1,
		// No pattern matched the method: no route.
		"http.request.method=_OTHER,http.response.status_code=405,network.protocol.version=1.1,url.scheme=http": 1,
	}
	if len(got) != len(want) {
		t.Errorf("data points:\n%v\nwant\n%v", got, want)
	}
	for k, n := range want {
		if got[k] != n {
			t.Errorf("%s: count %d, want %d", k, got[k], n)
		}
	}
	if n := len(in.spans.Ended()); n != 6 {
		t.Errorf("%d spans, want 6 (none for the skipped probe)", n)
	}
	for _, s := range in.spans.Ended() {
		if s.Name() == "BREW" {
			if a := attrs(s); a["http.request.method"] != "_OTHER" || a["http.request.method_original"] != "BREW" {
				t.Errorf("BREW's method attributes: %v", a)
			}
		}
	}
}

// TestServerUnsampled: an unsampled request has a non-recording span,
// is still counted, and its handler still sees a valid span context.
func TestServerUnsampled(t *testing.T) {
	in := serveInstrumented(t, sdktrace.NeverSample(), testMux(), ServerOptions{})
	if code := do(t, "POST", in.url+"/v1/track", nil); code != http.StatusAccepted {
		t.Fatalf("POST = %d, want 202 (the handler checks its span context)", code)
	}
	if n := len(in.spans.Ended()); n != 0 {
		t.Errorf("%d spans recorded, want 0", n)
	}
	if n := in.durations(t)["http.request.method=POST,http.response.status_code=202,http.route=/v1/{type},network.protocol.version=1.1,url.scheme=http"]; n != 1 {
		t.Errorf("duration count = %d, want 1", n)
	}
}

// TestServerWriterPassesThrough: through the wrapper a handler can still
// flush a streamed answer (as http.Flusher and through
// http.ResponseController) and take over the connection.
func TestServerWriterPassesThrough(t *testing.T) {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /stream", func(w http.ResponseWriter, r *http.Request) {
		_, _ = w.Write([]byte("a\n"))
		w.(http.Flusher).Flush()
		_, _ = w.Write([]byte("b\n"))
		if err := http.NewResponseController(w).Flush(); err != nil {
			t.Errorf("ResponseController.Flush: %v", err)
		}
	})
	mux.HandleFunc("GET /hijack", func(w http.ResponseWriter, r *http.Request) {
		conn, buf, err := http.NewResponseController(w).Hijack()
		if err != nil {
			t.Errorf("Hijack: %v", err)
			return
		}
		defer conn.Close()
		_, _ = buf.WriteString("HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nhi")
		_ = buf.Flush()
	})
	in := serveInstrumented(t, sdktrace.AlwaysSample(), mux, ServerOptions{})
	resp, err := http.Get(in.url + "/stream")
	if err != nil {
		t.Fatal(err)
	}
	line, err := bufio.NewReader(resp.Body).ReadString('\n')
	_ = resp.Body.Close()
	if err != nil || line != "a\n" {
		t.Errorf("stream's first line = %q, %v; want a", line, err)
	}
	if len(resp.TransferEncoding) == 0 || resp.TransferEncoding[0] != "chunked" {
		t.Errorf("stream answer's transfer encoding = %v, want chunked (flushed before the end)", resp.TransferEncoding)
	}
	resp, err = http.Get(in.url + "/hijack")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	_ = resp.Body.Close()
	if string(b) != "hi" {
		t.Errorf("hijacked answer = %q, want hi", b)
	}
}
