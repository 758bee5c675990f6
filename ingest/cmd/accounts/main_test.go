package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestAPIURLAllowList: validate and put refuse an account whose
// startdeliverApiUrl is off the allow-list before anything is written
// (put fails before it connects anywhere: no project is even set).
func TestAPIURLAllowList(t *testing.T) {
	dir := t.TempDir()
	write := func(name, url string) string {
		p := filepath.Join(dir, name)
		doc := `{"name":"Acme","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId"},"startdeliverApiUrl":"` + url + `"}`
		if err := os.WriteFile(p, []byte(doc), 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	env := func(vars map[string]string) func(string) string {
		return func(k string) string { return vars[k] }
	}
	prod := env(nil)
	emu := env(map[string]string{"FIRESTORE_EMULATOR_HOST": "127.0.0.1:1"})
	hosts := env(map[string]string{"STARTDELIVER_API_HOSTS": "api.eu.startdeliver.com"})
	tests := []struct {
		name    string
		args    []string
		getenv  func(string) string
		wantErr string
	}{
		{"default host", []string{"validate", "-file", write("ok.json", "https://app.startdeliver.com/api/v1")}, prod, ""},
		{"attacker host", []string{"validate", "-file", write("evil.json", "https://collector.example/api")}, prod, `startdeliverApiUrl: host "collector.example" is not an allowed`},
		{"put to attacker host", []string{"put", "-key", "k", "-file", write("evil2.json", "https://collector.example/api")}, prod, "is not an allowed"},
		{"loopback outside emulator", []string{"validate", "-file", write("lo.json", "http://127.0.0.1:9000/api")}, prod, "only on the emulators"},
		{"loopback on emulator", []string{"validate", "-file", write("lo2.json", "http://127.0.0.1:9000/api")}, emu, ""},
		{"configured host", []string{"validate", "-file", write("eu.json", "https://api.eu.startdeliver.com/v1")}, hosts, ""},
		{"default host off a configured list", []string{"validate", "-file", write("ok2.json", "https://app.startdeliver.com/api/v1")}, hosts, "is not an allowed"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			var out bytes.Buffer
			err := run(context.Background(), tc.args, tc.getenv, &out)
			if tc.wantErr == "" {
				if err != nil {
					t.Fatalf("run(%v) = %v, want nil", tc.args, err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("run(%v) = %v, want error containing %q", tc.args, err, tc.wantErr)
			}
		})
	}
}
