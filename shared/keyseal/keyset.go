package keyseal

import (
	"bytes"
	"errors"
	"fmt"

	"github.com/tink-crypto/tink-go/v2/insecurecleartextkeyset"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// keysetAD is the associated data of a private keyset encrypted by the key
// encryption key (the Cloud KMS key): it ties the encrypted keyset to this
// use of that key.
var keysetAD = []byte("startdeliver-segment-destination/keyseal/private-keyset/v1")

// NewKeyset returns a new private keyset with one HPKE key, its primary.
func NewKeyset() (*keyset.Handle, error) {
	h, err := keyset.NewHandle(Template())
	if err != nil {
		return nil, fmt.Errorf("keyseal: new keyset: %w", err)
	}
	return h, nil
}

// Rotate returns h with a new HPKE key as its primary. Every earlier key
// stays, so what was sealed with it still opens.
func Rotate(h *keyset.Handle) (*keyset.Handle, uint32, error) {
	m := keyset.NewManagerFromHandle(h)
	id, err := m.Add(Template())
	if err != nil {
		return nil, 0, fmt.Errorf("keyseal: add key: %w", err)
	}
	if err := m.SetPrimary(id); err != nil {
		return nil, 0, fmt.Errorf("keyseal: set primary: %w", err)
	}
	out, err := m.Handle()
	if err != nil {
		return nil, 0, fmt.Errorf("keyseal: rotate: %w", err)
	}
	return out, id, nil
}

// Retire returns h without the key id. The primary cannot be retired.
// Retire a key only when no message sealed with it can still be read: after
// the topic's and the dead-letter subscription's retention have passed
// since the rotation that replaced it.
func Retire(h *keyset.Handle, id uint32) (*keyset.Handle, error) {
	if h.KeysetInfo().GetPrimaryKeyId() == id {
		return nil, fmt.Errorf("keyseal: key %d is the primary; rotate first", id)
	}
	m := keyset.NewManagerFromHandle(h)
	if err := m.Delete(id); err != nil {
		return nil, fmt.Errorf("keyseal: retire key %d: %w", id, err)
	}
	return m.Handle()
}

// ReadPublic reads a public keyset in Tink's JSON format. A keyset with
// private key material is refused.
func ReadPublic(data []byte) (*keyset.Handle, error) {
	h, err := keyset.ReadWithNoSecrets(keyset.NewJSONReader(bytes.NewReader(data)))
	if err != nil {
		// Tink refuses a keyset with secrets here; say so without
		// repeating any of its bytes.
		return nil, errors.New("keyseal: not a public keyset (Tink JSON without private key material)")
	}
	return h, nil
}

// WritePublic writes the public keyset of h (private or public) in Tink's
// JSON format.
func WritePublic(h *keyset.Handle) ([]byte, error) {
	pub, err := h.Public()
	if err != nil {
		// h is already public.
		pub = h
	}
	var buf bytes.Buffer
	if err := pub.WriteWithNoSecrets(keyset.NewJSONWriter(&buf)); err != nil {
		return nil, fmt.Errorf("keyseal: write public keyset: %w", err)
	}
	return buf.Bytes(), nil
}

// ReadPrivate reads a private keyset in Tink's JSON format, encrypted by kek
// (in the cloud, the Cloud KMS key; one KMS call).
func ReadPrivate(data []byte, kek tink.AEAD) (*keyset.Handle, error) {
	h, err := keyset.ReadWithAssociatedData(keyset.NewJSONReader(bytes.NewReader(data)), kek, keysetAD)
	if err != nil {
		return nil, fmt.Errorf("keyseal: read encrypted private keyset: %w", err)
	}
	return h, nil
}

// WritePrivate writes a private keyset in Tink's JSON format, encrypted by
// kek.
func WritePrivate(h *keyset.Handle, kek tink.AEAD) ([]byte, error) {
	var buf bytes.Buffer
	if err := h.WriteWithAssociatedData(keyset.NewJSONWriter(&buf), kek, keysetAD); err != nil {
		return nil, fmt.Errorf("keyseal: write encrypted private keyset: %w", err)
	}
	return buf.Bytes(), nil
}

// ReadClearPrivate reads a private keyset in Tink's JSON format that no
// KMS key encrypts. For the emulators and tests only: outside them deliver
// refuses a keyset without its key encryption key.
func ReadClearPrivate(data []byte) (*keyset.Handle, error) {
	return readCleartextPrivate(data)
}

// WriteClearPrivate writes a private keyset in clear text, for the
// emulators and tests only (see ReadClearPrivate).
func WriteClearPrivate(h *keyset.Handle) ([]byte, error) {
	return writeCleartextPrivate(h)
}

// readCleartextPrivate and writeCleartextPrivate are for the development
// keyset on the emulators only, which has no KMS to encrypt it.
func readCleartextPrivate(data []byte) (*keyset.Handle, error) {
	h, err := insecurecleartextkeyset.Read(keyset.NewJSONReader(bytes.NewReader(data)))
	if err != nil {
		return nil, fmt.Errorf("keyseal: read development keyset: %w", err)
	}
	return h, nil
}

func writeCleartextPrivate(h *keyset.Handle) ([]byte, error) {
	var buf bytes.Buffer
	if err := insecurecleartextkeyset.Write(h, keyset.NewJSONWriter(&buf)); err != nil {
		return nil, fmt.Errorf("keyseal: write development keyset: %w", err)
	}
	return buf.Bytes(), nil
}
