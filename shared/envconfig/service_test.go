package envconfig

import (
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

func TestReadService(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	got := ReadService(env(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "HOST": "127.0.0.1", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8086"}), "8081")
	want := Service{Port: "8081", Host: "127.0.0.1", Project: "p", LogLevel: "info", FirestoreDatabase: "(default)",
		AccountsCollection: "accounts", FirestoreEmulator: true}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("ReadService defaults (-want +got):\n%s", diff)
	}
	if errs := got.Validate(); len(errs) != 0 {
		t.Errorf("Validate() = %v, want none", errs)
	}
	bad := ReadService(env(map[string]string{"PORT": "http", "LOG_LEVEL": "loud"}), "8080")
	var msgs []string
	for _, err := range bad.Validate() {
		msgs = append(msgs, err.Error())
	}
	if all := strings.Join(msgs, "; "); len(msgs) != 3 || !strings.Contains(all, "GOOGLE_CLOUD_PROJECT") || !strings.Contains(all, `PORT="http"`) || !strings.Contains(all, "LOG_LEVEL") {
		t.Errorf("Validate() = %q, want GOOGLE_CLOUD_PROJECT, PORT and LOG_LEVEL", msgs)
	}
}

func TestDurationUpTo(t *testing.T) {
	for v, ok := range map[string]bool{"": true, "10m": true, "1s": true, "11m": false, "0s": false, "-1m": false, "soon": false} {
		getenv := func(string) string { return v }
		d, err := DurationUpTo(getenv, "TTL", 10*time.Minute, 10*time.Minute)
		if (err == nil) != ok || err != nil && !strings.Contains(err.Error(), "TTL") {
			t.Errorf("DurationUpTo(%q) = %v, %v; want ok %t, an error naming TTL", v, d, err, ok)
		}
	}
}
