package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// exportedSpan is one line of the console exporter's file (stdouttrace's
// JSON form of a span), with the fields these tests check.
type exportedSpan struct {
	Name        string
	SpanContext struct{ TraceID, SpanID string }
	Parent      struct {
		TraceID, SpanID string
		Remote          bool
	}
	SpanKind   int
	Attributes []struct {
		Key   string
		Value struct{ Value any }
	}
	Status   struct{ Code string }
	Resource []struct {
		Key   string
		Value struct{ Value any }
	}
}

func (s exportedSpan) attr(key string) string {
	for _, a := range s.Attributes {
		if a.Key == key {
			if v, ok := a.Value.Value.(string); ok {
				return v
			}
			b, _ := json.Marshal(a.Value.Value)
			return string(b)
		}
	}
	return ""
}

func (s exportedSpan) service() string {
	for _, a := range s.Resource {
		if a.Key == "service.name" {
			v, _ := a.Value.Value.(string)
			return v
		}
	}
	return ""
}

func readSpans(t *testing.T, file string) []exportedSpan {
	t.Helper()
	f, err := os.Open(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var out []exportedSpan
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		var s exportedSpan
		if json.Unmarshal(sc.Bytes(), &s) == nil && s.Name != "" {
			out = append(out, s)
		}
	}
	return out
}

// tracedPipeline runs ingest and deliver as processes that both export
// spans to one console file, flushed every 100ms, and metrics to another
// (metricsFile), every 200ms.
func tracedPipeline(t *testing.T) (p *pipeline, file string, deliverLogs *syncBuffer) {
	t.Helper()
	dir := t.TempDir()
	file = filepath.Join(dir, "traces.jsonl")
	otel := map[string]string{
		"OTEL_TRACES_EXPORTER":        "console",
		"OTEL_CONSOLE_FILE":           file,
		"OTEL_BSP_SCHEDULE_DELAY":     "100",
		"OTEL_METRICS_EXPORTER":       "console",
		"OTEL_CONSOLE_METRICS_FILE":   metricsFile(file),
		"OTEL_METRIC_EXPORT_INTERVAL": "200",
		"LOG_LEVEL":                   "debug",
	}
	p = newPipeline(t, pipelineOptions{noDeliver: true, ingestEnv: otel, deliverEnv: otel})
	_, deliverLogs = p.startDeliverProcessLogs(buildBinary(t, "deliver", "."))
	return p, file, deliverLogs
}

// TestOneTracePerEvent: a caller's traceparent at ingest carries through
// every span of the event, across Pub/Sub, to the traceparent header of
// each Startdeliver call; the spans nest as the event travelled; and no
// span, attribute or log line holds the API key.
func TestOneTracePerEvent(t *testing.T) {
	p, file, deliverLogs := tracedPipeline(t)
	key := "sd-trace-secret-key"
	p.addAccount(key, simpleAccount)

	const (
		callerTrace = "4bf92f3577b34da6a3ce929d0e0e4736"
		callerSpan  = "00f067aa0ba902b7"
	)
	code, body := p.postWithHeaders("/", key, `{"type":"track","userId":"trace-user","event":"Traced","messageId":"trace-1"}`,
		map[string]string{"traceparent": "00-" + callerTrace + "-" + callerSpan + "-01"})
	if code != 200 {
		t.Fatalf("POST / = %d %s", code, body)
	}
	waitfor.Within(t, 30*time.Second, "the usage record", func() bool { return len(p.sd.Usage(key)) == 1 })

	want := []string{"POST /", "publish " + p.topic, "process segment-events", "dedupe check", "config lookup",
		"GET /user", "POST /user", "POST /usage", "record completion"}
	var spans []exportedSpan
	waitfor.Within(t, 30*time.Second, "every span of the event in the file", func() bool {
		spans = nil
		for _, s := range readSpans(t, file) {
			if s.SpanContext.TraceID == callerTrace {
				spans = append(spans, s)
			}
		}
		return hasSpans(spans, want)
	})
	byName := map[string]exportedSpan{}
	byID := map[string]exportedSpan{}
	for _, s := range spans {
		byName[s.Name] = s
		byID[s.SpanContext.SpanID] = s
	}
	server, publish, process := byName["POST /"], byName["publish "+p.topic], byName["process segment-events"]
	if server.Parent.SpanID != callerSpan || server.service() != "ingest" {
		t.Errorf("ingest server span parent = %s (service %s), want the caller's span %s", server.Parent.SpanID, server.service(), callerSpan)
	}
	if publish.Parent.SpanID != server.SpanContext.SpanID {
		t.Errorf("publish span's parent = %s, want ingest's server span", publish.Parent.SpanID)
	}
	if process.Parent.SpanID != publish.SpanContext.SpanID || process.service() != "deliver" {
		t.Errorf("deliver's process span parent = %s (service %s), want the publish span", process.Parent.SpanID, process.service())
	}
	for _, name := range []string{"dedupe check", "config lookup", "GET /user", "POST /user", "POST /usage", "record completion"} {
		if !descends(byName[name], process.SpanContext.SpanID, byID) {
			t.Errorf("span %q is not under deliver's process span", name)
		}
	}
	checks := map[string][2]string{
		"server status":      {server.attr("http.response.status_code"), "200"},
		"server route":       {server.attr("http.route"), "/"},
		"messaging.system":   {publish.attr("messaging.system"), "gcp_pubsub"},
		"publish message id": {publish.attr("segment.message_id"), "trace-1"},
		"publish account":    {publish.attr("account.id"), envelope.AccountID(key)},
		"process system":     {process.attr("messaging.system"), "gcp_pubsub"},
		"process message id": {process.attr("segment.message_id"), "trace-1"},
		"outcome":            {process.attr("delivery.outcome"), "delivered"},
		"config source":      {byName["config lookup"].attr("config.source"), "firestore"},
		"status":             {process.Status.Code, "Ok"},
		"usage status":       {byName["POST /usage"].attr("http.response.status_code"), "200"},
		// Pub/Sub's id, as ingest was told it and as deliver received it.
		"pubsub message id": {publish.attr("messaging.message.id"), process.attr("messaging.message.id")},
	}
	if publish.attr("messaging.message.id") == "" {
		t.Errorf("publish span has no messaging.message.id")
	}
	for what, c := range checks {
		if c[0] != c[1] {
			t.Errorf("%s = %q, want %q", what, c[0], c[1])
		}
	}

	// Startdeliver saw the caller's trace on every call for this account.
	calls := 0
	for _, r := range p.sd.Requests() {
		if r.KeyHash != startdelivertest.KeyHash(key) {
			continue
		}
		calls++
		if !strings.Contains(r.Traceparent, callerTrace) {
			t.Errorf("%s %s reached Startdeliver with traceparent %q, want trace %s", r.Method, r.Path, r.Traceparent, callerTrace)
		}
	}
	if calls < 3 {
		t.Errorf("Startdeliver saw %d calls, want at least 3 (find, create, usage)", calls)
	}

	// The key is nowhere: spans, attributes, events, logs.
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	for where, text := range map[string]string{"spans": string(raw), "ingest log": p.ingestLogs.String(), "deliver log": deliverLogs.String()} {
		if strings.Contains(text, key) {
			t.Errorf("the API key appears in the %s", where)
		}
	}
	if !strings.Contains(deliverLogs.String(), `"logging.googleapis.com/trace"`) {
		t.Errorf("deliver's log lines carry no trace field")
	}

	// Both services' metrics tell the same story, by account hash, and
	// hold no key either.
	acct := envelope.AccountID(key)
	keys := map[string][]string{
		"ingest.events.received":       {"type"},
		"ingest.events.published":      {"type", "account"},
		"deliver.events":               {"outcome", "type", "account"},
		"deliver.config.lookups":       {"source", "result"},
		"deliver.end_to_end.duration":  {"type"},
		"http.client.request.duration": {"http.request.method", "url.template", "http.response.status_code"},
	}
	wantMetrics := map[string]float64{
		"ingest.events.received{type=track}":                                                                       1,
		"ingest.events.published{type=track,account=" + acct + "}":                                                 1,
		"deliver.events{outcome=delivered,type=track,account=" + acct + "}":                                        1,
		"deliver.config.lookups{source=firestore,result=found}":                                                    1,
		"deliver.end_to_end.duration{type=track}":                                                                  1,
		"http.client.request.duration{http.request.method=POST,url.template=/usage,http.response.status_code=200}": 1,
	}
	exported := func(got map[string]float64) bool {
		for k, v := range wantMetrics {
			if got[k] != v {
				return false
			}
		}
		return true
	}
	got := readMetrics(t, metricsFile(file), keys)
	for deadline := time.Now().Add(30 * time.Second); !exported(got) && time.Now().Before(deadline); {
		time.Sleep(50 * time.Millisecond)
		got = readMetrics(t, metricsFile(file), keys)
	}
	for k, v := range wantMetrics {
		if got[k] != v {
			t.Errorf("exported %s = %v, want %v (all: %v)", k, got[k], v, got)
		}
	}
	raw, err = os.ReadFile(metricsFile(file))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), key) {
		t.Errorf("the API key appears in the metrics")
	}
}

// TestCallerDoesNotSteerTracing: at the edge only traceparent and
// tracestate are taken from a caller, and ingest decides what is sampled: a
// caller's unsampled flag does not hide the event's trace (the default
// sampler samples every request), and a caller's baggage reaches neither
// the spans nor Startdeliver, while its trace id still does.
func TestCallerDoesNotSteerTracing(t *testing.T) {
	p, file, _ := tracedPipeline(t)
	key := "sd-trace-steer-key"
	p.addAccount(key, simpleAccount)
	const callerTrace = "5cf92f3577b34da6a3ce929d0e0e4736"
	code, body := p.postWithHeaders("/", key, `{"type":"track","userId":"steer-user","event":"Steered","messageId":"trace-steer"}`,
		map[string]string{
			"traceparent": "00-" + callerTrace + "-00f067aa0ba902b7-00",
			"tracestate":  "vendor=opaque",
			"baggage":     "planted=baggage-from-caller",
		})
	if code != 200 {
		t.Fatalf("POST / = %d %s", code, body)
	}
	waitfor.Within(t, 30*time.Second, "the usage record", func() bool { return len(p.sd.Usage(key)) == 1 })
	var spans []exportedSpan
	waitfor.Within(t, 30*time.Second, "the event's spans, exported although the caller's flag was unsampled", func() bool {
		spans = nil
		for _, s := range readSpans(t, file) {
			if s.SpanContext.TraceID == callerTrace {
				spans = append(spans, s)
			}
		}
		return hasSpans(spans, []string{"POST /", "publish " + p.topic, "process segment-events", "POST /usage"})
	})
	calls := 0
	for _, r := range p.sd.Requests() {
		if r.KeyHash != startdelivertest.KeyHash(key) {
			continue
		}
		calls++
		if !strings.Contains(r.Traceparent, callerTrace) || !strings.HasSuffix(r.Traceparent, "-01") {
			t.Errorf("%s %s reached Startdeliver with traceparent %q, want the caller's trace, sampled", r.Method, r.Path, r.Traceparent)
		}
		if r.Tracestate != "vendor=opaque" {
			t.Errorf("%s %s reached Startdeliver with tracestate %q, want the caller's", r.Method, r.Path, r.Tracestate)
		}
		if r.Baggage != "" {
			t.Errorf("%s %s reached Startdeliver with baggage %q, want none", r.Method, r.Path, r.Baggage)
		}
	}
	if calls == 0 {
		t.Fatalf("Startdeliver saw no call for the account")
	}
	raw, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(raw), "baggage-from-caller") {
		t.Errorf("the caller's baggage is in the exported spans")
	}
}

// TestTraceWithoutCaller: without a caller's traceparent, ingest's server
// span is the root of the event's one trace.
func TestTraceWithoutCaller(t *testing.T) {
	p, file, _ := tracedPipeline(t)
	key := "sd-trace-root-key"
	p.addAccount(key, simpleAccount)
	p.send(key, `{"type":"page","userId":"root-user","name":"Home","messageId":"trace-root"}`, "")
	waitfor.Within(t, 30*time.Second, "the usage record", func() bool { return len(p.sd.Usage(key)) == 1 })
	var trace []exportedSpan
	waitfor.Within(t, 30*time.Second, "the event's trace", func() bool {
		all := readSpans(t, file)
		id := ""
		for _, s := range all {
			if s.Name == "publish "+p.topic && s.attr("segment.message_id") == "trace-root" {
				id = s.SpanContext.TraceID
			}
		}
		trace = nil
		for _, s := range all {
			if id != "" && s.SpanContext.TraceID == id {
				trace = append(trace, s)
			}
		}
		return hasSpans(trace, []string{"POST /", "process segment-events", "POST /usage"})
	})
	roots := 0
	for _, s := range trace {
		if s.Parent.SpanID == "" || s.Parent.SpanID == "0000000000000000" {
			roots++
			if s.Name != "POST /" {
				t.Errorf("root span = %q, want ingest's POST /", s.Name)
			}
		}
	}
	if roots != 1 {
		t.Errorf("the trace has %d roots, want 1", roots)
	}
}

// metricsFile is where tracedPipeline's processes export metrics, next to
// the spans' file.
func metricsFile(spans string) string {
	return filepath.Join(filepath.Dir(spans), "metrics.jsonl")
}

// exportedMetrics is one line of the console metric exporter's file
// (stdoutmetric's JSON form of one collection).
type exportedMetrics struct {
	ScopeMetrics []struct {
		Metrics []struct {
			Name string
			Data struct {
				DataPoints []struct {
					Attributes []struct {
						Key   string
						Value struct{ Value any }
					}
					Value *float64 // sums
					Count *float64 // histograms
				}
			}
		}
	}
}

// readMetrics returns, per metric and the attributes named in keys (in
// that order), the highest value any process exported (the counts are
// cumulative): "deliver.events{outcome=delivered}" → 1.
func readMetrics(t *testing.T, file string, keys map[string][]string) map[string]float64 {
	t.Helper()
	raw, err := os.ReadFile(file)
	if os.IsNotExist(err) {
		return nil
	}
	if err != nil {
		t.Fatal(err)
	}
	out := map[string]float64{}
	for line := range strings.Lines(string(raw)) {
		var rm exportedMetrics
		if json.Unmarshal([]byte(line), &rm) != nil {
			continue
		}
		for _, sm := range rm.ScopeMetrics {
			for _, m := range sm.Metrics {
				names, ok := keys[m.Name]
				if !ok {
					continue
				}
				// One process's data points of one collection add up per
				// selected attributes; the other attributes are summed over.
				sums := map[string]float64{}
				for _, dp := range m.Data.DataPoints {
					attrs := map[string]string{}
					for _, a := range dp.Attributes {
						attrs[a.Key] = fmt.Sprint(a.Value.Value)
					}
					var parts []string
					for _, k := range names {
						parts = append(parts, k+"="+attrs[k])
					}
					id := m.Name + "{" + strings.Join(parts, ",") + "}"
					switch {
					case dp.Count != nil:
						sums[id] += *dp.Count
					case dp.Value != nil:
						sums[id] += *dp.Value
					}
				}
				for id, v := range sums {
					out[id] = max(out[id], v)
				}
			}
		}
	}
	return out
}

func hasSpans(spans []exportedSpan, names []string) bool {
	have := map[string]bool{}
	for _, s := range spans {
		have[s.Name] = true
	}
	for _, n := range names {
		if !have[n] {
			return false
		}
	}
	return true
}

// descends reports whether s has ancestor among the spans in byID.
func descends(s exportedSpan, ancestor string, byID map[string]exportedSpan) bool {
	for range 20 {
		if s.Parent.SpanID == ancestor {
			return true
		}
		parent, ok := byID[s.Parent.SpanID]
		if !ok {
			return false
		}
		s = parent
	}
	return false
}
