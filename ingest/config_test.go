package main

import (
	"bytes"
	"context"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/hybrid"
	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/startdeliver/segment-destination/shared/keyseal"
)

func TestLoadConfig(t *testing.T) {
	env := func(m map[string]string) func(string) string { return func(k string) string { return m[k] } }
	pub, priv := testKeysets(t)
	c, err := loadConfig(env(map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "API_KEY_PUBLIC_KEYSET": pub}))
	if err != nil {
		t.Fatal(err)
	}
	if c.Port != "8080" || c.Topic != "segment-events" || c.AccountsCollection != "accounts" || c.ConfigCacheTTL != 10*time.Minute || c.Ordering || c.PublishMaxBytes != 64<<20 {
		t.Errorf("defaults = %+v", c)
	}
	for _, tt := range []struct {
		env  map[string]string
		want string
	}{
		{map[string]string{}, "GOOGLE_CLOUD_PROJECT"},
		// No keyset outside the emulators is a start-up error, and a
		// private keyset is refused: ingest must not be able to decrypt.
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p"}, "API_KEY_PUBLIC_KEYSET is required outside the emulators"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085"}, "API_KEY_PUBLIC_KEYSET is required"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "API_KEY_PUBLIC_KEYSET": priv}, "API_KEY_PUBLIC_KEYSET: keyseal: not a public keyset"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "API_KEY_PUBLIC_KEYSET": "{}"}, "API_KEY_PUBLIC_KEYSET"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "API_KEY_PUBLIC_KEYSET": pub, "CONFIG_CACHE_TTL": "11m"}, "CONFIG_CACHE_TTL"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "API_KEY_PUBLIC_KEYSET": pub, "CONFIG_CACHE_TTL": "soon"}, "CONFIG_CACHE_TTL"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "API_KEY_PUBLIC_KEYSET": pub, "PORT": "http"}, "PORT"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "API_KEY_PUBLIC_KEYSET": pub, "PUBSUB_ORDERING": "maybe"}, "PUBSUB_ORDERING"},
		{map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "API_KEY_PUBLIC_KEYSET": pub, "PUBSUB_PUBLISH_MAX_BYTES": "1000"}, "PUBSUB_PUBLISH_MAX_BYTES"},
	} {
		if _, err := loadConfig(env(tt.env)); err == nil || !strings.Contains(err.Error(), tt.want) {
			t.Errorf("loadConfig(%v) = %v, want an error naming %s", tt.env, err, tt.want)
		}
	}
}

// TestLoadConfigEmulatorNeedsNoKeyset: on the Firestore emulator ingest
// starts with no keyset configured (it uses the development keyset).
func TestLoadConfigEmulatorNeedsNoKeyset(t *testing.T) {
	env := map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "PUBSUB_EMULATOR_HOST": "127.0.0.1:8085", "FIRESTORE_EMULATOR_HOST": "127.0.0.1:8086"}
	if _, err := loadConfig(func(k string) string { return env[k] }); err != nil {
		t.Fatalf("loadConfig on the emulators without a keyset = %v", err)
	}
}

// TestIngestCannotDecrypt: everything ingest's configuration holds about
// the keyset is public: no decrypter can be made from it, and the sealer
// ingest builds refuses a private keyset outright.
func TestIngestCannotDecrypt(t *testing.T) {
	pub, priv := testKeysets(t)
	cfg, err := loadConfig(func(k string) string {
		return map[string]string{"GOOGLE_CLOUD_PROJECT": "p", "API_KEY_PUBLIC_KEYSET": pub}[k]
	})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(cfg.PublicKeyset, "privateKey") || strings.Contains(cfg.PublicKeyset, "ASYMMETRIC_PRIVATE") {
		t.Fatalf("ingest's keyset holds private key material: %s", cfg.PublicKeyset)
	}
	h, err := keyseal.ReadPublic([]byte(cfg.PublicKeyset))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := hybrid.NewHybridDecrypt(h); err == nil {
		t.Fatal("a decrypter was made from ingest's keyset")
	}
	if _, err := keyseal.NewOpener(h); err == nil {
		t.Fatal("an opener was made from ingest's keyset")
	}
	s, err := newSealer(context.Background(), cfg, nil)
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal("sd-key", strings.Repeat("a", 64), "m1")
	if err != nil {
		t.Fatal(err)
	}
	// Only deliver's private keyset opens what ingest sealed.
	privH, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(strings.NewReader(priv)))
	if err != nil {
		t.Fatal(err)
	}
	o, err := keyseal.NewOpener(privH)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := o.Open(sealed, strings.Repeat("a", 64), "m1"); err != nil || got != "sd-key" {
		t.Fatalf("deliver's Open = %q, %v", got, err)
	}
}

// testKeysets returns a new keyset as ingest's public JSON and the private
// JSON (clear text: a test's).
func testKeysets(t *testing.T) (pub, priv string) {
	t.Helper()
	h, err := keyseal.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	p, err := keyseal.WritePublic(h)
	if err != nil {
		t.Fatal(err)
	}
	var b bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&b)); err != nil {
		t.Fatal(err)
	}
	return string(p), b.String()
}
