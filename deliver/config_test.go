package main

import (
	"strings"
	"testing"
	"time"
)

func TestLoadConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := loadConfig(env(map[string]string{"GOOGLE_CLOUD_PROJECT": "p"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != "8081" || c.Mode != "pull" || c.Subscription != "segment-events-deliver" || c.DeadLetterTopic != "segment-events-dead" ||
		c.StartdeliverURL != "https://app.startdeliver.com/api/v1" || !c.ConfigListener || c.PerAccount != 8 ||
		c.Budget != 5*time.Second || c.AckDeadline != time.Minute || c.MaxRate != 20 || c.turnWait() != 48*time.Second {
		t.Errorf("defaults = %+v", c)
	}
	push, err := loadConfig(env(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "push",
		"PUSH_AUDIENCE": "https://deliver.example.run.app", "PUSH_SERVICE_ACCOUNT": "push@p.iam.gserviceaccount.com"}))
	if err != nil || push.ConfigListener {
		t.Errorf("push mode: listener = %v (%v), want off by default", push.ConfigListener, err)
	}
	if _, err := loadConfig(env(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "push", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"})); err != nil {
		t.Errorf("push mode on the emulators without PUSH_AUDIENCE: %v, want allowed (the emulators send no tokens)", err)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "GOOGLE_CLOUD_PROJECT"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "stream"}, "DELIVER_MODE"},
		// Push authentication is never silently off outside the emulators.
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "push"}, "PUSH_AUDIENCE and PUSH_SERVICE_ACCOUNT"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "push", "PUSH_AUDIENCE": "https://d.run.app"}, "PUSH_SERVICE_ACCOUNT"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "push", "PUSH_SERVICE_ACCOUNT": "a@p.iam.gserviceaccount.com"}, "PUSH_AUDIENCE"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "CONFIG_CACHE_TTL": "1h"}, "CONFIG_CACHE_TTL"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "ACCOUNT_CONCURRENCY": "0"}, "ACCOUNT_CONCURRENCY"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "PULL_STREAMS": "many"}, "PULL_STREAMS"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "CONFIG_LISTENER": "sometimes"}, "CONFIG_LISTENER"},
		// A budget that, with the outcome's writes, outlasts the shutdown grace.
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVERY_BUDGET": "7s"}, "DELIVERY_BUDGET"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "ACK_DEADLINE": "5s"}, "ACK_DEADLINE"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "STARTDELIVER_MAX_RATE": "fast"}, "STARTDELIVER_MAX_RATE"},
	} {
		if _, err := loadConfig(env(tt.env)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("loadConfig(%v) = %v, want an error naming %s", tt.env, err, tt.want)
		}
	}
}
