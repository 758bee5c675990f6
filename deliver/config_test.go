package main

import (
	"strings"
	"testing"
)

func TestLoadConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	c, err := loadConfig(env(map[string]string{"GOOGLE_CLOUD_PROJECT": "p"}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != "8081" || c.Mode != "pull" || c.Subscription != "segment-events-deliver" || c.DeadLetterTopic != "segment-events-dead" ||
		c.StartdeliverURL != "https://app.startdeliver.com/api/v1" || !c.ConfigListener || c.PerAccount != 8 {
		t.Errorf("defaults = %+v", c)
	}
	push, err := loadConfig(env(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "push"}))
	if err != nil || push.ConfigListener {
		t.Errorf("push mode: listener = %v (%v), want off by default", push.ConfigListener, err)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "GOOGLE_CLOUD_PROJECT"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "DELIVER_MODE": "stream"}, "DELIVER_MODE"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "CONFIG_CACHE_TTL": "1h"}, "CONFIG_CACHE_TTL"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "ACCOUNT_CONCURRENCY": "0"}, "ACCOUNT_CONCURRENCY"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "PULL_STREAMS": "many"}, "PULL_STREAMS"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "CONFIG_LISTENER": "sometimes"}, "CONFIG_LISTENER"},
	} {
		if _, err := loadConfig(env(tt.env)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("loadConfig(%v) = %v, want an error naming %s", tt.env, err, tt.want)
		}
	}
}
