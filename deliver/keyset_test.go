package main

import (
	"context"
	"testing"

	"github.com/tink-crypto/tink-go/v2/testing/fakekms"

	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/keyseal"
)

// TestOpenKeysetKMS: deliver's private keyset as the cloud holds it
// (encrypted by a KMS key, here Tink's fake KMS standing in for Cloud KMS)
// opens what the public keyset sealed; with another KMS key, or garbage,
// deliver does not start.
func TestOpenKeysetKMS(t *testing.T) {
	kekURI, err := fakekms.NewKeyURI()
	if err != nil {
		t.Fatal(err)
	}
	kms, err := fakekms.NewClient("fake-kms://")
	if err != nil {
		t.Fatal(err)
	}
	kek, err := kms.GetAEAD(kekURI)
	if err != nil {
		t.Fatal(err)
	}
	h, err := keyseal.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	encrypted, err := keyseal.WritePrivate(h, kek)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := h.Public()
	if err != nil {
		t.Fatal(err)
	}
	sealer, err := keyseal.NewSealer(pub, keyseal.SealerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	key := "sd-kms-key"
	account := envelope.AccountID(key)
	sealed, err := sealer.Seal(key, account, "m-1")
	if err != nil {
		t.Fatal(err)
	}

	cfg := &config{Keyset: string(encrypted), KeysetKEK: kekURI}
	o, err := openKeyset(context.Background(), cfg, nil, kms)
	if err != nil {
		t.Fatalf("openKeyset = %v", err)
	}
	if got, err := o.Open(sealed, account, "m-1"); err != nil || got != key {
		t.Fatalf("Open = %q, %v", got, err)
	}

	otherURI, err := fakekms.NewKeyURI()
	if err != nil {
		t.Fatal(err)
	}
	if _, err := openKeyset(context.Background(), &config{Keyset: string(encrypted), KeysetKEK: otherURI}, nil, kms); err == nil {
		t.Fatal("openKeyset with another KMS key succeeded")
	}
	if _, err := openKeyset(context.Background(), &config{Keyset: `{"garbage":true}`, KeysetKEK: kekURI}, nil, kms); err == nil {
		t.Fatal("openKeyset of garbage succeeded")
	}
}
