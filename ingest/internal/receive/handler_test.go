package receive

import (
	"bytes"
	"compress/gzip"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/keyseal"
)

const (
	goodKey     = "sd-live-good-key"
	disabledKey = "sd-live-disabled-key"
	brokenKey   = "sd-live-firestore-down"
)

type fakeAccounts struct{}

func (fakeAccounts) Check(_ context.Context, id string) error {
	switch id {
	case envelope.AccountID(goodKey):
		return nil
	case envelope.AccountID(disabledKey):
		return accountstore.ErrDisabled
	case envelope.AccountID(brokenKey):
		return errors.New("firestore: connection refused")
	}
	return accountstore.ErrUnknown
}

// fakePublisher records what it publishes; fail makes every publish fail.
type fakePublisher struct {
	mu   sync.Mutex
	msgs []*envelope.Encoded
	fail error
}

func (p *fakePublisher) Publish(_ context.Context, m *envelope.Encoded) (string, error) {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.fail != nil {
		return "", p.fail
	}
	p.msgs = append(p.msgs, m)
	return fmt.Sprint(len(p.msgs)), nil
}

func (p *fakePublisher) published() []*envelope.Encoded {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]*envelope.Encoded(nil), p.msgs...)
}

func basic(key string) string {
	return "Basic " + base64.StdEncoding.EncodeToString([]byte(key+":"))
}

// testSealer seals the handler tests' API keys; testOpener (deliver's side)
// opens them.
var testSealer, testOpener = func() (*keyseal.Sealer, *keyseal.Opener) {
	priv, err := keyseal.NewKeyset()
	if err != nil {
		panic(err)
	}
	pub, err := priv.Public()
	if err != nil {
		panic(err)
	}
	s, err := keyseal.NewSealer(pub, keyseal.SealerOptions{})
	if err != nil {
		panic(err)
	}
	o, err := keyseal.NewOpener(priv)
	if err != nil {
		panic(err)
	}
	return s, o
}()

func newTestHandler(pub *fakePublisher) *Handler {
	n := 0
	return New(Options{
		Publisher: pub,
		Accounts:  fakeAccounts{},
		Sealer:    testSealer,
		Topic:     "segment-events",
		Now:       func() time.Time { return time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC) },
		NewID:     func() string { n++; return fmt.Sprintf("generated-%d", n) },
	})
}

type req struct {
	method, path, body string
	header             map[string]string
	gzip               bool
}

func (r req) do(t *testing.T, h http.Handler) (*httptest.ResponseRecorder, map[string]any) {
	t.Helper()
	var body io.Reader = strings.NewReader(r.body)
	if r.gzip {
		var buf bytes.Buffer
		zw := gzip.NewWriter(&buf)
		zw.Write([]byte(r.body))
		zw.Close()
		body = &buf
	}
	hr := httptest.NewRequest(or(r.method, http.MethodPost), r.path, body)
	hr.Header.Set("Content-Type", "application/json")
	if r.gzip {
		hr.Header.Set("Content-Encoding", "gzip")
	}
	for k, v := range r.header {
		if v == "" {
			hr.Header.Del(k)
		} else {
			hr.Header.Set(k, v)
		}
	}
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, hr)
	var out map[string]any
	_ = json.Unmarshal(rec.Body.Bytes(), &out)
	return rec, out
}

func or(a, b string) string {
	if a == "" {
		return b
	}
	return a
}

const track = `{"type":"track","userId":"97980cfea0067","event":"Login Button Clicked","messageId":"m-1"}`

func settingsHeader(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestStatusCodes(t *testing.T) {
	auth := map[string]string{"Authorization": basic(goodKey)}
	big := `{"type":"track","userId":"u","event":"e","properties":{"x":"` + strings.Repeat("a", 33<<10) + `"}}`
	tests := []struct {
		name       string
		req        req
		pubFail    bool
		wantStatus int
		wantMsg    string // substring of "message"
		wantPubs   int
	}{
		{"destination ok", req{path: "/", body: track, header: auth}, false, 200, "", 1},
		{"destination gzip", req{path: "/", body: track, header: auth, gzip: true}, false, 200, "", 1},
		{"destination settings header", req{path: "/", body: track, header: map[string]string{"Authorization": basic(goodKey), "X-Segment-Settings": settingsHeader(`{"startdeliverUserCustomFieldToMatchOn":"externalId","allowUserIdFallback":true}`)}}, false, 200, "", 1},
		{"bad settings header", req{path: "/", body: track, header: map[string]string{"Authorization": basic(goodKey), "X-Segment-Settings": "%%%"}}, false, 400, "X-Segment-Settings", 0},
		{"no key", req{path: "/", body: track}, false, 401, "Authorization", 0},
		{"unknown key", req{path: "/", body: track, header: map[string]string{"Authorization": basic("nope")}}, false, 401, "unknown API key", 0},
		{"bearer is not basic", req{path: "/", body: track, header: map[string]string{"Authorization": "Bearer x"}}, false, 401, "Basic", 0},
		{"disabled", req{path: "/", body: track, header: map[string]string{"Authorization": basic(disabledKey)}}, false, 403, "disabled", 0},
		{"firestore down", req{path: "/", body: track, header: map[string]string{"Authorization": basic(brokenKey)}}, false, 503, "retry", 0},
		{"malformed json", req{path: "/", body: `{"type":`, header: auth}, false, 400, "invalid JSON", 0},
		{"not an object", req{path: "/", body: `[]`, header: auth}, false, 400, "object", 0},
		{"missing event name", req{path: "/", body: `{"type":"track","userId":"u"}`, header: auth}, false, 400, "event", 0},
		{"missing ids", req{path: "/", body: `{"type":"track","event":"e"}`, header: auth}, false, 400, "userId", 0},
		{"unknown type", req{path: "/", body: `{"type":"purchase","userId":"u"}`, header: auth}, false, 400, "type", 0},
		{"event too large", req{path: "/", body: big, header: auth}, false, 413, "larger", 0},
		{"wrong content type", req{path: "/", body: track, header: map[string]string{"Authorization": basic(goodKey), "Content-Type": "application/x-www-form-urlencoded"}}, false, 415, "Content-Type", 0},
		{"wrong encoding", req{path: "/", body: track, header: map[string]string{"Authorization": basic(goodKey), "Content-Encoding": "br"}}, false, 415, "Content-Encoding", 0},
		{"corrupt gzip", req{path: "/", body: track, header: map[string]string{"Authorization": basic(goodKey), "Content-Encoding": "gzip"}}, false, 400, "gzip", 0},
		{"publish fails", req{path: "/", body: track, header: auth}, true, 503, "retry", 0},
		{"tracking api basic", req{path: "/v1/track", body: track, header: auth}, false, 200, "", 1},
		{"tracking api writeKey", req{path: "/v1/identify", body: `{"userId":"97980cfea0067","writeKey":"` + goodKey + `"}`}, false, 200, "", 1},
		{"tracking api unknown writeKey", req{path: "/v1/track", body: `{"userId":"u","event":"e","writeKey":"bad"}`}, false, 401, "unknown", 0},
		{"tracking api no key", req{path: "/v1/page", body: `{"userId":"u"}`}, false, 401, "writeKey", 0},
		{"tracking api unknown endpoint", req{path: "/v1/purchase", body: track, header: auth}, false, 404, "unknown endpoint", 0},
		{"healthz", req{method: "GET", path: "/healthz"}, false, 200, "", 0},
		{"readyz", req{method: "GET", path: "/readyz"}, false, 200, "", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			pub := &fakePublisher{}
			if tt.pubFail {
				pub.fail = errors.New("pubsub: unavailable")
			}
			rec, body := tt.req.do(t, newTestHandler(pub))
			if rec.Code != tt.wantStatus {
				t.Fatalf("%s %s = %d %s, want %d", or(tt.req.method, "POST"), tt.req.path, rec.Code, rec.Body, tt.wantStatus)
			}
			if tt.wantMsg != "" {
				msg, _ := body["message"].(string)
				if !strings.Contains(msg, tt.wantMsg) {
					t.Errorf("message = %q, want it to mention %q", msg, tt.wantMsg)
				}
			}
			if strings.Contains(rec.Body.String(), goodKey) || strings.Contains(rec.Body.String(), brokenKey) {
				t.Errorf("answer echoes the API key: %s", rec.Body)
			}
			if got := len(pub.published()); got != tt.wantPubs {
				t.Errorf("published %d messages, want %d", got, tt.wantPubs)
			}
		})
	}
}

func TestPublishedEnvelope(t *testing.T) {
	pub := &fakePublisher{}
	h := newTestHandler(pub)
	hdr := map[string]string{
		"Authorization":      basic(goodKey),
		"X-Segment-Settings": settingsHeader(`{"segmentOverrideMatchingField":"properties['Field With Space']","apiKey":"` + goodKey + `"}`),
		"traceparent":        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
	}
	rec, _ := req{path: "/", body: `{"type":"page","anonymousId":"a-1","name":"Home","writeKey":"` + goodKey + `"}`, header: hdr}.do(t, h)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	msgs := pub.published()
	if len(msgs) != 1 {
		t.Fatalf("published %d, want 1", len(msgs))
	}
	m := msgs[0]
	for k, v := range m.Attributes {
		if strings.Contains(v, goodKey) {
			t.Errorf("attribute %s holds the key", k)
		}
	}
	got, err := envelope.Decode(m.Data)
	if err != nil {
		t.Fatal(err)
	}
	if got.Event.MessageID != "generated-1" || m.Attributes[envelope.AttrMessageID] != "generated-1" {
		t.Errorf("messageId = %q / %q, want the generated one", got.Event.MessageID, m.Attributes[envelope.AttrMessageID])
	}
	if !got.Event.ReceivedAt.Equal(time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC)) {
		t.Errorf("receivedAt = %v, want the receive time", got.Event.ReceivedAt)
	}
	if _, ok := got.Event.Raw["writeKey"]; ok {
		t.Errorf("event still carries writeKey")
	}
	if got.Settings == nil || got.Settings.SegmentOverrideMatchingField == nil || *got.Settings.SegmentOverrideMatchingField != "properties['Field With Space']" {
		t.Errorf("settings = %+v, want the header's override", got.Settings)
	}
	if got.AccountID != envelope.AccountID(goodKey) {
		t.Errorf("envelope account = %q, want the key's", got.AccountID)
	}
	// The key is sealed for deliver: not in the body, and it opens only
	// for this account and message.
	if got.APIKey != "" || strings.Contains(string(m.Data), goodKey) || m.Attributes[envelope.AttrVersion] != "2" {
		t.Errorf("published body holds the plain key (version %s)", m.Attributes[envelope.AttrVersion])
	}
	if key, err := testOpener.Open(got.SealedKey, got.AccountID, got.Event.MessageID); err != nil || key != goodKey {
		t.Errorf("Open(sealed key) = %q, %v; want the account's key", key, err)
	}
	if _, err := testOpener.Open(got.SealedKey, got.AccountID, "another-message"); err == nil {
		t.Errorf("sealed key opened for another message")
	}
}

func TestBatch(t *testing.T) {
	pub := &fakePublisher{}
	h := newTestHandler(pub)
	big := `{"type":"track","userId":"u","event":"e","properties":{"x":"` + strings.Repeat("a", 33<<10) + `"}}`
	body := `{"writeKey":"` + goodKey + `","context":{"ip":"1.1.1.1"},"batch":[` +
		`{"type":"track","userId":"u1","event":"a","messageId":"b-0"},` +
		`{"type":"track","userId":"u1","messageId":"b-1"},` +
		big + `,` +
		`{"type":"identify","userId":"u2","traits":{"email":"x@example.com"},"messageId":"b-3"}]}`
	rec, _ := req{path: "/v1/batch", body: body}.do(t, h)
	if rec.Code != 200 {
		t.Fatalf("status %d: %s", rec.Code, rec.Body)
	}
	var res batchResult
	if err := json.Unmarshal(rec.Body.Bytes(), &res); err != nil {
		t.Fatal(err)
	}
	if len(res.Accepted) != 2 || res.Accepted[0].MessageID != "b-0" || res.Accepted[1].Index != 3 {
		t.Errorf("accepted = %+v, want b-0 and index 3", res.Accepted)
	}
	if len(res.Rejected) != 2 || res.Rejected[0].Index != 1 || res.Rejected[0].MessageID != "b-1" || res.Rejected[1].Index != 2 {
		t.Errorf("rejected = %+v, want index 1 (b-1) and 2", res.Rejected)
	}
	if n := len(pub.published()); n != 2 {
		t.Errorf("published %d, want 2", n)
	}
	for _, m := range pub.published() {
		e, err := envelope.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		if e.Event.Context["ip"] != "1.1.1.1" {
			t.Errorf("outer context not merged into %s", e.Event.MessageID)
		}
	}
}

func TestBatchLimits(t *testing.T) {
	items := make([]string, 2501)
	for i := range items {
		items[i] = `{"type":"track","userId":"u","event":"e"}`
	}
	h := newTestHandler(&fakePublisher{})
	rec, _ := req{path: "/v1/batch", body: `{"batch":[` + strings.Join(items, ",") + `]}`, header: map[string]string{"Authorization": basic(goodKey)}}.do(t, h)
	if rec.Code != 413 {
		t.Errorf("2,501 events = %d, want 413", rec.Code)
	}
	huge := `{"batch":[{"type":"track","userId":"u","event":"` + strings.Repeat("x", 501<<10) + `"}]}`
	rec, _ = req{path: "/v1/batch", body: huge, header: map[string]string{"Authorization": basic(goodKey)}}.do(t, h)
	if rec.Code != 413 {
		t.Errorf("501 KB batch = %d, want 413", rec.Code)
	}
	rec, _ = req{path: "/v1/batch", body: huge, gzip: true, header: map[string]string{"Authorization": basic(goodKey)}}.do(t, h)
	if rec.Code != 413 {
		t.Errorf("501 KB batch, gzipped = %d, want 413 (limit applies after decompression)", rec.Code)
	}
}

func TestBatchPublishFailureIs503(t *testing.T) {
	pub := &fakePublisher{fail: errors.New("deadline exceeded")}
	rec, body := req{path: "/v1/batch", body: `{"batch":[{"type":"track","userId":"u","event":"e"}]}`, header: map[string]string{"Authorization": basic(goodKey)}}.do(t, newTestHandler(pub))
	if rec.Code != 503 {
		t.Errorf("status = %d, want 503", rec.Code)
	}
	if _, ok := body["message"]; !ok {
		t.Errorf("body %s has no message", rec.Body)
	}
}

func FuzzSettingsHeaderAndBody(f *testing.F) {
	f.Add(settingsHeader(`{"startdeliverUserCustomFieldToMatchOn":"externalId"}`), track)
	f.Add("", `{"type":"identify","userId":1}`)
	f.Add("e30", `{"batch":[]}`)
	h := newTestHandler(&fakePublisher{})
	f.Fuzz(func(t *testing.T, settings, body string) {
		hdr := map[string]string{"Authorization": basic(goodKey)}
		if settings != "" {
			hdr["X-Segment-Settings"] = settings
		}
		for _, path := range []string{"/", "/v1/batch"} {
			rec, out := req{path: path, body: body, header: hdr}.do(t, h)
			switch rec.Code {
			case 200:
			case 400, 413:
				if _, ok := out["message"].(string); !ok {
					t.Fatalf("%s answered %d without a message: %s", path, rec.Code, rec.Body)
				}
			default:
				t.Fatalf("%s answered %d: %s", path, rec.Code, rec.Body)
			}
		}
	})
}

// TestWriteAcceptedIsWriteJSON checks that the hand-written answer to one
// event is byte for byte what encoding/json writes for it, whatever the
// messageId holds.
func TestWriteAcceptedIsWriteJSON(t *testing.T) {
	for _, id := range []string{"", "m-1", "3f2a9c1e-7b4d-4e8a-9f00-1c2d3e4f5a6b", `a"b`, `a\b`, "<script>&", "tab\there", "\x00\x1f\x7f", "é😀", "\u2028", "\xff"} {
		got, want := httptest.NewRecorder(), httptest.NewRecorder()
		writeAccepted(got, id)
		writeJSON(want, http.StatusOK, map[string]any{"success": true, "messageId": id})
		if got.Code != want.Code || got.Body.String() != want.Body.String() || got.Header().Get("Content-Type") != want.Header().Get("Content-Type") {
			t.Errorf("writeAccepted(%q) = %d %q (%s), want %d %q (%s)", id, got.Code, got.Body, got.Header().Get("Content-Type"), want.Code, want.Body, want.Header().Get("Content-Type"))
		}
	}
}
