package account

import (
	"encoding/base64"
	"encoding/json"
	"errors"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

func ptr[T any](v T) *T { return &v }

func TestParseSettingsHeader(t *testing.T) {
	full := `{"apiKey":"SECRET-KEY-1","startdeliverUserCustomFieldToMatchOn":"externalId","syncUsingEmailInsteadOfCustomField":true,` +
		`"segmentOverrideMatchingField":"properties['Field With Space']","allowUserIdFallback":false,"someNewSetting":{"x":1}}`
	wantFull := SettingsOverride{
		StartdeliverUserCustomFieldToMatchOn: ptr("externalId"),
		SyncUsingEmailInsteadOfCustomField:   ptr(true),
		SegmentOverrideMatchingField:         ptr("properties['Field With Space']"),
		AllowUserIDFallback:                  ptr(false),
	}
	tests := []struct {
		name string
		in   string
		want SettingsOverride
	}{
		{"std padded", base64.StdEncoding.EncodeToString([]byte(full)), wantFull},
		{"std raw", base64.RawStdEncoding.EncodeToString([]byte(full)), wantFull},
		{"url padded", base64.URLEncoding.EncodeToString([]byte(full)), wantFull},
		{"url raw", base64.RawURLEncoding.EncodeToString([]byte(full)), wantFull},
		{"surrounding space", " " + base64.StdEncoding.EncodeToString([]byte(full)) + "\n", wantFull},
		{"string booleans", b64(`{"syncUsingEmailInsteadOfCustomField":"TRUE","allowUserIdFallback":" false "}`),
			SettingsOverride{SyncUsingEmailInsteadOfCustomField: ptr(true), AllowUserIDFallback: ptr(false)}},
		{"null and empty are absent", b64(`{"syncUsingEmailInsteadOfCustomField":null,"allowUserIdFallback":"","segmentOverrideMatchingField":null}`),
			SettingsOverride{}},
		{"empty override string overrides", b64(`{"segmentOverrideMatchingField":""}`),
			SettingsOverride{SegmentOverrideMatchingField: ptr("")}},
		{"empty object", b64(`{}`), SettingsOverride{}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := ParseSettingsHeader(tt.in)
			if err != nil {
				t.Fatalf("ParseSettingsHeader(%q) error: %v", tt.in, err)
			}
			if diff := cmp.Diff(tt.want, got); diff != "" {
				t.Errorf("ParseSettingsHeader(%q) (-want +got):\n%s", tt.in, diff)
			}
		})
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }

func TestParseSettingsHeaderErrors(t *testing.T) {
	tests := []struct {
		name string
		in   string
		want string
	}{
		{"empty", "", "X-Segment-Settings header: empty value"},
		{"not base64", "%%%", "X-Segment-Settings header: not base64"},
		{"not JSON", b64(`{"apiKey":"SECRET-KEY-1" x}`), "X-Segment-Settings header: not valid JSON (syntax error at byte 26)"},
		{"key in bad JSON", b64(`{"apiKey":SECRET-KEY-1}`), "X-Segment-Settings header: not valid JSON (syntax error at byte 11)"},
		{"truncated", b64(`{"apiKey":"SECRET`), "X-Segment-Settings header: not valid JSON (unexpected end)"},
		{"array", b64(`["SECRET-KEY-1"]`), "X-Segment-Settings header: not a JSON object"},
		{"null", b64(`null`), "X-Segment-Settings header: not a JSON object"},
		{"trailing", b64(`{} {}`), "X-Segment-Settings header: not valid JSON (data after the object)"},
		{"wrong types", b64(`{"apiKey":"SECRET-KEY-1","startdeliverUserCustomFieldToMatchOn":5,"allowUserIdFallback":"yes","syncUsingEmailInsteadOfCustomField":[]}`),
			`X-Segment-Settings header: startdeliverUserCustomFieldToMatchOn: want a string, got a number; syncUsingEmailInsteadOfCustomField: want a boolean, got an array; allowUserIdFallback: want true or false, got another string`},
		{"too long", strings.Repeat("A", 20000), "X-Segment-Settings header: longer than 16384 bytes"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseSettingsHeader(tt.in)
			var he *HeaderError
			if !errors.As(err, &he) {
				t.Fatalf("ParseSettingsHeader(%q) error = %v, want *HeaderError", tt.in, err)
			}
			if err.Error() != tt.want {
				t.Errorf("ParseSettingsHeader(%q) error = %q, want %q", tt.in, err, tt.want)
			}
		})
	}
}

func TestSettingsWith(t *testing.T) {
	stored := Settings{StartdeliverUserCustomFieldToMatchOn: "externalId", SegmentOverrideMatchingField: "traits.x", AllowUserIDFallback: true}
	tests := []struct {
		name string
		o    SettingsOverride
		want Settings
	}{
		{"no override", SettingsOverride{}, stored},
		{"all keys", SettingsOverride{
			StartdeliverUserCustomFieldToMatchOn: ptr("other"),
			SyncUsingEmailInsteadOfCustomField:   ptr(true),
			SegmentOverrideMatchingField:         ptr(""),
			AllowUserIDFallback:                  ptr(false),
		}, Settings{StartdeliverUserCustomFieldToMatchOn: "other", SyncUsingEmailInsteadOfCustomField: true}},
		{"one key", SettingsOverride{SyncUsingEmailInsteadOfCustomField: ptr(true)},
			Settings{StartdeliverUserCustomFieldToMatchOn: "externalId", SyncUsingEmailInsteadOfCustomField: true, SegmentOverrideMatchingField: "traits.x", AllowUserIDFallback: true}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if diff := cmp.Diff(tt.want, stored.With(tt.o)); diff != "" {
				t.Errorf("With(%+v) (-want +got):\n%s", tt.o, diff)
			}
		})
	}
}

func TestSettingsOverrideJSON(t *testing.T) {
	for _, o := range []SettingsOverride{
		{},
		{SegmentOverrideMatchingField: ptr(""), AllowUserIDFallback: ptr(false)},
		{StartdeliverUserCustomFieldToMatchOn: ptr("x"), SyncUsingEmailInsteadOfCustomField: ptr(true), SegmentOverrideMatchingField: ptr("a.b"), AllowUserIDFallback: ptr(true)},
	} {
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		var got SettingsOverride
		if err := json.Unmarshal(b, &got); err != nil {
			t.Fatalf("Unmarshal(%s) error: %v", b, err)
		}
		if diff := cmp.Diff(o, got); diff != "" {
			t.Errorf("JSON round trip of %s (-want +got):\n%s", b, diff)
		}
	}
	b, _ := json.Marshal(SettingsOverride{})
	if string(b) != "{}" {
		t.Errorf("Marshal(zero SettingsOverride) = %s, want {}", b)
	}
	if !(SettingsOverride{}).IsZero() || (SettingsOverride{AllowUserIDFallback: ptr(false)}).IsZero() {
		t.Error("IsZero is wrong")
	}
}

func FuzzParseSettingsHeader(f *testing.F) {
	const secret = "SECRET-KEY-1"
	for _, s := range []string{
		`{"apiKey":"SECRET-KEY-1","startdeliverUserCustomFieldToMatchOn":"externalId"}`,
		`{"apiKey":"SECRET-KEY-1","allowUserIdFallback":"true"}`,
		`{"apiKey":SECRET-KEY-1}`,
		`{"apiKey":"SECRET-KEY-1"`,
	} {
		f.Add(b64(s))
		f.Add(base64.RawURLEncoding.EncodeToString([]byte(s)))
	}
	f.Fuzz(func(t *testing.T, s string) {
		o, err := ParseSettingsHeader(s)
		if err != nil {
			var he *HeaderError
			if !errors.As(err, &he) {
				t.Fatalf("ParseSettingsHeader error %T, want *HeaderError", err)
			}
			if raw, derr := decodeBase64(strings.TrimSpace(s)); derr == nil {
				var m map[string]any
				if json.Unmarshal(raw, &m) == nil {
					if key, ok := m["apiKey"].(string); ok && len(key) >= 4 && strings.Contains(err.Error(), key) {
						t.Fatalf("error %q echoes the API key %q", err, key)
					}
				}
			}
			if strings.Contains(err.Error(), secret) {
				t.Fatalf("error %q echoes the seeded API key", err)
			}
			return
		}
		b, err := json.Marshal(o)
		if err != nil {
			t.Fatal(err)
		}
		var back SettingsOverride
		if err := json.Unmarshal(b, &back); err != nil || !cmp.Equal(o, back) {
			t.Fatalf("override %s does not round-trip: %+v, %v", b, back, err)
		}
	})
}
