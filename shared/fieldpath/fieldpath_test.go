package fieldpath

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func TestParse(t *testing.T) {
	tests := []struct {
		in   string
		want []seg
		str  string
	}{
		{"userId", []seg{{"userId", -1}}, "userId"},
		{"traits.customerId", []seg{{"traits", -1}, {"customerId", -1}}, "traits.customerId"},
		{"properties.myCustomField", []seg{{"properties", -1}, {"myCustomField", -1}}, "properties.myCustomField"},
		{"properties['Field With Space']", []seg{{"properties", -1}, {"Field With Space", -1}}, "properties['Field With Space']"},
		{`context.traits["plan"]`, []seg{{"context", -1}, {"traits", -1}, {"plan", -1}}, "context.traits.plan"},
		{"properties.items[0].sku", []seg{{"properties", -1}, {"items", -1}, {index: 0}, {"sku", -1}}, "properties.items[0].sku"},
		{"a[12][3]", []seg{{"a", -1}, {index: 12}, {index: 3}}, "a[12][3]"},
		{"['top level']", []seg{{"top level", -1}}, "['top level']"},
		{`a['it\'s']`, []seg{{"a", -1}, {"it's", -1}}, `a['it\'s']`},
		{`a["back\\slash"]`, []seg{{"a", -1}, {`back\slash`, -1}}, `a.back\slash`},
		{`a["dot.ted"]`, []seg{{"a", -1}, {"dot.ted", -1}}, `a['dot.ted']`},
		{`a['']`, []seg{{"a", -1}, {"", -1}}, `a['']`},
		{"  traits.email \t", []seg{{"traits", -1}, {"email", -1}}, "traits.email"},
		{"$user-id:x", []seg{{"$user-id:x", -1}}, "$user-id:x"},
		{"naïve.ünïcode", []seg{{"naïve", -1}, {"ünïcode", -1}}, "naïve.ünïcode"},
		{"properties.0", []seg{{"properties", -1}, {"0", -1}}, "properties.0"},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			p, err := Parse(tt.in)
			if err != nil {
				t.Fatalf("Parse(%q) error: %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, p.segs, cmp.AllowUnexported(seg{})); diff != "" {
				t.Errorf("Parse(%q) segments (-want +got):\n%s", tt.in, diff)
			}
			if got := p.String(); got != tt.str {
				t.Errorf("Parse(%q).String() = %q, want %q", tt.in, got, tt.str)
			}
			again, err := Parse(p.String())
			if err != nil {
				t.Fatalf("Parse(%q) of canonical form error: %v", p.String(), err)
			}
			if diff := cmp.Diff(p.segs, again.segs, cmp.AllowUnexported(seg{})); diff != "" {
				t.Errorf("canonical form %q parses differently (-want +got):\n%s", p.String(), diff)
			}
		})
	}
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		in      string
		pos     int
		msgPart string
	}{
		{"", 0, "empty path"},
		{"   ", 3, "empty path"},
		{"traits.", 7, "missing name at end"},
		{"traits..x", 7, `unexpected "." (want a name)`},
		{".traits", 0, `unexpected "."`},
		{"traits x", 6, `unexpected space (want "." or "[")`},
		{"properties['Field", 11, "unterminated quoted name"},
		{"properties['Field'", 18, `missing "]"`},
		{"properties['a'x]", 14, `unexpected "x" (want "]")`},
		{"properties[", 11, `unclosed "["`},
		{"properties[x]", 11, `unexpected "x" after "["`},
		{"properties[-1]", 11, `unexpected "-"`},
		{"properties[99999999999]", 11, "array index too large"},
		{"[0].x", 1, "cannot start with an array index"},
		{"a]", 1, `unexpected "]"`},
		{`a["x\`, 5, "backslash at end"},
		{"  a..b", 4, `unexpected "."`},
		{"a\x00b", 1, `unexpected byte '\x00'`},
	}
	for _, tt := range tests {
		t.Run(tt.in, func(t *testing.T) {
			_, err := Parse(tt.in)
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q) error = %v, want *SyntaxError", tt.in, err)
			}
			if se.Pos != tt.pos || se.Path != tt.in || !strings.Contains(se.Msg, tt.msgPart) {
				t.Errorf("Parse(%q) = %+v, want Pos %d and Msg containing %q", tt.in, *se, tt.pos, tt.msgPart)
			}
			if !strings.Contains(err.Error(), "offset") {
				t.Errorf("Parse(%q) error %q does not give the offset", tt.in, err)
			}
		})
	}
}

func decode(t testing.TB, s string) map[string]any {
	t.Helper()
	dec := json.NewDecoder(strings.NewReader(s))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil {
		t.Fatal(err)
	}
	return m
}

const event = `{
	"userId": "97980cfea0067",
	"email": null,
	"traits": {"email": "trait@example.com", "customerId": 42, "plan": "gold"},
	"context": {"traits": {"email": "ctx@example.com", "plan": "silver", "onlyCtx": true}},
	"properties": {
		"myCustomField": "mcf",
		"Field With Space": "spaced",
		"items": [{"sku": "A-1"}, {"sku": "B-2", "qty": 2.5}],
		"nested": {"deep": {"er": "x"}},
		"zero": 0,
		"empty": "",
		"nil": null
	}
}`

func TestLookup(t *testing.T) {
	root := decode(t, event)
	tests := []struct {
		path   string
		want   any
		wantOK bool
	}{
		{"userId", "97980cfea0067", true},
		{"traits.customerId", json.Number("42"), true},
		{"properties.myCustomField", "mcf", true},
		{"properties['Field With Space']", "spaced", true},
		{`properties["Field With Space"]`, "spaced", true},
		{`context.traits["plan"]`, "silver", true},
		{"properties.items[0].sku", "A-1", true},
		{"properties.items[1].qty", json.Number("2.5"), true},
		{"properties.items[2].sku", nil, false},
		{"properties.items.sku", nil, false},
		{"properties.nested.deep.er", "x", true},
		{"properties.nested.deep.er.more", nil, false},
		{"properties.zero", json.Number("0"), true},
		{"properties.empty", "", true},
		{"properties.nil", nil, false},
		{"properties.missing", nil, false},
		// Root fallback: first name absent (or null) at the root.
		{"email", "trait@example.com", true},
		{"plan", "gold", true},
		{"onlyCtx", true, true},
		{"customerId", json.Number("42"), true},
		{"nothing", nil, false},
		// No fallback when the first name exists at the root.
		{"properties.plan", nil, false},
		{"userId.x", nil, false},
		{"['Field With Space']", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.path, func(t *testing.T) {
			got, ok := MustParse(tt.path).Lookup(root)
			if ok != tt.wantOK || !cmp.Equal(got, tt.want) {
				t.Errorf("Lookup(%q) = %v, %v, want %v, %v", tt.path, got, ok, tt.want, tt.wantOK)
			}
		})
	}
}

func TestLookupOtherNumberTypesAndNil(t *testing.T) {
	root := map[string]any{"a": map[string]any{"f": 1.5, "i": 7, "l": []any{int64(3)}}}
	if v, ok := MustParse("a.f").Lookup(root); !ok || v != 1.5 {
		t.Errorf("Lookup(a.f) = %v, %v, want 1.5, true", v, ok)
	}
	if v, ok := MustParse("a.l[0]").Lookup(root); !ok || v != int64(3) {
		t.Errorf("Lookup(a.l[0]) = %v, %v, want 3, true", v, ok)
	}
	if v, ok := MustParse("a").Lookup(nil); ok {
		t.Errorf("Lookup on nil root = %v, true, want absent", v)
	}
	if v, ok := (Path{}).Lookup(root); ok {
		t.Errorf("zero Path Lookup = %v, true, want absent", v)
	}
	// Fallback roots of the wrong shape are ignored.
	odd := map[string]any{"traits": "x", "context": map[string]any{"traits": []any{1}}}
	if v, ok := MustParse("email").Lookup(odd); ok {
		t.Errorf("Lookup(email) on odd fallbacks = %v, true, want absent", v)
	}
}

func TestLookupDoesNotAllocate(t *testing.T) {
	root := decode(t, event)
	p := MustParse("properties.items[1].sku")
	fb := MustParse("email")
	allocs := testing.AllocsPerRun(100, func() {
		p.Lookup(root)
		fb.Lookup(root)
	})
	if allocs != 0 {
		t.Errorf("Lookup allocates %v times per run, want 0", allocs)
	}
}

func TestTextRoundTrip(t *testing.T) {
	var p Path
	if err := p.UnmarshalText([]byte(`properties["Field With Space"]`)); err != nil {
		t.Fatal(err)
	}
	b, _ := p.MarshalText()
	if string(b) != "properties['Field With Space']" {
		t.Errorf("MarshalText = %s, want properties['Field With Space']", b)
	}
	if err := p.UnmarshalText([]byte("a..b")); err == nil {
		t.Error("UnmarshalText(a..b) = nil error, want a syntax error")
	}
}

func FuzzParse(f *testing.F) {
	for _, s := range []string{"userId", "traits.customerId", "properties['Field With Space']",
		`context.traits["plan"]`, "properties.items[0].sku", `a['it\'s']`, "a..b", "[0]", "x[", " y "} {
		f.Add(s)
	}
	root := map[string]any{"a": map[string]any{"b": []any{"c"}}, "traits": map[string]any{}}
	f.Fuzz(func(t *testing.T, s string) {
		p, err := Parse(s)
		if err != nil {
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Parse(%q) error %T, want *SyntaxError", s, err)
			}
			if se.Pos < 0 || se.Pos > len(s) {
				t.Fatalf("Parse(%q) error position %d outside the input", s, se.Pos)
			}
			return
		}
		if p.IsZero() {
			t.Fatalf("Parse(%q) succeeded with an empty path", s)
		}
		canon := p.String()
		q, err := Parse(canon)
		if err != nil {
			t.Fatalf("Parse(%q) of canonical form of %q: %v", canon, s, err)
		}
		if q.String() != canon || !cmp.Equal(p.segs, q.segs, cmp.AllowUnexported(seg{})) {
			t.Fatalf("canonical form %q of %q does not round-trip: %q", canon, s, q.String())
		}
		p.Lookup(root)
	})
}

func BenchmarkLookup(b *testing.B) {
	root := decode(b, event)
	for _, path := range []string{"userId", "properties.items[1].sku", "email"} {
		p := MustParse(path)
		b.Run(path, func(b *testing.B) {
			b.ReportAllocs()
			for b.Loop() {
				p.Lookup(root)
			}
		})
	}
}
