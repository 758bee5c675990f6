package account

import (
	"encoding/json"
	"errors"
	"reflect"
	"strconv"
	"strings"
	"sync"
	"testing"

	"github.com/google/go-cmp/cmp"
	"github.com/startdeliver/segment-destination/shared/fieldpath"
)

// seedConfig is the example document of docs/api.md §4 with the seed document's
// full matching and mapping configuration.
const seedConfig = `{
  "name": "Acme Inc",
  "disabled": false,
  "settings": { "startdeliverUserCustomFieldToMatchOn": "externalId", "allowUserIdFallback": true },
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
  },
  "startdeliverApiUrl": "https://app.startdeliver.com/api/v1"
}`

var seedAccount = &Account{
	Name:     "Acme Inc",
	Settings: Settings{StartdeliverUserCustomFieldToMatchOn: "externalId", AllowUserIDFallback: true},
	SegmentApp: SegmentApp{
		Enabled:                   true,
		StartdeliverMatchingField: Target{Field: "customfieldMatchingId", Type: TypeText},
		ExternalMatchingField:     Source{Field: "userId"},
		StartdeliverCustomerField: Target{Field: "customfieldCustomId", Type: TypeNumber},
		ExternalCustomerField:     Source{Field: "traits.customerId"},
		UserMapping: []Mapping{
			{Field: "name", ExternalField: "traits.trait2", Type: TypeText},
			{Field: "customfieldNumber", ExternalField: "traits.trait1", Type: TypeNumber},
			{Field: "email", ExternalField: "email", Type: TypeText},
		},
		CustomerMapping: []Mapping{{Field: "name", ExternalField: "traits.customerName", Type: TypeText}},
	},
	StartdeliverAPIURL: "https://app.startdeliver.com/api/v1",
}

func TestParseSeed(t *testing.T) {
	a, err := Parse([]byte(seedConfig))
	if err != nil {
		t.Fatalf("Parse(seed) error: %v", err)
	}
	if diff := cmp.Diff(seedAccount, a); diff != "" {
		t.Errorf("Parse(seed) (-want +got):\n%s", diff)
	}
	if err := a.Validate(); err != nil {
		t.Errorf("Validate(seed) = %v, want nil", err)
	}
}

func TestMapRoundTrip(t *testing.T) {
	minimal := &Account{Settings: Settings{StartdeliverUserCustomFieldToMatchOn: "externalId"}}
	for name, a := range map[string]*Account{"seed": seedAccount, "minimal": minimal} {
		t.Run(name, func(t *testing.T) {
			got, err := FromMap(a.Map())
			if err != nil {
				t.Fatalf("FromMap(Map()) error: %v", err)
			}
			if diff := cmp.Diff(a, got); diff != "" {
				t.Errorf("FromMap(Map()) (-want +got):\n%s", diff)
			}
			// The JSON form decodes to the same document too.
			b, err := json.Marshal(a)
			if err != nil {
				t.Fatal(err)
			}
			got, err = Parse(b)
			if err != nil {
				t.Fatalf("Parse(json.Marshal) error: %v", err)
			}
			if diff := cmp.Diff(a, got); diff != "" {
				t.Errorf("Parse(json.Marshal) (-want +got):\n%s", diff)
			}
		})
	}
}

func TestFromMapFirestoreTypes(t *testing.T) {
	m := map[string]any{
		"name":      "Acme",
		"disabled":  true,
		"updatedAt": int64(1700000000), // a tool's own metadata: ignored
		"settings": map[string]any{
			"startdeliverUserCustomFieldToMatchOn": "externalId",
			"segmentOverrideMatchingField":         nil,
		},
		"segmentApp": map[string]any{
			"enabled":     false,
			"userMapping": []any{},
		},
	}
	got, err := FromMap(m)
	if err != nil {
		t.Fatalf("FromMap error: %v", err)
	}
	want := &Account{Name: "Acme", Disabled: true, Settings: Settings{StartdeliverUserCustomFieldToMatchOn: "externalId"}}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("FromMap (-want +got):\n%s", diff)
	}
	if _, err := FromMap(nil); err == nil {
		t.Error("FromMap(nil) = nil error, want one")
	}
}

func problemsOf(t *testing.T, err error) []string {
	t.Helper()
	if err == nil {
		return nil
	}
	var ve *ValidationError
	if !errors.As(err, &ve) {
		t.Fatalf("error %v (%T), want *ValidationError", err, err)
	}
	var out []string
	for _, p := range ve.Problems {
		out = append(out, p.String())
	}
	return out
}

func TestParseErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want []string
	}{
		{"unknown top-level key", `{"nmae":"x","settings":{}}`, []string{`nmae: unknown key`}},
		{"case typo", `{"settings":{"startdeliverUserCustomFieldToMatchon":"x"}}`,
			[]string{`settings.startdeliverUserCustomFieldToMatchon: unknown key (did you mean "startdeliverUserCustomFieldToMatchOn"?)`}},
		{"api key in settings", `{"settings":{"apiKey":"SECRET-KEY-1"}}`,
			[]string{"settings.apiKey: the API key is never stored in an account (the document id is its SHA-256): remove it"}},
		{"wrong types", `{"name":1,"disabled":"no","settings":[],"segmentApp":{"enabled":1,"userMapping":{}}}`, []string{
			"disabled: want a boolean, got a string",
			"name: want a string, got a number",
			"segmentApp.enabled: want a boolean, got a number",
			"segmentApp.userMapping: want an array, got an object",
			"settings: want an object, got an array",
		}},
		{"mapping entry", `{"segmentApp":{"customerMapping":[{"field":"a","externalField":"b","typ":"text"}, 3]}}`, []string{
			"segmentApp.customerMapping[0].typ: unknown key",
			"segmentApp.customerMapping[1]: want an object, got a number",
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := Parse([]byte(tt.in))
			got := problemsOf(t, err)
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Parse(%s) problems (-want +got):\n%s", tt.in, diff)
			}
			if strings.Contains(err.Error(), "SECRET-KEY-1") {
				t.Errorf("Parse error %q echoes the API key", err)
			}
		})
	}
	for _, in := range []string{``, `[]`, `{"a":`, `{} {}`} {
		if _, err := Parse([]byte(in)); err == nil {
			t.Errorf("Parse(%q) = nil error, want one", in)
		}
	}
}

func TestValidate(t *testing.T) {
	base := func() *Account {
		a := *seedAccount
		a.SegmentApp.UserMapping = append([]Mapping(nil), seedAccount.SegmentApp.UserMapping...)
		return &a
	}
	tests := []struct {
		name   string
		change func(a *Account)
		want   []string
	}{
		{"seed is valid", func(*Account) {}, nil},
		{"missing custom field", func(a *Account) { a.Settings.StartdeliverUserCustomFieldToMatchOn = " " },
			[]string{"settings.startdeliverUserCustomFieldToMatchOn: required"}},
		{"bad override path", func(a *Account) { a.Settings.SegmentOverrideMatchingField = "properties['Field With Space" },
			[]string{`settings.segmentOverrideMatchingField: bad field path "properties['Field With Space" at offset 11: unterminated quoted name`}},
		{"override with space is fine", func(a *Account) { a.Settings.SegmentOverrideMatchingField = "properties['Field With Space']" }, nil},
		{"unknown type", func(a *Account) { a.SegmentApp.StartdeliverCustomerField.Type = "num" },
			[]string{`segmentApp.startdeliverCustomerField.type: unknown type "num" (want text, number, boolean or date)`}},
		{"mapping without field", func(a *Account) { a.SegmentApp.UserMapping[1].Field = "" },
			[]string{"segmentApp.userMapping[1].field: required"}},
		{"mapping bad path and type", func(a *Account) {
			a.SegmentApp.UserMapping[2] = Mapping{Field: "x", ExternalField: "traits..a", Type: "bool"}
		}, []string{
			`segmentApp.userMapping[2].externalField: bad field path "traits..a" at offset 7: unexpected "." (want a name)`,
			`segmentApp.userMapping[2].type: unknown type "bool" (want text, number, boolean or date)`,
		}},
		{"mapping without externalField", func(a *Account) { a.SegmentApp.UserMapping[0].ExternalField = "" },
			[]string{"segmentApp.userMapping[0].externalField: required"}},
		{"duplicate and reserved mapping", func(a *Account) {
			a.SegmentApp.UserMapping = append(a.SegmentApp.UserMapping, Mapping{Field: "name", ExternalField: "x"}, Mapping{Field: "customer", ExternalField: "y"})
		}, []string{
			`segmentApp.userMapping[3].field: "name" is already mapped by segmentApp.userMapping[0]`,
			`segmentApp.userMapping[4].field: "customer" cannot be mapped: the user's customer is set by linking to the matched customer`,
		}},
		{"enabled needs matching fields", func(a *Account) {
			a.SegmentApp.StartdeliverMatchingField = Target{}
			a.SegmentApp.ExternalMatchingField = Source{}
		}, []string{
			"segmentApp.startdeliverMatchingField.field: required",
			"segmentApp.externalMatchingField.field: required",
		}},
		{"disabled needs nothing", func(a *Account) { a.SegmentApp = SegmentApp{} }, nil},
		{"disabled still checks what is there", func(a *Account) {
			a.SegmentApp = SegmentApp{ExternalMatchingField: Source{Field: "a["}}
		}, []string{`segmentApp.externalMatchingField.field: bad field path "a[" at offset 2: unclosed "["`}},
		{"customer source without customer field", func(a *Account) {
			a.SegmentApp.StartdeliverCustomerField = Target{}
		}, []string{
			"segmentApp.startdeliverCustomerField.field: required when externalCustomerField is set",
			"segmentApp.startdeliverCustomerField.field: required when customerMapping is set",
		}},
		{"customer field without source is fine (group uses groupId)", func(a *Account) {
			a.SegmentApp.ExternalCustomerField = Source{}
		}, nil},
		{"http to a remote host", func(a *Account) { a.StartdeliverAPIURL = "http://example.com/api" },
			[]string{"startdeliverApiUrl: http is allowed only for loopback hosts; use https"}},
		{"http to loopback", func(a *Account) { a.StartdeliverAPIURL = "http://127.0.0.1:9000/api/v1" }, nil},
		{"http to localhost", func(a *Account) { a.StartdeliverAPIURL = "http://localhost:9000" }, nil},
		{"relative URL", func(a *Account) { a.StartdeliverAPIURL = "/api/v1" },
			[]string{"startdeliverApiUrl: want an absolute URL such as https://app.startdeliver.com/api/v1"}},
		{"ftp URL", func(a *Account) { a.StartdeliverAPIURL = "ftp://example.com" },
			[]string{`startdeliverApiUrl: scheme "ftp" not supported; use https`}},
		{"credentials in URL", func(a *Account) { a.StartdeliverAPIURL = "https://user:pw@example.com" },
			[]string{"startdeliverApiUrl: must not contain credentials"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			a := base()
			tt.change(a)
			got := problemsOf(t, a.Validate())
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("Validate() problems (-want +got):\n%s", diff)
			}
			_, err := Compile(a)
			if (err == nil) != (tt.want == nil) {
				t.Errorf("Compile() error = %v, want error %v", err, tt.want != nil)
			}
		})
	}
}

func TestCompile(t *testing.T) {
	c, err := Compile(seedAccount)
	if err != nil {
		t.Fatalf("Compile(seed) error: %v", err)
	}
	want := CompiledApp{
		Enabled:  true,
		User:     MatchRule{Field: "customfieldMatchingId", Type: TypeText, Source: fieldpath.MustParse("userId")},
		Customer: &MatchRule{Field: "customfieldCustomId", Type: TypeNumber, Source: fieldpath.MustParse("traits.customerId")},
		UserMapping: []FieldRule{
			{Field: "name", Type: TypeText, Source: fieldpath.MustParse("traits.trait2")},
			{Field: "customfieldNumber", Type: TypeNumber, Source: fieldpath.MustParse("traits.trait1")},
			{Field: "email", Type: TypeText, Source: fieldpath.MustParse("email")},
		},
		CustomerMapping: []FieldRule{{Field: "name", Type: TypeText, Source: fieldpath.MustParse("traits.customerName")}},
	}
	if diff := cmp.Diff(want, c.SegmentApp, cmp.Comparer(func(a, b fieldpath.Path) bool { return a.String() == b.String() })); diff != "" {
		t.Errorf("Compile(seed).SegmentApp (-want +got):\n%s", diff)
	}
	// The compiled copy does not share the caller's slices.
	a := *seedAccount
	a.SegmentApp.UserMapping = append([]Mapping(nil), seedAccount.SegmentApp.UserMapping...)
	c2, _ := Compile(&a)
	a.SegmentApp.UserMapping[0].Field = "changed"
	if c2.Account.SegmentApp.UserMapping[0].Field != "name" {
		t.Error("Compiled.Account shares the mapping slice with its input")
	}
}

func TestOverridePath(t *testing.T) {
	a := *seedAccount
	a.Settings.SegmentOverrideMatchingField = "properties.myCustomField"
	c, err := Compile(&a)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for i := range 8 {
		wg.Go(func() {
			for j := range 100 {
				path := "properties.f" + strconv.Itoa((i+j)%40)
				p, err := c.OverridePath(path)
				if err != nil || p.String() != path {
					t.Errorf("OverridePath(%q) = %v, %v, want the parsed path", path, p, err)
					return
				}
			}
		})
	}
	wg.Wait()
	if p, err := c.OverridePath("properties.myCustomField"); err != nil || p.String() != "properties.myCustomField" {
		t.Errorf("OverridePath(stored) = %v, %v", p, err)
	}
	_, err = c.OverridePath("a..b")
	var se *fieldpath.SyntaxError
	if !errors.As(err, &se) {
		t.Errorf("OverridePath(a..b) error = %v, want *fieldpath.SyntaxError", err)
	}
	if n := len(c.paths.m); n > pathCacheSize {
		t.Errorf("path cache holds %d entries, want at most %d", n, pathCacheSize)
	}
}

// FuzzFromMap: FromMap reads Firestore documents, which anyone with write
// access to the collection shapes. It never panics, its errors never carry a
// value planted in the document (only key paths and our own words), and an
// account it returns survives Map and FromMap unchanged.
func FuzzFromMap(f *testing.F) {
	const planted = "sd-live-planted-doc-key"
	f.Add([]byte(`{"name":"Acme","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId"}}`))
	f.Add([]byte(`{"settings":{"segmentOverrideMatchingField":"properties['` + planted + `"},"segmentApp":{"enabled":true,"userMapping":[{"field":"` + planted + `","type":"` + planted + `"}]}}`))
	f.Add([]byte(`{"disabled":"` + planted + `","startdeliverApiUrl":"http://` + planted + `@evil"}`))
	f.Add([]byte(`{"segmentApp":{"startdeliverMatchingField":{"field":1,"type":[]},"customerMapping":"` + planted + `"}}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		var m map[string]any
		if err := json.Unmarshal(data, &m); err != nil || m == nil {
			return
		}
		a, err := FromMap(m)
		if err != nil {
			if strings.Contains(err.Error(), planted) {
				t.Fatalf("FromMap error %q carries a planted value", err)
			}
			return
		}
		_ = a.Validate()
		back, err := FromMap(roundTrip(t, a.Map()))
		if err != nil {
			t.Fatalf("FromMap(Map(a)) = %v", err)
		}
		if !reflect.DeepEqual(a, back) {
			t.Fatalf("FromMap(Map(a)) = %+v, want %+v", back, a)
		}
	})
}

// roundTrip passes m through JSON, as Firestore would store and return it.
func roundTrip(t *testing.T, m map[string]any) map[string]any {
	b, err := json.Marshal(m)
	if err != nil {
		t.Fatal(err)
	}
	var out map[string]any
	if err := json.Unmarshal(b, &out); err != nil {
		t.Fatal(err)
	}
	return out
}
