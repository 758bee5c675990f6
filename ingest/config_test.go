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
	if c.Port != "8080" || c.Topic != "segment-events" || c.AccountsCollection != "accounts" || c.ConfigCacheTTL != 10*time.Minute || !c.Ordering || c.PublishMaxBytes != 64<<20 {
		t.Errorf("defaults = %+v", c)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "GOOGLE_CLOUD_PROJECT"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "CONFIG_CACHE_TTL": "11m"}, "CONFIG_CACHE_TTL"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "CONFIG_CACHE_TTL": "soon"}, "CONFIG_CACHE_TTL"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "PORT": "http"}, "PORT"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_ORDERING": "maybe"}, "PUBSUB_ORDERING"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_PUBLISH_MAX_BYTES": "1000"}, "PUBSUB_PUBLISH_MAX_BYTES"},
	} {
		if _, err := loadConfig(env(tt.env)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("loadConfig(%v) = %v, want an error naming %s", tt.env, err, tt.want)
		}
	}
}
