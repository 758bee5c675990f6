package abbrev

import (
	"encoding/json"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestString(t *testing.T) {
	tests := []struct {
		s    string
		n    int
		want string
	}{
		{"short", 10, "short"},
		{"exactly10!", 10, "exactly10!"},
		{"longer than ten", 10, "longer …"},
		{"ééééé", 6, "é…"}, // 10 bytes; "é…" is 5
		{"éééé", 4, "…"},   // no whole "é" fits beside the ellipsis
		{"abc", 2, "ab"},   // no room for the ellipsis: cut only
		{"a\xffb", 10, "a\uFFFDb"},
		{"\xff\xff\xff\xff", 4, "\uFFFD"}, // 12 bytes of replacement, cut
		{"", 0, ""},
	}
	for _, tt := range tests {
		got := String(tt.s, tt.n)
		if got != tt.want {
			t.Errorf("String(%q, %d) = %q, want %q", tt.s, tt.n, got, tt.want)
		}
		if len(got) > tt.n && tt.n >= 0 {
			t.Errorf("String(%q, %d) = %d bytes, want at most %d", tt.s, tt.n, len(got), tt.n)
		}
		if !utf8.ValidString(got) {
			t.Errorf("String(%q, %d) = %q, not valid UTF-8", tt.s, tt.n, got)
		}
	}
}

func FuzzString(f *testing.F) {
	f.Add("ééé\xff", 5)
	f.Fuzz(func(t *testing.T, s string, n int) {
		if n < 0 || n > 1<<16 {
			return
		}
		got := String(s, n)
		if len(got) > n || !utf8.ValidString(got) {
			t.Fatalf("String(%q, %d) = %q", s, n, got)
		}
		if valid := strings.ToValidUTF8(s, "\uFFFD"); len(valid) <= n && got != valid {
			t.Fatalf("String(%q, %d) = %q, want it whole", s, n, got)
		}
	})
}

func TestID(t *testing.T) {
	for in, want := range map[string]string{
		"12b64a97e0f4c1d2aa": "12b64a97e0f4",
		"abc":                "abc",
		"":                   "",
	} {
		if got := ID(in); got != want {
			t.Errorf("ID(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestKind(t *testing.T) {
	for _, tt := range []struct {
		v    any
		want string
	}{
		{nil, "null"}, {true, "a boolean"}, {json.Number("1"), "a number"}, {1.5, "a number"},
		{"sd-key", "a string"}, {[]any{}, "an array"}, {map[string]any{}, "an object"}, {struct{}{}, "struct {}"},
	} {
		if got := Kind(tt.v); got != tt.want {
			t.Errorf("Kind(%#v) = %q, want %q", tt.v, got, tt.want)
		}
	}
}
