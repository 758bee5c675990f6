package main

import (
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	// Outside the emulators deliver needs its keyset and the KMS key that
	// encrypts it.
	ks := map[string]string{"API_KEY_KEYSET": "{}", "API_KEY_KEYSET_KEK": "gcp-kms://projects/p/locations/europe-west1/keyRings/r/cryptoKeys/k"}
	with := func(m map[string]string) map[string]string {
		out := map[string]string{}
		for k, v := range ks {
			out[k] = v
		}
		for k, v := range m {
			out[k] = v
		}
		return out
	}
	c, err := loadConfig(env(with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p"})))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != "8081" || c.Mode != "pull" || c.Subscription != "segment-events-deliver" || c.DeadLetterTopic != "segment-events-dead" ||
		c.StartdeliverURL != "https://app.startdeliver.com/api/v1" || !c.ConfigListener || c.PerAccount != 8 ||
		c.Budget != 5*time.Second || c.AckDeadline != time.Minute || c.MaxRate != 20 || c.turnWait() != 48*time.Second {
		t.Errorf("defaults = %+v", c)
	}
	push, err := loadConfig(env(with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "push",
		"PUSH_AUDIENCE": "https://deliver.example.run.app", "PUSH_SERVICE_ACCOUNT": "push@p.iam.gserviceaccount.com"})))
	if err != nil || push.ConfigListener {
		t.Errorf("push mode: listener = %v (%v), want off by default", push.ConfigListener, err)
	}
	emulators := map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "push", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8086"}
	if _, err := loadConfig(env(emulators)); err != nil {
		t.Errorf("push mode on the emulators without PUSH_AUDIENCE or a keyset: %v, want allowed (the emulators send no tokens; the development keyset applies)", err)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "GOOGLE_CLOUD_PROJECT"},
		// A missing keyset outside the emulators is a start-up error.
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p"}, "API_KEY_KEYSET is required outside the emulators"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}, "API_KEY_KEYSET is required"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "API_KEY_KEYSET": "{}"}, "API_KEY_KEYSET_KEK is required"},
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "API_KEY_KEYSET_KEK": "aws-kms://x"}), "API_KEY_KEYSET_KEK: want gcp-kms://"},
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "stream"}), "DELIVER_MODE"},
		// Push authentication is never silently off outside the emulators.
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "push"}), "PUSH_AUDIENCE and PUSH_SERVICE_ACCOUNT"},
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "push", "PUSH_AUDIENCE": "https://d.run.app"}), "PUSH_SERVICE_ACCOUNT"},
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "push", "PUSH_SERVICE_ACCOUNT": "a@p.iam.gserviceaccount.com"}), "PUSH_AUDIENCE"},
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "CONFIG_CACHE_TTL": "1h"}), "CONFIG_CACHE_TTL"},
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "ACCOUNT_CONCURRENCY": "0"}), "ACCOUNT_CONCURRENCY"},
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "PULL_STREAMS": "many"}), "PULL_STREAMS"},
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "CONFIG_LISTENER": "sometimes"}), "CONFIG_LISTENER"},
		// A budget that, with the outcome's writes, outlasts the shutdown grace.
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVERY_BUDGET": "7s"}), "DELIVERY_BUDGET"},
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "ACK_DEADLINE": "5s"}), "ACK_DEADLINE"},
		{with(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "STARTDELIVER_MAX_RATE": "fast"}), "STARTDELIVER_MAX_RATE"},
	} {
		if _, err := loadConfig(env(tt.env)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("loadConfig(%v) = %v, want an error naming %s", tt.env, err, tt.want)
		}
	}
}
