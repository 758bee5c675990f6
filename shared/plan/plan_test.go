package plan

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/failure"
	"github.com/startdeliver/segment-destination/shared/segment"
)

var update = flag.Bool("update", false, "rewrite the want field of testdata/*.json golden files")

// golden is one case file under testdata/. Inputs are kept as written;
// -update rewrites only Want.
type golden struct {
	// Comment says which rule the case covers.
	Comment string `json:"comment"`
	// Account is the account document (account.Parse, then Compile).
	Account json.RawMessage `json:"account"`
	// SettingsHeader, when present, is the JSON object Segment sends
	// base64-encoded in X-Segment-Settings; it is encoded and parsed with
	// account.ParseSettingsHeader, then applied over the stored settings.
	SettingsHeader json.RawMessage `json:"settingsHeader,omitempty"`
	// Event is the Segment event (segment.Decode).
	Event json.RawMessage `json:"event"`
	// Want is the expected outcome.
	Want *outcome `json:"want"`
}

type outcome struct {
	Plan  *Plan  `json:"plan,omitempty"`
	Error *Error `json:"error,omitempty"`
}

// run decides the case and returns its outcome as canonical JSON.
func (g *golden) run(t *testing.T) *outcome {
	t.Helper()
	acct, err := account.Parse(g.Account)
	if err != nil {
		t.Fatalf("account: %v", err)
	}
	c, err := account.Compile(acct)
	if err != nil {
		t.Fatalf("compile account: %v", err)
	}
	settings := acct.Settings
	if len(g.SettingsHeader) > 0 {
		o, err := account.ParseSettingsHeader(base64.StdEncoding.EncodeToString(g.SettingsHeader))
		if err != nil {
			t.Fatalf("settings header: %v", err)
		}
		settings = settings.With(o)
	}
	ev, err := segment.Decode(g.Event)
	if err != nil {
		t.Fatalf("event: %v", err)
	}
	p, err := Decide(ev, settings, c)
	if err != nil {
		var pe *Error
		if !errors.As(err, &pe) {
			t.Fatalf("Decide error %v (%T), want *plan.Error", err, err)
		}
		if p != nil {
			t.Errorf("Decide returned a plan with its error")
		}
		return &outcome{Error: pe}
	}
	checkInvariants(t, p)
	return &outcome{Plan: p}
}

// checkInvariants asserts what every plan promises.
func checkInvariants(t *testing.T, p *Plan) {
	t.Helper()
	if p.Skip != "" {
		if p.User != nil || p.Customer != nil || p.Usage != nil || p.Link {
			t.Errorf("skip plan %+v has actions", p)
		}
		return
	}
	if p.User == nil && p.Customer == nil {
		t.Errorf("plan %+v has neither user nor customer", p)
	}
	if p.Link != (p.User != nil && p.Customer != nil) {
		t.Errorf("plan Link = %v with user %v and customer %v", p.Link, p.User != nil, p.Customer != nil)
	}
	for _, e := range []*Upsert{p.User, p.Customer} {
		if e == nil {
			continue
		}
		if e.Match.Field == "" || e.Match.Value == nil {
			t.Errorf("entity %+v has an empty match", e)
		}
		if v, ok := e.Create[e.Match.Field]; !ok || v != e.Match.Value {
			t.Errorf("entity %+v does not create with its match value", e)
		}
	}
}

// canonical marshals v for comparison and for the golden file.
func canonical(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.MarshalIndent(v, "", "  ")
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func TestGolden(t *testing.T) {
	files, err := filepath.Glob(filepath.Join("testdata", "*.json"))
	if err != nil {
		t.Fatal(err)
	}
	if len(files) == 0 {
		t.Fatal("no golden files in testdata/")
	}
	for _, file := range files {
		name := strings.TrimSuffix(filepath.Base(file), ".json")
		t.Run(name, func(t *testing.T) {
			data, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			var g golden
			if err := json.Unmarshal(data, &g); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			got := g.run(t)
			if *update {
				g.Want = got
				out := append(canonical(t, &g), '\n')
				if !bytes.Equal(out, data) {
					if err := os.WriteFile(file, out, 0o644); err != nil {
						t.Fatal(err)
					}
				}
				return
			}
			if g.Want == nil {
				t.Fatalf("%s has no want; run go test -update", file)
			}
			// Compare through JSON, as the golden file holds it.
			if diff := cmp.Diff(string(canonical(t, g.Want)), string(canonical(t, got))); diff != "" {
				t.Errorf("Decide(%s) (-want +got):\n%s", name, diff)
			}
		})
	}
}

func mustCompile(t testing.TB, doc string) (*account.Account, *account.Compiled) {
	t.Helper()
	a, err := account.Parse([]byte(doc))
	if err != nil {
		t.Fatal(err)
	}
	c, err := account.Compile(a)
	if err != nil {
		t.Fatal(err)
	}
	return a, c
}

func mustDecode(t testing.TB, s string) *segment.Event {
	t.Helper()
	ev, err := segment.Decode([]byte(s))
	if err != nil {
		t.Fatal(err)
	}
	return ev
}

const seedAccount = `{
  "name": "Acme Inc",
  "settings": { "startdeliverUserCustomFieldToMatchOn": "externalId" },
  "segmentApp": {
    "enabled": true,
    "startdeliverMatchingField": { "field": "customfieldMatchingId", "type": "text" },
    "externalMatchingField": { "field": "userId" },
    "startdeliverCustomerField": { "field": "customfieldCustomId", "type": "number" },
    "externalCustomerField": { "field": "traits.customerId" },
    "userMapping": [
      { "field": "name", "externalField": "traits.trait2", "type": "text" },
      { "field": "customfieldNumber", "externalField": "traits.trait1", "type": "number" },
      { "field": "email", "externalField": "email", "type": "text" }
    ],
    "customerMapping": [ { "field": "name", "externalField": "traits.customerName", "type": "text" } ]
  }
}`

const typicalTrack = `{"type":"track","event":"Login Button Clicked","userId":"97980cfea0067","messageId":"m-1",
 "timestamp":"2024-05-01T12:00:00.000Z","properties":{"plan":"gold","seats":12},
 "context":{"library":{"name":"analytics.js","version":"4.1.0"},"page":{"path":"/login"}}}`

const typicalIdentify = `{"type":"identify","userId":"97980cfea0067","messageId":"m-2",
 "timestamp":"2024-05-01T12:00:00.000Z",
 "traits":{"email":"ada@example.com","trait1":"42","trait2":"Ada Lovelace","customerId":"1001","customerName":"Acme Inc"}}`

func TestDecideIsErrorOrPlan(t *testing.T) {
	a, c := mustCompile(t, seedAccount)
	tests := []struct {
		name  string
		ev    *segment.Event
		class string
	}{
		{"nil event", nil, ClassEvent},
		{"unknown type", &segment.Event{Type: "bogus", UserID: "u"}, ClassEvent},
		{"track without name", &segment.Event{Type: segment.TypeTrack, UserID: "u"}, ClassEvent},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := Decide(tt.ev, a.Settings, c)
			var pe *Error
			if !errors.As(err, &pe) || pe.Class != tt.class || p != nil {
				t.Fatalf("Decide = %v, %v, want *Error of class %s", p, err, tt.class)
			}
			if !failure.IsPermanent(err) || failure.Class(err) != tt.class {
				t.Errorf("Decide error %v: permanent %v, class %q; want permanent of class %q", err, failure.IsPermanent(err), failure.Class(err), tt.class)
			}
		})
	}
}

func TestDecideWithoutCompiled(t *testing.T) {
	s := account.Settings{StartdeliverUserCustomFieldToMatchOn: "externalId", SegmentOverrideMatchingField: "properties.x"}
	p, err := Decide(mustDecode(t, `{"type":"track","event":"E","userId":"u","properties":{"x":"v"}}`), s, nil)
	if err != nil || p.User.Match != (Match{Field: "externalId", Value: "v"}) {
		t.Errorf("Decide(nil compiled) = %+v, %v, want match on externalId=v", p, err)
	}
	p, err = Decide(mustDecode(t, `{"type":"identify","userId":"u"}`), s, nil)
	if err != nil || p.Skip == "" {
		t.Errorf("Decide(identify, nil compiled) = %+v, %v, want a skip", p, err)
	}
}

// TestDecideConcurrent runs Decide from many goroutines on one Compiled,
// including header override paths that go through its cache (run -race).
func TestDecideConcurrent(t *testing.T) {
	a, c := mustCompile(t, seedAccount)
	var wg sync.WaitGroup
	for i := range 4 {
		wg.Go(func() {
			for j := range 50 {
				s := a.Settings
				s.SegmentOverrideMatchingField = "properties.f" + string(rune('a'+(i*50+j)%26))
				s.AllowUserIDFallback = true
				for _, doc := range []string{typicalTrack, typicalIdentify} {
					if _, err := Decide(mustDecode(t, doc), s, c); err != nil {
						t.Errorf("Decide: %v", err)
						return
					}
				}
			}
		})
	}
	wg.Wait()
}

func FuzzDecide(f *testing.F) {
	f.Add([]byte(typicalTrack), []byte(seedAccount))
	f.Add([]byte(typicalIdentify), []byte(seedAccount))
	f.Add([]byte(`{"type":"group","groupId":"g1","userId":"u","traits":{"name":"Acme"}}`), []byte(seedAccount))
	f.Add([]byte(`{"type":"page","anonymousId":"a","properties":{"url":"https://x.test/a?b"}}`),
		[]byte(`{"settings":{"startdeliverUserCustomFieldToMatchOn":"x","syncUsingEmailInsteadOfCustomField":true,"segmentOverrideMatchingField":"properties['a b'][0]","allowUserIdFallback":true}}`))
	f.Add([]byte(`{"type":"alias","previousId":"p","userId":"u"}`), []byte(`{"settings":{"startdeliverUserCustomFieldToMatchOn":"x"}}`))
	f.Fuzz(func(t *testing.T, event, config []byte) {
		a, err := account.Parse(config)
		if err != nil {
			return
		}
		c, err := account.Compile(a)
		if err != nil {
			return
		}
		ev, err := segment.Decode(event)
		if err != nil {
			return
		}
		p, err := Decide(ev, a.Settings, c)
		if err != nil {
			var pe *Error
			if !errors.As(err, &pe) || p != nil {
				t.Fatalf("Decide = %v, %v: want a plan or a *plan.Error", p, err)
			}
			return
		}
		if p == nil {
			t.Fatal("Decide returned neither a plan nor an error")
		}
		checkInvariants(t, p)
		if _, err := json.Marshal(p); err != nil {
			t.Fatalf("plan does not marshal: %v", err)
		}
	})
}

// BenchmarkDecide plans a typical track and identify. The baseline
// decodes the same event, as deliver does before planning, so that the
// planner's cost reads as a ratio of work done in the same run.
func BenchmarkDecide(b *testing.B) {
	a, c := mustCompile(b, seedAccount)
	for _, bc := range []struct{ name, doc string }{
		{"track", typicalTrack},
		{"identify", typicalIdentify},
	} {
		ev := mustDecode(b, bc.doc)
		b.Run("baseline-decode-"+bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := segment.Decode([]byte(bc.doc)); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(bc.name, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				if _, err := Decide(ev, a.Settings, c); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
