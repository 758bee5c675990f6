package receive

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/startdeliver/segment-destination/shared/segment"
)

// plantedKey is a key that belongs to no account, planted in bodies and
// headers; goodKey (a real account's) is planted too. Neither may come back
// in an answer or a log line.
const plantedKey = "sd-live-planted-7f3a9c1e5b"

// hostile is one request an attacker might send.
type hostile struct {
	name    string
	method  string
	path    string
	header  map[string]string // "Authorization" defaults to goodKey's; "" removes it
	body    []byte
	gzip    bool // compress body and say so
	status  int
	msg     string // substring of the answer's message
	decoded bool   // the body may reach the tree decoder
	// bounds on work, when not zero
	maxScanned, maxInflated int64
}

func nest(n int) string { return strings.Repeat("[", n) + strings.Repeat("]", n) }
func nestObj(n int) string {
	return strings.Repeat(`{"a":`, n) + "1" + strings.Repeat("}", n)
}

func gz(b []byte) []byte {
	var buf bytes.Buffer
	zw, _ := gzip.NewWriterLevel(&buf, gzip.BestCompression)
	zw.Write(b)
	zw.Close()
	return buf.Bytes()
}

// hostileRequests builds the table: deep nesting in every position, huge
// strings and numbers, invalid UTF-8, duplicate keys, keys in every field,
// gzip bombs, oversized headers, wrong methods and types.
func hostileRequests() []hostile {
	var hs []hostile
	add := func(h hostile) { hs = append(hs, h) }
	noAuth := map[string]string{"Authorization": ""}
	deepMsg := "nesting deeper than 64 levels"

	// Deep nesting in every position, for each endpoint and way of
	// authenticating. 16,000 levels, as in the issue.
	positions := map[string]string{
		"top-level":        nest(16000)[:32000],
		"properties":       `{"type":"track","userId":"u","event":"e","properties":{"x":` + nest(15000) + `}}`,
		"traits":           `{"type":"identify","userId":"u","traits":` + nestObj(5000) + `}`,
		"context":          `{"type":"track","userId":"u","event":"e","context":{"a":` + nest(15000) + `}}`,
		"integrations":     `{"type":"track","userId":"u","event":"e","integrations":` + nestObj(5000) + `}`,
		"userId":           `{"type":"track","event":"e","userId":` + nest(15000) + `}`,
		"writeKey value":   `{"type":"track","userId":"u","event":"e","writeKey":` + nest(15000) + `}`,
		"before writeKey":  `{"p":` + nest(15000) + `,"writeKey":"` + plantedKey + `"}`,
		"key then nesting": `{"writeKey":"` + goodKey + `","type":"track","userId":"u","event":"e","properties":` + nestObj(5000) + `}`,
		"65 levels":        `{"type":"track","userId":"u","event":"e","properties":` + nest(64) + `}`,
	}
	for pos, body := range positions {
		for _, path := range []string{"/", "/v1/track"} {
			add(hostile{name: "deep " + pos + " " + path, path: path, body: []byte(body), status: 400, msg: deepMsg, maxScanned: 6 * 66})
			if path != "/" {
				add(hostile{name: "deep " + pos + " unauthenticated " + path, path: path, header: noAuth, body: []byte(body), status: 400, msg: deepMsg, maxScanned: 6 * 66})
			}
		}
		add(hostile{name: "deep " + pos + " gzip", path: "/v1/track", body: []byte(body), gzip: true, status: 400, msg: deepMsg, maxScanned: 6 * 66, maxInflated: readChunk})
	}
	batchPositions := map[string]string{
		"batch item":         `{"batch":[{"type":"track","userId":"u","event":"e"},` + nest(16000) + `]}`,
		"batch array itself": `{"batch":` + nest(16000) + `}`,
		"batch item props":   `{"batch":[{"type":"track","userId":"u","event":"e","properties":` + nestObj(16000) + `}]}`,
		"outer context":      `{"context":{"a":` + nest(16000) + `},"batch":[]}`,
		"outer integrations": `{"integrations":` + nestObj(16000) + `,"batch":[]}`,
		"after the batch":    `{"batch":[],"zzz":` + nest(250000) + `,"writeKey":"` + plantedKey + `"}`,
	}
	for pos, body := range batchPositions {
		add(hostile{name: "deep " + pos, path: "/v1/batch", body: []byte(body), status: 400, msg: deepMsg, maxScanned: int64(len(body) - strings.Count(body, "]") + 64)})
		add(hostile{name: "deep " + pos + " unauthenticated", path: "/v1/batch", header: noAuth, body: []byte(body), status: 400, msg: deepMsg, maxScanned: int64(len(body))})
		add(hostile{name: "deep " + pos + " gzip", path: "/v1/batch", body: []byte(body), gzip: true, status: 400, msg: deepMsg, maxInflated: int64(strings.Index(body, "[[[[") + 2*readChunk)})
	}
	// The gzip bombs: 64 KB and 500 KB of nesting in a few hundred
	// bytes.
	add(hostile{name: "gzip bomb 64 KB nested /v1/track", path: "/v1/track", header: noAuth, body: []byte(strings.Repeat("[", 64<<10)), gzip: true, status: 400, msg: deepMsg, maxInflated: readChunk})
	add(hostile{name: "gzip bomb 500 KB nested /v1/batch", path: "/v1/batch", header: noAuth, body: []byte(strings.Repeat("[", 250000) + strings.Repeat("]", 250000)), gzip: true, status: 400, msg: deepMsg, maxInflated: readChunk})
	add(hostile{name: "gzip bomb 500 KB nested /", path: "/", body: []byte(strings.Repeat("[", 250000) + strings.Repeat("]", 250000)), gzip: true, status: 400, msg: deepMsg, maxInflated: readChunk})
	// Bombs that are valid JSON: refused when the inflated size passes the
	// limit, having inflated no more than the limit and a chunk.
	spaces := []byte(`{"type":"track","userId":"u","event":"e"` + strings.Repeat(" ", 20<<20) + `}`)
	add(hostile{name: "gzip bomb 20 MB of spaces /v1/track", path: "/v1/track", body: spaces, gzip: true, status: 413, msg: "larger than 32768", maxInflated: segment.MaxEventBytes + readChunk})
	add(hostile{name: "gzip bomb 20 MB of spaces /v1/batch", path: "/v1/batch", body: spaces, gzip: true, status: 413, msg: "larger than 512000", maxInflated: segment.MaxRequestBytes + readChunk})
	add(hostile{name: "gzip bomb 20 MB unauthenticated", path: "/v1/batch", header: noAuth, body: spaces, gzip: true, status: 413, msg: "larger than 512000", maxInflated: segment.MaxRequestBytes + readChunk})
	bigString := []byte(`{"batch":[],"writeKey":"` + plantedKey + `","x":"` + strings.Repeat("a", 10<<20) + `"}`)
	add(hostile{name: "gzip bomb 10 MB string", path: "/v1/batch", header: noAuth, body: bigString, gzip: true, status: 413, maxInflated: segment.MaxRequestBytes + readChunk})
	for _, g := range []struct {
		name string
		body []byte
	}{
		{"not gzip at all", []byte(track)},
		{"truncated gzip", gz([]byte(track))[:20]},
		{"gzip with a bad checksum", func() []byte { b := gz([]byte(track)); b[len(b)-6] ^= 0xff; return b }()},
		{"gzip then garbage", append(gz([]byte(track)), []byte(plantedKey)...)},
		{"gzip of the key", gz([]byte(`{"type":"track",,"writeKey":"` + plantedKey + `"}`))},
	} {
		h := hostile{name: g.name, path: "/v1/track", header: map[string]string{"Content-Encoding": "gzip"}, body: g.body, status: 400}
		if g.name == "gzip of the key" {
			h.msg = "at byte 16"
		} else {
			h.msg = "gzip"
		}
		add(h)
	}

	// Syntax errors placed just before a key: the answer says where, never
	// what follows.
	for i, b := range []string{
		`{"type":"track",,"writeKey":"` + plantedKey + `"}`,
		`{"writeKey":"` + plantedKey + `"`,
		`{"type":"track","userId":"u" "writeKey":"` + plantedKey + `"}`,
		`{"type":"track","writeKey":"` + plantedKey + `,"userId":"u"}`,
		`{"type":"track","writeKey":` + plantedKey + `}`,
		`{"type":"track","userId":"` + goodKey + `\q"}`,
		`{"type":"track","writeKey":"` + plantedKey + `"} ` + plantedKey,
		`{"type":"track","userId":"` + plantedKey + "\x01" + `"}`,
		`{"` + plantedKey + `" 1}`,
		`{"type":"track","n":-` + plantedKey + `}`,
	} {
		for _, path := range []string{"/", "/v1/track", "/v1/batch"} {
			add(hostile{name: fmt.Sprintf("syntax %d %s", i, path), path: path, body: []byte(b), status: 400, msg: "invalid JSON at byte"})
		}
	}
	add(hostile{name: "syntax error offset", path: "/v1/track", header: noAuth, body: []byte(`{"type":"track",,"writeKey":"` + plantedKey + `"}`), status: 400, msg: "at byte 16"})

	// Huge strings and numbers.
	huge := strings.Repeat("x", 40<<10)
	add(hostile{name: "huge string /", path: "/", body: []byte(`{"type":"track","userId":"u","event":"` + huge + `"}`), status: 413, msg: "larger than 32768"})
	add(hostile{name: "huge string declared length", path: "/v1/track", header: map[string]string{"Content-Length": "600000"}, body: []byte(`{"type":"track","userId":"u","event":"` + huge + `"}`), status: 413})
	add(hostile{name: "huge key name", path: "/v1/track", body: []byte(`{"` + huge + `":1}`), status: 413})
	add(hostile{name: "huge batch", path: "/v1/batch", body: []byte(`{"batch":[{"type":"track","userId":"u","event":"` + strings.Repeat("x", 501<<10) + `"}]}`), status: 413, msg: "larger than 512000"})
	add(hostile{name: "huge number", path: "/v1/track", body: []byte(`{"type":"track","userId":"u","event":"e","properties":{"n":` + strings.Repeat("9", 20000) + `}}`), status: 400, msg: "number longer than 128"})
	add(hostile{name: "huge exponent", path: "/v1/track", body: []byte(`{"type":"track","userId":"u","event":"e","properties":{"n":1e` + strings.Repeat("9", 200) + `}}`), status: 400, msg: "number longer than 128"})
	add(hostile{name: "big but short number", path: "/v1/track", body: []byte(`{"type":"track","userId":"u","event":"e","properties":{"n":1e999999999}}`), status: 200, decoded: true})
	add(hostile{name: "huge messageId of keys", path: "/v1/track", body: []byte(`{"type":"track","userId":"u","event":"e","messageId":"` + strings.Repeat(goodKey, 10) + `"}`), status: 400, msg: "messageId", decoded: true})
	add(hostile{name: "too many batch events", path: "/v1/batch", body: []byte(`{"batch":[` + strings.TrimSuffix(strings.Repeat("{},", 2501), ",") + `]}`), status: 413, msg: "at most 2500"})
	add(hostile{name: "outer context over its cap", path: "/v1/batch", body: []byte(`{"context":{"x":"` + strings.Repeat("c", segment.MaxOuterBytes) + `"},"batch":[{"type":"track","userId":"u","event":"e"}]}`), status: 413, msg: "context and integrations"})
	add(hostile{name: "outer context with too many keys", path: "/v1/batch", body: []byte(`{"context":{` + strings.TrimSuffix(strings.Repeat(`"k":1,`, 1), ",") + manyKeys(100) + `},"batch":[{"type":"track","userId":"u","event":"e"}]}`), status: 413, msg: "top-level keys; at most 64"})
	add(hostile{name: "outer integrations over its cap", path: "/v1/batch", body: []byte(`{"integrations":{"x":{"k":"` + strings.Repeat("c", segment.MaxOuterBytes) + `"}},"batch":[{"type":"track","userId":"u","event":"e"}]}`), status: 413, msg: "context and integrations"})

	// Invalid UTF-8, in values and keys, with and without authentication.
	for i, b := range []string{
		"{\"type\":\"track\",\"userId\":\"\xff\xfe\",\"event\":\"e\"}",
		"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"\xc3\x28\"}",
		"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"properties\":{\"\xed\xa0\x80\":1}}",
		"{\"writeKey\":\"" + plantedKey + "\xc0\xaf\"}",
		"{\"type\":\"track\",\"userId\":\"u\",\"event\":\"e\",\"x\":\"\xf4\x90\x80\x80\"}",
	} {
		add(hostile{name: fmt.Sprintf("invalid UTF-8 %d", i), path: "/v1/track", body: []byte(b), status: 400, msg: "invalid UTF-8"})
		add(hostile{name: fmt.Sprintf("invalid UTF-8 %d unauthenticated", i), path: "/v1/track", header: noAuth, body: []byte(b), status: 400, msg: "invalid UTF-8"})
	}
	add(hostile{name: "invalid UTF-8 in a batch item", path: "/v1/batch", body: []byte("{\"batch\":[{\"type\":\"track\",\"userId\":\"\xff\",\"event\":\"e\"}]}"), status: 400, msg: "invalid UTF-8"})

	// Duplicate keys: refused at the top level (where two readers could
	// disagree on who the event is for and which key it carries).
	add(hostile{name: "duplicate userId", path: "/v1/track", body: []byte(`{"type":"track","userId":"a","event":"e","userId":"b"}`), status: 400, msg: `duplicate key "userId"`})
	add(hostile{name: "duplicate writeKey", path: "/v1/track", header: noAuth, body: []byte(`{"writeKey":"` + goodKey + `","type":"track","userId":"u","event":"e","writeKey":"` + plantedKey + `"}`), status: 400, msg: `duplicate key "writeKey"`})
	add(hostile{name: "duplicate writeKey in batch", path: "/v1/batch", header: noAuth, body: []byte(`{"writeKey":"` + goodKey + `","batch":[],"writeKey":"` + plantedKey + `"}`), status: 400, msg: "duplicate key"})
	add(hostile{name: "duplicate key named as the key", path: "/v1/track", body: []byte(`{"` + plantedKey + `":1,"type":"track","` + plantedKey + `":2}`), status: 400, msg: "invalid JSON at byte 47: duplicate key"})
	add(hostile{name: "duplicate batch", path: "/v1/batch", body: []byte(`{"batch":[],"batch":[{"type":"track","userId":"u","event":"e"}]}`), status: 400, msg: `duplicate key "batch"`})
	add(hostile{name: "duplicate nested key (last wins)", path: "/v1/track", body: []byte(`{"type":"track","userId":"u","event":"e","properties":{"a":1,"a":2}}`), status: 200, decoded: true})
	add(hostile{name: "aliases of userId (fixed precedence)", path: "/v1/track", body: []byte(`{"type":"track","USERID":"a","user_id":"b","event":"e"}`), status: 200, decoded: true})

	// Keys in every field: the answer never repeats them.
	for _, f := range []string{"type", "event", "name", "groupId", "previousId", "timestamp", "sentAt", "originalTimestamp", "receivedAt", "context", "traits", "properties", "integrations", "version", "channel"} {
		fields := map[string]string{"type": "track", "userId": "u", "event": "e"}
		fields[f] = plantedKey
		b, _ := json.Marshal(fields)
		body := string(b)
		status, msg := 200, ""
		switch f {
		case "type":
			status, msg = 400, "unknown type"
		case "timestamp", "sentAt", "originalTimestamp", "receivedAt":
			status, msg = 400, f+": not an ISO-8601 time"
		case "context", "traits", "properties", "integrations":
			status, msg = 400, f+": want an object"
		}
		add(hostile{name: "key in " + f, path: "/", body: []byte(body), status: status, msg: msg, decoded: true})
	}
	add(hostile{name: "key as a key name", path: "/v1/track", body: []byte(`{"type":"track","userId":"u","event":"e","properties":{"` + plantedKey + `":1}}`), status: 200, decoded: true})
	add(hostile{name: "unknown writeKey", path: "/v1/track", header: noAuth, body: []byte(`{"type":"track","userId":"u","event":"e","writeKey":"` + plantedKey + `"}`), status: 401, msg: "unknown API key"})
	add(hostile{name: "unknown key in header", path: "/v1/track", header: map[string]string{"Authorization": basic(plantedKey)}, body: []byte(track), status: 401, msg: "unknown API key"})
	add(hostile{name: "unknown key, hostile body unread", path: "/v1/batch", header: map[string]string{"Authorization": basic(plantedKey)}, body: []byte(nest(250000)), status: 401, maxScanned: 1})
	add(hostile{name: "key in the password", path: "/v1/track", header: map[string]string{"Authorization": "Basic " + b64(":"+plantedKey)}, body: []byte(track), status: 401})
	add(hostile{name: "key in the settings header", path: "/", header: map[string]string{"X-Segment-Settings": settingsHeader(`{"apiKey":"` + plantedKey + `","segmentOverrideMatchingField":"properties['` + plantedKey + `"}`)}, body: []byte(track), status: 400, msg: "segmentOverrideMatchingField: bad field path at offset"})

	// Bad settings: 400 naming the setting.
	add(hostile{name: "settings: unterminated path", path: "/", header: map[string]string{"X-Segment-Settings": settingsHeader(`{"segmentOverrideMatchingField":"properties['unterminated"}`)}, body: []byte(track), status: 400, msg: "segmentOverrideMatchingField"})
	add(hostile{name: "settings: blank match field", path: "/", header: map[string]string{"X-Segment-Settings": settingsHeader(`{"startdeliverUserCustomFieldToMatchOn":"  "}`)}, body: []byte(track), status: 400, msg: "startdeliverUserCustomFieldToMatchOn: required"})
	add(hostile{name: "settings: bool of keys", path: "/", header: map[string]string{"X-Segment-Settings": settingsHeader(`{"allowUserIdFallback":"` + plantedKey + `"}`)}, body: []byte(track), status: 400, msg: "allowUserIdFallback"})
	add(hostile{name: "settings: deep JSON", path: "/", header: map[string]string{"X-Segment-Settings": settingsHeader(`{"x":` + nest(3000) + `}`)}, body: []byte(track), status: 200, decoded: true})

	// Oversized headers.
	add(hostile{name: "oversized Authorization", path: "/v1/track", header: map[string]string{"Authorization": basic(strings.Repeat(plantedKey, 1000))}, body: []byte(track), status: 401, msg: "longer than 1024"})
	add(hostile{name: "oversized settings header", path: "/", header: map[string]string{"X-Segment-Settings": strings.Repeat("A", 20<<10)}, body: []byte(track), status: 400, msg: "X-Segment-Settings"})
	add(hostile{name: "oversized Content-Type", path: "/v1/track", header: map[string]string{"Content-Type": "application/" + strings.Repeat(plantedKey, 100)}, body: []byte(track), status: 415})
	add(hostile{name: "Content-Type of the key", path: "/v1/track", header: map[string]string{"Content-Type": plantedKey}, body: []byte(track), status: 415, msg: "Content-Type"})
	add(hostile{name: "Content-Encoding of the key", path: "/v1/track", header: map[string]string{"Content-Encoding": plantedKey}, body: []byte(track), status: 415, msg: "Content-Encoding"})

	// Wrong methods and paths.
	for _, m := range []struct{ method, path string }{
		{"GET", "/v1/track"}, {"PUT", "/"}, {"DELETE", "/v1/batch"}, {"PATCH", "/v1/identify"}, {"POST", "/healthz"}, {"GET", "/"},
	} {
		add(hostile{name: "method " + m.method + " " + m.path, method: m.method, path: m.path, body: []byte(track), status: 405, msg: "method not allowed"})
	}
	for _, p := range []string{"/v1/purchase", "/nope", "/v2/track", "/v1/" + plantedKey, "/" + plantedKey} {
		add(hostile{name: "path " + p, path: p, body: []byte(track), status: 404})
	}

	// Wrong types.
	for i, b := range []string{
		`[]`, `"` + plantedKey + `"`, `12`, `null`, `true`,
		`{"type":1,"userId":"u","event":"e"}`,
		`{"type":"track","userId":{"id":"` + plantedKey + `"},"event":"e"}`,
		`{"type":"track","userId":"u","event":"e","version":[1]}`,
		`{"type":"track","userId":"u","event":["` + plantedKey + `"]}`,
		`{"type":"track","userId":"u","event":"e","writeKey":7}`,
	} {
		status := 400
		if i == 9 { // with the key in the header, a body writeKey is dropped unread
			status = 200
		}
		add(hostile{name: fmt.Sprintf("wrong type %d", i), path: "/", body: []byte(b), status: status, decoded: i >= 5})
		add(hostile{name: fmt.Sprintf("wrong type %d unauthenticated", i), path: "/v1/track", header: noAuth, body: []byte(b), status: map[bool]int{true: 401, false: 400}[i >= 5 && i != 9], decoded: false})
	}
	for i, b := range []string{
		`{"batch":{}}`, `{"batch":"` + plantedKey + `"}`, `{"context":"` + plantedKey + `","batch":[]}`, `{"integrations":[1],"batch":[]}`, `{"writeKey":1,"batch":[]}`, `{}`,
	} {
		add(hostile{name: fmt.Sprintf("wrong batch type %d", i), path: "/v1/batch", body: []byte(b), status: 400})
	}
	add(hostile{name: "batch items of the wrong type", path: "/v1/batch", body: []byte(`{"batch":["` + plantedKey + `",1,null,[]]}`), status: 200, decoded: true})
	add(hostile{name: "batch item amplified by the outer context", path: "/v1/batch", body: []byte(`{"context":{"x":"` + strings.Repeat("c", 7<<10) + `"},"batch":[{"type":"track","userId":"u","event":"e","properties":{"p":"` + strings.Repeat("p", 26<<10) + `"}}]}`), status: 200, decoded: true})
	return hs
}

func manyKeys(n int) string {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, `,"k%d":%d`, i, i)
	}
	return b.String()
}

func b64(s string) string { return basic(s)[len("Basic "):] }

func (c hostile) request() *http.Request {
	body := c.body
	if c.gzip {
		body = gz(body)
	}
	r := httptest.NewRequest(or(c.method, http.MethodPost), "http://ingest"+c.path, bytes.NewReader(body))
	r.Header.Set("Content-Type", "application/json")
	r.Header.Set("Authorization", basic(goodKey))
	if c.gzip {
		r.Header.Set("Content-Encoding", "gzip")
	}
	for k, v := range c.header {
		switch {
		case k == "Content-Length":
			fmt.Sscan(v, &r.ContentLength)
		case v == "":
			r.Header.Del(k)
		default:
			r.Header.Set(k, v)
		}
	}
	return r
}

// TestHostileRequests sends each hostile request and checks its status, its
// {"message"} body, that neither the answer nor the log line holds a key,
// and that the work it caused is bounded by the counters: the nesting the
// pre-pass reached, the bytes it scanned and inflated, and whether anything
// reached the tree decoder.
func TestHostileRequests(t *testing.T) {
	cases := hostileRequests()
	if len(cases) < 100 {
		t.Fatalf("%d hostile requests, want at least 100", len(cases))
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			var logs bytes.Buffer
			pub := &fakePublisher{}
			h := New(Options{Publisher: pub, Accounts: fakeAccounts{}, Topic: "t",
				Logger: slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
			rec := httptest.NewRecorder()
			h.ServeHTTP(rec, c.request())
			if rec.Code != c.status {
				t.Fatalf("%s %s = %d %s, want %d", or(c.method, "POST"), c.path, rec.Code, clipBody(rec.Body.Bytes()), c.status)
			}
			if ct := rec.Header().Get("Content-Type"); ct != "application/json" {
				t.Errorf("Content-Type = %q, want application/json", ct)
			}
			var out map[string]any
			if err := json.Unmarshal(rec.Body.Bytes(), &out); err != nil {
				t.Fatalf("answer %s is not JSON: %v", clipBody(rec.Body.Bytes()), err)
			}
			if c.status != 200 {
				msg, ok := out["message"].(string)
				if !ok || msg == "" {
					t.Errorf("answer %s has no message", clipBody(rec.Body.Bytes()))
				}
				if !strings.Contains(msg, c.msg) {
					t.Errorf("message = %q, want it to say %q", msg, c.msg)
				}
			}
			for _, key := range []string{goodKey, plantedKey, b64(goodKey + ":"), b64(plantedKey + ":")} {
				if strings.Contains(rec.Body.String(), key) {
					t.Errorf("answer holds %q: %s", key, clipBody(rec.Body.Bytes()))
				}
				if strings.Contains(logs.String(), key) {
					t.Errorf("log holds %q: %s", key, clipBody(logs.Bytes()))
				}
			}
			if d := h.work.depth.Load(); d > segment.MaxDepth+1 {
				t.Errorf("pre-pass reached depth %d, want at most %d", d, segment.MaxDepth+1)
			}
			if !c.decoded && h.work.decoded.Load() > 0 && c.status != 200 {
				t.Errorf("%d bytes reached the tree decoder, want none", h.work.decoded.Load())
			}
			if c.maxScanned > 0 && h.work.scanned.Load() > c.maxScanned {
				t.Errorf("pre-pass scanned %d bytes, want at most %d", h.work.scanned.Load(), c.maxScanned)
			}
			if c.maxInflated > 0 && h.work.inflated.Load() > c.maxInflated {
				t.Errorf("inflated %d bytes, want at most %d", h.work.inflated.Load(), c.maxInflated)
			}
			if c.status != 200 && len(pub.published()) > 0 {
				t.Errorf("published %d messages for a refused request", len(pub.published()))
			}
		})
	}
}

func clipBody(b []byte) string {
	if len(b) > 300 {
		return string(b[:300]) + "…"
	}
	return string(b)
}
