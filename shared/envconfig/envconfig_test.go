package envconfig

import (
	"strings"
	"testing"
	"time"
)

func TestParse(t *testing.T) {
	env := map[string]string{"S": "x", "D": "90s", "I": "7", "B": "false", "BAD": "nope"}
	getenv := func(k string) string { return env[k] }
	if got := String(getenv, "S", "d"); got != "x" {
		t.Errorf("String(S) = %q, want x", got)
	}
	if got := String(getenv, "MISSING", "d"); got != "d" {
		t.Errorf("String(MISSING) = %q, want the default", got)
	}
	if got, err := Duration(getenv, "D", time.Second); err != nil || got != 90*time.Second {
		t.Errorf("Duration(D) = %v, %v; want 90s", got, err)
	}
	if got, err := Int(getenv, "I", 1); err != nil || got != 7 {
		t.Errorf("Int(I) = %v, %v; want 7", got, err)
	}
	if got, err := Bool(getenv, "B", true); err != nil || got {
		t.Errorf("Bool(B) = %v, %v; want false", got, err)
	}
	if got, err := Bool(getenv, "MISSING", true); err != nil || !got {
		t.Errorf("Bool(MISSING) = %v, %v; want the default true", got, err)
	}
	for name, err := range map[string]error{
		"Duration": func() error { _, err := Duration(getenv, "BAD", 0); return err }(),
		"Int":      func() error { _, err := Int(getenv, "BAD", 0); return err }(),
		"Bool":     func() error { _, err := Bool(getenv, "BAD", false); return err }(),
	} {
		if err == nil || err.Error() == "" || !contains(err.Error(), "BAD") {
			t.Errorf("%s(BAD) error = %v, want one naming BAD", name, err)
		}
	}
}

func contains(s, sub string) bool { return strings.Contains(s, sub) }
