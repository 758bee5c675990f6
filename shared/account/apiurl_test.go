package account

import (
	"errors"
	"strings"
	"testing"
)

func TestAPIURLPolicy(t *testing.T) {
	prod := APIURLPolicy{}
	emu := APIURLPolicy{Loopback: true}
	custom := APIURLPolicy{Hosts: []string{"api.eu.startdeliver.com", "*.startdeliver.io"}}
	tests := []struct {
		name    string
		p       APIURLPolicy
		url     string
		wantErr string // substring; "" for allowed
	}{
		{"default host", prod, "https://app.startdeliver.com/api/v1", ""},
		{"default host with port and trailing dot", prod, "https://app.startdeliver.com.:443/api/v1", ""},
		{"default host, upper case", prod, "https://APP.Startdeliver.com/api/v1", ""},
		{"other host", prod, "https://evil.example.com/api/v1", `host "evil.example.com" is not an allowed`},
		{"look-alike suffix", prod, "https://app.startdeliver.com.evil.example/api", "is not an allowed"},
		{"look-alike prefix", prod, "https://evilapp.startdeliver.com/api", "is not an allowed"},
		{"http to the default host", prod, "http://app.startdeliver.com/api/v1", "use https"},
		{"loopback outside emulators", prod, "http://127.0.0.1:9000/api/v1", "only on the emulators"},
		{"https loopback outside emulators", prod, "https://localhost/api/v1", "only on the emulators"},
		{"ipv6 loopback outside emulators", prod, "http://[::1]:9000/api", "only on the emulators"},
		{"loopback on emulators", emu, "http://127.0.0.1:9000/api/v1", ""},
		{"localhost on emulators", emu, "http://localhost:9000", ""},
		{"remote http on emulators", emu, "http://example.com/api", "http is allowed only for loopback"},
		{"remote https on emulators", emu, "https://example.com/api", "is not an allowed"},
		{"credentials", prod, "https://u:p@app.startdeliver.com/api/v1", "must not contain credentials"},
		{"configured exact host", custom, "https://api.eu.startdeliver.com/v1", ""},
		{"configured wildcard", custom, "https://acme.startdeliver.io/v1", ""},
		{"wildcard is not the bare domain", custom, "https://startdeliver.io/v1", "is not an allowed"},
		{"configured list replaces the default", custom, "https://app.startdeliver.com/api/v1", "is not an allowed"},
		{"not a URL", prod, "https://app.startdeliver.com/%zz", "not a URL"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			err := tc.p.Check(tc.url)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("Check(%q) = %v, want nil", tc.url, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("Check(%q) = %v, want error containing %q", tc.url, err, tc.wantErr)
			}
		})
	}
}

func TestAPIURLPolicyFromEnv(t *testing.T) {
	env := func(v string) func(string) string {
		return func(k string) string {
			if k == "STARTDELIVER_API_HOSTS" {
				return v
			}
			return ""
		}
	}
	p, err := APIURLPolicyFromEnv(env(" API.eu.startdeliver.com , *.startdeliver.io,"), false)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(p.Hosts, ","); got != "api.eu.startdeliver.com,*.startdeliver.io" || p.Loopback {
		t.Fatalf("APIURLPolicyFromEnv = %+v", p)
	}
	p, err = APIURLPolicyFromEnv(env(""), true)
	if err != nil || len(p.Hosts) != 0 || !p.Loopback {
		t.Fatalf("APIURLPolicyFromEnv(unset, emulator) = %+v, %v", p, err)
	}
	for _, bad := range []string{"https://app.startdeliver.com", "*", "*.", "com", "a.b/c", "u@a.b"} {
		if _, err := APIURLPolicyFromEnv(env(bad), false); err == nil {
			t.Errorf("APIURLPolicyFromEnv(%q) = nil error, want refusal", bad)
		}
	}
}

// TestCheckAPIURL: a saved account naming a host off the allow-list is
// refused with the key named.
func TestCheckAPIURL(t *testing.T) {
	a := &Account{StartdeliverAPIURL: "https://attacker.example/api/v1"}
	err := a.CheckAPIURL(APIURLPolicy{})
	var ve *ValidationError
	if !errors.As(err, &ve) || !strings.Contains(err.Error(), "startdeliverApiUrl:") {
		t.Fatalf("CheckAPIURL = %v, want a ValidationError naming startdeliverApiUrl", err)
	}
	if err := (&Account{}).CheckAPIURL(APIURLPolicy{}); err != nil {
		t.Fatalf("CheckAPIURL(no URL) = %v", err)
	}
}
