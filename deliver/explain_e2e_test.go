package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
)

// goldenCase is a matching-engine golden file (shared/plan/testdata).
type goldenCase struct {
	Account        json.RawMessage `json:"account"`
	SettingsHeader json.RawMessage `json:"settingsHeader"`
	Event          json.RawMessage `json:"event"`
}

// explainJSON is POST /v1/explain's answer.
type explainJSON struct {
	Status     string `json:"status"`
	Reason     string `json:"reason"`
	ErrorClass string `json:"errorClass"`
	Calls      []struct {
		Method string         `json:"method"`
		Route  string         `json:"route"`
		Body   map[string]any `json:"body"`
		When   string         `json:"when"`
	} `json:"calls"`
}

var explainToStatus = map[string]string{"would_deliver": "delivered", "would_skip": "skipped", "would_dead_letter": "dead_lettered"}

// TestExplainMatchesDelivery is a property over every golden case of the
// matching engine: what POST /v1/explain?lookup=true says deliver will do
// with an event is what deliver then does when the same event is sent for
// real — the same outcome and error class, and exactly the Startdeliver
// calls (method and route, in order) that the stand-in records, with the
// created entities holding every field explain said they would.
func TestExplainMatchesDelivery(t *testing.T) {
	files, err := filepath.Glob("../shared/plan/testdata/*.json")
	if err != nil || len(files) == 0 {
		t.Fatalf("golden files: %v (%d)", err, len(files))
	}
	p := newPipeline(t, pipelineOptions{maxAttempts: 5})
	for i, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".json")
		t.Run(name, func(t *testing.T) {
			raw, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var gc goldenCase
			if err := json.Unmarshal(raw, &gc); err != nil {
				t.Fatal(err)
			}
			// A fresh account (and stand-in store) per case: nothing exists
			// yet, and deliver's lookup cache is cold for it.
			key := fmt.Sprintf("sd-explain-%d", i)
			p.addAccount(key, string(gc.Account))
			settings := ""
			if len(gc.SettingsHeader) > 0 {
				settings = string(gc.SettingsHeader)
			}
			hash := startdelivertest.KeyHash(key)
			code, body := p.post("/v1/explain?lookup=true", key, string(gc.Event), settings)
			// Explain's finds are all answered before it answers; what the
			// stand-in sees after this is deliver's.
			explainFinds := len(requestsOf(p.sd, hash))
			sendCode, sendBody := p.post("/", key, string(gc.Event), settings)
			if sendCode != http.StatusOK {
				// ingest refuses the event itself: explain must refuse it too.
				if code != sendCode {
					t.Fatalf("POST / = %d %s, but explain = %d %s", sendCode, sendBody, code, body)
				}
				return
			}
			if code != http.StatusOK {
				t.Fatalf("explain = %d %s", code, body)
			}
			var ex explainJSON
			if err := json.Unmarshal([]byte(body), &ex); err != nil {
				t.Fatal(err)
			}
			var sent struct {
				MessageID string `json:"messageId"`
			}
			_ = json.Unmarshal([]byte(sendBody), &sent)
			want := explainToStatus[ex.Status]
			ev := p.journey(key, sent.MessageID, want)
			if ev.ErrorClass != ex.ErrorClass {
				t.Errorf("explain says %s class %q, deliver's class is %q", ex.Status, ex.ErrorClass, ev.ErrorClass)
			}
			var wantCalls []string
			for _, c := range ex.Calls {
				if c.When != "" {
					t.Errorf("with lookup, call %s %s still depends on %q", c.Method, c.Route, c.When)
				}
				wantCalls = append(wantCalls, c.Method+" "+c.Route)
			}
			// The stand-in's log holds explain's finds, then deliver's calls.
			all := requestsOf(p.sd, hash)
			var finds, delivered []string
			for i, r := range all {
				if i < explainFinds {
					finds = append(finds, r.Route)
				} else {
					delivered = append(delivered, r.Route)
				}
			}
			for _, f := range finds {
				if !strings.HasPrefix(f, "GET ") {
					t.Errorf("explain sent %s: it may only read", f)
				}
			}
			if !sameStrings(wantCalls, delivered) {
				t.Errorf("explain's calls %v, deliver made %v (%s: %s)", wantCalls, delivered, ev.Status, ev.Reason)
			}
			var recorded []string
			for _, c := range ev.Calls {
				recorded = append(recorded, c.Method+" "+c.Route)
			}
			if !sameStrings(recorded, delivered) {
				t.Errorf("the journey records %v, the stand-in saw %v", recorded, delivered)
			}
			// Every field explain would create an entity with is on it.
			for _, c := range ex.Calls {
				if c.Method != http.MethodPost || (c.Route != "/user" && c.Route != "/customer") {
					continue
				}
				recs := p.sd.Users(key)
				if c.Route == "/customer" {
					recs = p.sd.Customers(key)
				}
				if len(recs) != 1 {
					t.Errorf("%d entities at %s, want the 1 explain predicted", len(recs), c.Route)
					continue
				}
				for f, v := range c.Body {
					if s, ok := v.(string); ok && strings.HasPrefix(s, "{") && strings.HasSuffix(s, ".id}") {
						continue // an id explain could not know before the create
					}
					if got, _ := json.Marshal(recs[0][f]); string(got) != mustJSON(v) {
						t.Errorf("%s field %s = %s, explain said %s", c.Route, f, got, mustJSON(v))
					}
				}
			}
		})
	}
}

func requestsOf(sd *startdelivertest.Server, hash string) []startdelivertest.Request {
	var out []startdelivertest.Request
	for _, r := range sd.Requests() {
		if r.KeyHash == hash {
			out = append(out, r)
		}
	}
	return out
}

func mustJSON(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
