package receive

import (
	"bytes"
	"encoding/json"
	"errors"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/startdeliver/segment-destination/shared/envelope"
)

// TestRejectionsNameAccountAndEvent: a refused request's log line and
// server span say which account (the key's hash) and which event it was,
// when ingest knows, and never the key.
func TestRejectionsNameAccountAndEvent(t *testing.T) {
	tests := []struct {
		name   string
		path   string
		key    string
		body   string
		broken bool // the publisher fails
		want   map[string]string
	}{
		{
			name: "publish fails", path: "/", key: goodKey, broken: true,
			body: `{"type":"track","userId":"u","event":"e","messageId":"m-pub"}`,
			want: map[string]string{"status": "503", "account": envelope.AccountID(goodKey), "messageId": "m-pub", "reason": "unavailable"},
		},
		{
			name: "invalid event", path: "/v1/track", key: goodKey,
			body: `{"userId":"u","messageId":"m-bad"}`,
			want: map[string]string{"status": "400", "account": envelope.AccountID(goodKey), "messageId": "m-bad", "reason": "invalid"},
		},
		{
			name: "undecodable body", path: "/", key: goodKey, body: `{"type":`,
			want: map[string]string{"status": "400", "account": envelope.AccountID(goodKey), "messageId": "", "reason": "invalid"},
		},
		{
			name: "disabled account", path: "/", key: disabledKey, body: track,
			want: map[string]string{"status": "403", "account": envelope.AccountID(disabledKey), "messageId": "", "reason": "disabled"},
		},
		{
			name: "no key", path: "/", body: track,
			want: map[string]string{"status": "401", "account": "", "messageId": "", "reason": "unauthenticated"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var logs bytes.Buffer
			pub := &fakePublisher{}
			if tt.broken {
				pub.fail = errors.New("pubsub: unavailable")
			}
			h := New(Options{
				Publisher: pub, Accounts: fakeAccounts{}, Topic: "segment-events",
				Logger: slog.New(slog.NewJSONHandler(&logs, nil)),
			})
			rec := tracetest.NewSpanRecorder()
			tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
			ctx, server := tp.Tracer("test").Start(t.Context(), "POST "+tt.path)
			r := httptest.NewRequestWithContext(ctx, http.MethodPost, tt.path, strings.NewReader(tt.body))
			r.Header.Set("Content-Type", "application/json")
			if tt.key != "" {
				r.SetBasicAuth(tt.key, "")
			}
			w := httptest.NewRecorder()
			h.ServeHTTP(w, r)
			server.End()

			var line map[string]any
			if err := json.Unmarshal(logs.Bytes(), &line); err != nil {
				t.Fatalf("log = %q: %v, want one JSON line", logs.String(), err)
			}
			got := map[string]string{}
			for k := range tt.want {
				if v, ok := line[k]; ok {
					got[k] = strings.TrimSuffix(strings.TrimPrefix(jsonString(v), `"`), `"`)
				} else {
					got[k] = ""
				}
			}
			attrs := map[string]string{}
			for _, s := range rec.Ended() {
				if s.SpanContext().SpanID() != server.SpanContext().SpanID() {
					continue
				}
				for _, a := range s.Attributes() {
					attrs[string(a.Key)] = a.Value.Emit()
				}
			}
			got["reason"] = attrs["ingest.reject_reason"]
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("rejection log fields, reason from the span (-want +got):\n%s", diff)
			}
			if attrs["account.id"] != tt.want["account"] || attrs["segment.message_id"] != tt.want["messageId"] {
				t.Errorf("server span account.id, segment.message_id = %q, %q, want %q, %q",
					attrs["account.id"], attrs["segment.message_id"], tt.want["account"], tt.want["messageId"])
			}
			if tt.key != "" && (strings.Contains(logs.String(), tt.key) || strings.Contains(attrs["account.id"], tt.key)) {
				t.Errorf("the API key appears in the log or the span")
			}
		})
	}
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
