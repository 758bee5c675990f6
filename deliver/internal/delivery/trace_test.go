package delivery

import (
	"context"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/codes"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"
	"go.opentelemetry.io/otel/trace"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// tracedMessage is message with the trace context of parent in its envelope,
// as ingest sends it.
func tracedMessage(t *testing.T, parent context.Context, event string) Message {
	t.Helper()
	ev, err := segment.Decode([]byte(event))
	if err != nil {
		t.Fatal(err)
	}
	carrier := propagation.MapCarrier{}
	propagation.TraceContext{}.Inject(parent, carrier)
	enc, err := envelope.Encode(&envelope.Message{AccountID: envelope.AccountID(key), APIKey: key, ReceivedAt: time.Now(), Event: ev, Trace: carrier})
	if err != nil {
		t.Fatal(err)
	}
	return Message{ID: "ps-1", Data: enc.Data, Attributes: enc.Attributes, OrderingKey: enc.OrderingKey}
}

// TestSpansTellTheOutcome: the process span continues the trace carried in
// the message, its children show each step (each Startdeliver attempt its
// own span), and its outcome attribute and status tell the message's fate.
func TestSpansTellTheOutcome(t *testing.T) {
	track := `{"type":"track","userId":"u1","event":"e","messageId":"m1"}`
	tests := []struct {
		name       string
		event      string
		setup      func(f *fixture)
		wantStatus codes.Code
		wantAttrs  map[string]string // on the process span
		wantSpans  map[string]int    // child spans by name, at least this many
		wantRetry  int               // "retry" events on the process span
		wantErrors []string          // child spans with status Error
	}{
		{
			name: "delivered", event: track, wantStatus: codes.Ok,
			wantAttrs: map[string]string{"delivery.outcome": OutcomeDelivered, "segment.message_id": "m1", "messaging.system": "gcp_pubsub", "account.id": envelope.AccountID(key)},
			wantSpans: map[string]int{"dedupe check": 1, "config lookup": 1, "GET /user": 1, "POST /user": 1, "POST /usage": 1, "record completion": 1},
		},
		{
			name: "duplicate", event: track, wantStatus: codes.Ok,
			setup:     func(f *fixture) { f.done.done[envelope.AccountID(key)+"/m1"] = OutcomeDelivered },
			wantAttrs: map[string]string{"delivery.outcome": OutcomeDuplicate},
			wantSpans: map[string]int{"dedupe check": 1},
		},
		{
			name: "skipped", event: `{"type":"alias","userId":"u","previousId":"p","messageId":"m1"}`, wantStatus: codes.Ok,
			wantAttrs: map[string]string{"delivery.outcome": OutcomeSkipped},
			wantSpans: map[string]int{"dedupe check": 1, "config lookup": 1, "record completion": 1},
		},
		{
			name: "retried, each attempt its own call", event: track, wantStatus: codes.Error,
			setup: func(f *fixture) {
				f.sd.FailFraction(1, startdelivertest.Fault{Status: 500})
			},
			wantAttrs: map[string]string{"delivery.outcome": OutcomeRetry, "delivery.error_class": "startdeliver-500"},
			// The client's four attempts (startdeliver.Retry's default),
			// one retry event before each repeat.
			wantSpans: map[string]int{"config lookup": 1, "GET /user": 4},
			wantRetry: 3, wantErrors: []string{"GET /user"},
		},
		{
			name: "dead-lettered", event: track, wantStatus: codes.Error,
			setup:     func(f *fixture) { f.acc.entries = nil },
			wantAttrs: map[string]string{"delivery.outcome": OutcomeDeadLettered, "delivery.error_class": ClassUnknown},
			wantSpans: map[string]int{"config lookup": 1, "publish segment-events-dead": 1}, wantErrors: []string{"config lookup"},
		},
		{
			name: "config unavailable", event: track, wantStatus: codes.Error,
			setup:     func(f *fixture) { f.acc.err = errors.New("unavailable") },
			wantAttrs: map[string]string{"delivery.outcome": OutcomeRetry, "delivery.error_class": "unavailable"},
			wantSpans: map[string]int{"config lookup": 1}, wantErrors: []string{"config lookup"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			prevTP, prevProp := otel.GetTracerProvider(), otel.GetTextMapPropagator()
			otel.SetTracerProvider(tp)
			otel.SetTextMapPropagator(propagation.TraceContext{})
			t.Cleanup(func() { otel.SetTracerProvider(prevTP); otel.SetTextMapPropagator(prevProp) })

			f := newFixture(t, simple)
			if tt.setup != nil {
				tt.setup(f)
			}
			parent, publish := tp.Tracer("ingest").Start(context.Background(), "publish segment-events", trace.WithSpanKind(trace.SpanKindProducer))
			m := tracedMessage(t, parent, tt.event)
			publish.End()
			f.p.Process(context.Background(), m)
			if err := tp.ForceFlush(context.Background()); err != nil {
				t.Fatal(err)
			}

			var process sdktrace.ReadOnlySpan
			byID := map[trace.SpanID]sdktrace.ReadOnlySpan{}
			for _, s := range rec.Ended() {
				byID[s.SpanContext().SpanID()] = s
				if s.Name() == "process segment-events" {
					process = s
				}
			}
			if process == nil {
				t.Fatal("no process segment-events span")
			}
			if process.Parent().SpanID() != publish.SpanContext().SpanID() || !process.Parent().IsRemote() {
				t.Errorf("process span's parent = %v, want the remote publish span %v", process.Parent().SpanID(), publish.SpanContext().SpanID())
			}
			if process.SpanKind() != trace.SpanKindConsumer {
				t.Errorf("process span kind = %v, want consumer", process.SpanKind())
			}
			if process.Status().Code != tt.wantStatus {
				t.Errorf("process span status = %v, want %v", process.Status().Code, tt.wantStatus)
			}
			attrs := map[string]string{}
			for _, a := range process.Attributes() {
				attrs[string(a.Key)] = a.Value.Emit()
			}
			for k, v := range tt.wantAttrs {
				if attrs[k] != v {
					t.Errorf("process span %s = %q, want %q", k, attrs[k], v)
				}
			}
			retries := 0
			for _, e := range process.Events() {
				if e.Name == "retry" {
					retries++
				}
			}
			if retries != tt.wantRetry {
				t.Errorf("retry events = %d, want %d", retries, tt.wantRetry)
			}

			got := map[string]int{}
			var failed []string
			for _, s := range rec.Ended() {
				if s.SpanContext().TraceID() != publish.SpanContext().TraceID() {
					t.Errorf("span %q is in trace %v, want the message's %v", s.Name(), s.SpanContext().TraceID(), publish.SpanContext().TraceID())
				}
				for _, a := range s.Attributes() {
					if strings.Contains(a.Value.Emit(), key) {
						t.Errorf("span %q attribute %s holds the API key", s.Name(), a.Key)
					}
				}
				for _, e := range s.Events() {
					for _, a := range e.Attributes {
						if strings.Contains(a.Value.Emit(), key) {
							t.Errorf("span %q event %s attribute %s holds the API key", s.Name(), e.Name, a.Key)
						}
					}
				}
				if s == process || s.Name() == "publish segment-events" {
					continue
				}
				if !under(s, process.SpanContext().SpanID(), byID) {
					t.Errorf("span %q is not under the process span", s.Name())
				}
				if _, ok := tt.wantSpans[s.Name()]; ok {
					got[s.Name()]++
				}
				if s.Status().Code == codes.Error && !contains(failed, s.Name()) {
					failed = append(failed, s.Name())
				}
			}
			for name, n := range tt.wantSpans {
				if got[name] < n {
					t.Errorf("%q spans = %d, want at least %d (all: %v)", name, got[name], n, got)
				}
			}
			if diff := cmp.Diff(tt.wantErrors, failed); diff != "" {
				t.Errorf("child spans with status Error (-want +got):\n%s", diff)
			}
		})
	}
}

// under reports whether s descends from the span ancestor.
func under(s sdktrace.ReadOnlySpan, ancestor trace.SpanID, byID map[trace.SpanID]sdktrace.ReadOnlySpan) bool {
	for range 20 {
		if s.Parent().SpanID() == ancestor {
			return true
		}
		p, ok := byID[s.Parent().SpanID()]
		if !ok {
			return false
		}
		s = p
	}
	return false
}

func contains(list []string, s string) bool {
	for _, v := range list {
		if v == s {
			return true
		}
	}
	return false
}
