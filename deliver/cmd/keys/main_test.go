package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/tink-crypto/tink-go/v2/core/registry"
	"github.com/tink-crypto/tink-go/v2/testing/fakekms"

	"github.com/startdeliver/segment-destination/shared/keyseal"
)

// TestCreateRotateRetire drives the command as an operator would, with
// Tink's fake KMS in place of Cloud KMS: a key sealed under the first
// keyset still opens after a rotation (so old messages and replays keep
// working), new seals use the new primary, and retiring the old key ends
// only the old messages.
func TestCreateRotateRetire(t *testing.T) {
	ctx := context.Background()
	kms, err := fakekms.NewClient("fake-kms://")
	if err != nil {
		t.Fatal(err)
	}
	kek, err := fakekms.NewKeyURI()
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	p := func(n string) string { return filepath.Join(dir, n) }
	keys := func(args ...string) string {
		t.Helper()
		var out bytes.Buffer
		if err := run(ctx, append(args, "-kek", kek), strings.NewReader(""), &out, kms); err != nil {
			t.Fatalf("keys %v: %v", args, err)
		}
		return out.String()
	}
	keys("create", "-out", p("v1.json"), "-public-out", p("pub1.json"))
	keys("rotate", "-in", p("v1.json"), "-out", p("v2.json"), "-public-out", p("pub2.json"))

	v1, v2 := read(t, p("v1.json")), read(t, p("v2.json"))
	if bytes.Contains(v1, []byte("privateKey")) || !bytes.Contains(v1, []byte("encryptedKeyset")) {
		t.Fatalf("written keyset is not encrypted: %s", v1)
	}
	old := seal(t, read(t, p("pub1.json")), "m-old")
	fresh := seal(t, read(t, p("pub2.json")), "m-new")
	if !opens(t, kms, kek, v2, old, "m-old") || !opens(t, kms, kek, v2, fresh, "m-new") {
		t.Fatal("rotated keyset does not open both the old and the new message")
	}
	if opens(t, kms, kek, v1, fresh, "m-new") {
		t.Fatal("the old keyset opened a key sealed under the new primary")
	}

	list := keys("list", "-in", p("v2.json"))
	if n := strings.Count(list, "ENABLED"); n != 2 || strings.Count(list, "primary") != 1 {
		t.Fatalf("list = %q, want two enabled keys, one primary", list)
	}
	var oldID string
	for _, line := range strings.Split(strings.TrimSpace(list), "\n") {
		if !strings.HasSuffix(line, "primary") {
			oldID = strings.Fields(line)[0]
		}
	}
	keys("retire", "-in", p("v2.json"), "-key-id", oldID, "-out", p("v3.json"))
	v3 := read(t, p("v3.json"))
	if opens(t, kms, kek, v3, old, "m-old") || !opens(t, kms, kek, v3, fresh, "m-new") {
		t.Fatal("after retiring the old key: want only the new message to open")
	}
	if pub := keys("public", "-in", p("v3.json")); !strings.Contains(pub, "primaryKeyId") || strings.Contains(pub, "ASYMMETRIC_PRIVATE") {
		t.Fatalf("public = %q", pub)
	}

	// Another KMS key cannot read the keyset.
	other, _ := fakekms.NewKeyURI()
	if err := run(ctx, []string{"list", "-in", p("v2.json"), "-kek", other}, nil, &bytes.Buffer{}, kms); err == nil {
		t.Fatal("list with another KMS key succeeded")
	}
}

func read(t *testing.T, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.TrimSpace(b)
}

const testAccount = "2c26b46b68ffc68ff99b453c1d30413413422d706483bfa0f98a5e886266e7ae"

func seal(t *testing.T, public []byte, messageID string) []byte {
	t.Helper()
	h, err := keyseal.ReadPublic(public)
	if err != nil {
		t.Fatal(err)
	}
	s, err := keyseal.NewSealer(h, keyseal.SealerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := s.Seal("sd-key", testAccount, messageID)
	if err != nil {
		t.Fatal(err)
	}
	return b
}

func opens(t *testing.T, kms registry.KMSClient, kek string, encrypted, sealed []byte, messageID string) bool {
	t.Helper()
	a, err := kms.GetAEAD(kek)
	if err != nil {
		t.Fatal(err)
	}
	h, err := keyseal.ReadPrivate(encrypted, a)
	if err != nil {
		t.Fatal(err)
	}
	o, err := keyseal.NewOpener(h)
	if err != nil {
		t.Fatal(err)
	}
	got, err := o.Open(sealed, testAccount, messageID)
	return err == nil && got == "sd-key"
}
