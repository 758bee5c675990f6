package keyseal

import (
	"bytes"
	"errors"
	"strings"
	"testing"
	"time"

	"github.com/tink-crypto/tink-go/v2/hybrid"
	"github.com/tink-crypto/tink-go/v2/keyset"
	"github.com/tink-crypto/tink-go/v2/testing/fakekms"
	"github.com/tink-crypto/tink-go/v2/tink"
)

const (
	testKey     = "sd-live-0123456789abcdef"
	testAccount = "6b86b273ff34fce19d6b804eff5a3f5747ada4eaa22f1d49c01e52ddb7875b4b"
	testMessage = "msg-1"
)

func newKeys(t testing.TB) (priv, pub *keyset.Handle) {
	t.Helper()
	priv, err := NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	pub, err = priv.Public()
	if err != nil {
		t.Fatal(err)
	}
	return priv, pub
}

func newPair(t testing.TB, priv, pub *keyset.Handle) (*Sealer, *Opener) {
	t.Helper()
	s, err := NewSealer(pub, SealerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, o
}

func TestSealOpen(t *testing.T) {
	priv, pub := newKeys(t)
	s, o := newPair(t, priv, pub)
	sealed, err := s.Seal(testKey, testAccount, testMessage)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(sealed, []byte(testKey)) {
		t.Fatal("sealed key contains the key")
	}
	got, err := o.Open(sealed, testAccount, testMessage)
	if err != nil || got != testKey {
		t.Fatalf("Open = %q, %v; want %q", got, err, testKey)
	}
	// A second seal reuses the data key and still opens (from the cache).
	sealed2, err := s.Seal(testKey, testAccount, "msg-2")
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(sealed, sealed2) {
		t.Fatal("two seals are equal")
	}
	if got, err := o.Open(sealed2, testAccount, "msg-2"); err != nil || got != testKey {
		t.Fatalf("Open(second) = %q, %v", got, err)
	}
}

// TestMoved: a sealed key moved to another message or account, or altered,
// does not open, and the error is ErrOpen without the key.
func TestMoved(t *testing.T) {
	priv, pub := newKeys(t)
	s, o := newPair(t, priv, pub)
	sealed, err := s.Seal(testKey, testAccount, testMessage)
	if err != nil {
		t.Fatal(err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	wrapFlipped := bytes.Clone(sealed)
	wrapFlipped[10] ^= 1
	for _, tc := range []struct {
		name               string
		sealed             []byte
		account, messageID string
	}{
		{"other message", sealed, testAccount, "msg-2"},
		{"other account", sealed, strings.Repeat("a", 64), testMessage},
		{"ids run together", sealed, testAccount + "m", "sg-1"},
		{"altered ciphertext", flipped, testAccount, testMessage},
		{"altered data key", wrapFlipped, testAccount, testMessage},
		{"truncated", sealed[:20], testAccount, testMessage},
		{"empty", nil, testAccount, testMessage},
		{"unknown format", append([]byte{2}, sealed[1:]...), testAccount, testMessage},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := o.Open(tc.sealed, tc.account, tc.messageID)
			if !errors.Is(err, ErrOpen) {
				t.Fatalf("Open = %q, %v; want ErrOpen", got, err)
			}
			if strings.Contains(err.Error(), testKey) {
				t.Fatalf("error %q holds the key", err)
			}
		})
	}
}

// TestSealerCannotOpen: the sealing side holds only public key material and
// has nothing that opens.
func TestSealerCannotOpen(t *testing.T) {
	priv, pub := newKeys(t)
	if _, err := NewSealer(priv, SealerOptions{}); err == nil {
		t.Fatal("NewSealer(private keyset) succeeded; want refusal")
	}
	if _, err := NewOpener(pub); err == nil {
		t.Fatal("NewOpener(public keyset) succeeded")
	}
	if _, err := hybrid.NewHybridDecrypt(pub); err == nil {
		t.Fatal("hybrid decrypt from the public keyset succeeded")
	}
	data, err := WritePublic(priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPublic(data); err != nil {
		t.Fatalf("ReadPublic(public) = %v", err)
	}
	clear, err := writeCleartextPrivate(priv)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ReadPublic(clear); err == nil {
		t.Fatal("ReadPublic(private keyset) succeeded; want refusal")
	}
}

// TestRotation: after a rotation, keys sealed under the old primary still
// open, new seals use the new primary (which the old keyset cannot open),
// and retiring the old key ends the old ciphertexts.
func TestRotation(t *testing.T) {
	priv, pub := newKeys(t)
	oldSealer, oldOpener := newPair(t, priv, pub)
	old, err := oldSealer.Seal(testKey, testAccount, testMessage)
	if err != nil {
		t.Fatal(err)
	}
	oldID := priv.KeysetInfo().GetPrimaryKeyId()
	rotated, newID, err := Rotate(priv)
	if err != nil {
		t.Fatal(err)
	}
	if newID == oldID || rotated.KeysetInfo().GetPrimaryKeyId() != newID || rotated.Len() != 2 {
		t.Fatalf("rotated keyset: %v", rotated.KeysetInfo())
	}
	rotatedPub, err := rotated.Public()
	if err != nil {
		t.Fatal(err)
	}
	newSealer, newOpener := newPair(t, rotated, rotatedPub)
	if got, err := newOpener.Open(old, testAccount, testMessage); err != nil || got != testKey {
		t.Fatalf("Open(old message, rotated keyset) = %q, %v", got, err)
	}
	fresh, err := newSealer.Seal(testKey, testAccount, "msg-2")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := oldOpener.Open(fresh, testAccount, "msg-2"); !errors.Is(err, ErrOpen) {
		t.Fatalf("old keyset opened a key sealed under the new primary: %v", err)
	}
	if _, err := Retire(rotated, newID); err == nil {
		t.Fatal("Retire(primary) succeeded")
	}
	retired, err := Retire(rotated, oldID)
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener(retired)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := o.Open(old, testAccount, testMessage); !errors.Is(err, ErrOpen) {
		t.Fatalf("Open(old message) after retiring its key = %v, want ErrOpen", err)
	}
	if got, err := o.Open(fresh, testAccount, "msg-2"); err != nil || got != testKey {
		t.Fatalf("Open(new message) after retiring the old key = %q, %v", got, err)
	}
}

// TestDataKeyRotation: the Sealer draws a new data key after its lifetime
// and after its uses.
func TestDataKeyRotation(t *testing.T) {
	priv, pub := newKeys(t)
	now := time.Unix(1e9, 0)
	s, err := NewSealer(pub, SealerOptions{DataKeyLifetime: time.Minute, DataKeyUses: 3, Now: func() time.Time { return now }})
	if err != nil {
		t.Fatal(err)
	}
	o, err := NewOpener(priv)
	if err != nil {
		t.Fatal(err)
	}
	wrappedOf := func() string {
		t.Helper()
		b, err := s.Seal(testKey, testAccount, testMessage)
		if err != nil {
			t.Fatal(err)
		}
		if got, err := o.Open(b, testAccount, testMessage); err != nil || got != testKey {
			t.Fatalf("Open = %q, %v", got, err)
		}
		n := int(b[1])<<8 | int(b[2])
		return string(b[3 : 3+n])
	}
	a1, a2, a3 := wrappedOf(), wrappedOf(), wrappedOf()
	if a1 != a2 || a2 != a3 {
		t.Fatal("data key changed within its uses")
	}
	b1 := wrappedOf()
	if b1 == a3 {
		t.Fatal("data key kept after DataKeyUses")
	}
	now = now.Add(time.Minute)
	if c1 := wrappedOf(); c1 == b1 {
		t.Fatal("data key kept after DataKeyLifetime")
	}
}

// TestKMSPath: the private keyset encrypted by a KMS key (Tink's fake KMS
// here, Cloud KMS in the cloud) reads back with that key and no other.
func TestKMSPath(t *testing.T) {
	kek := fakeKEK(t)
	priv, pub := newKeys(t)
	data, err := WritePrivate(priv, kek)
	if err != nil {
		t.Fatal(err)
	}
	clear, err := writeCleartextPrivate(priv)
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Contains(data, clear[:40]) || bytes.Contains(data, []byte("privateKey")) {
		t.Fatal("encrypted keyset holds clear key material")
	}
	back, err := ReadPrivate(data, kek)
	if err != nil {
		t.Fatal(err)
	}
	s, _ := newPair(t, priv, pub)
	_, o := newPair(t, back, pub)
	sealed, err := s.Seal(testKey, testAccount, testMessage)
	if err != nil {
		t.Fatal(err)
	}
	if got, err := o.Open(sealed, testAccount, testMessage); err != nil || got != testKey {
		t.Fatalf("Open with the keyset read back = %q, %v", got, err)
	}
	if _, err := ReadPrivate(data, fakeKEK(t)); err == nil {
		t.Fatal("ReadPrivate with another KMS key succeeded")
	}
	if _, err := ReadPrivate(clear, kek); err == nil {
		t.Fatal("ReadPrivate of a clear-text keyset succeeded")
	}
}

// fakeKEK returns a new key of Tink's fake KMS, through its KMS client as
// deliver gets Cloud KMS's.
func fakeKEK(t testing.TB) tink.AEAD {
	t.Helper()
	uri, err := fakekms.NewKeyURI()
	if err != nil {
		t.Fatal(err)
	}
	c, err := fakekms.NewClient(uri)
	if err != nil {
		t.Fatal(err)
	}
	a, err := c.GetAEAD(uri)
	if err != nil {
		t.Fatal(err)
	}
	return a
}

// BenchmarkSeal compares sealing by HPKE per message with this package's
// data key (see the package doc).
func BenchmarkSeal(b *testing.B) {
	_, pub := newKeys(b)
	b.Run("hpke-per-message", func(b *testing.B) {
		enc, err := hybrid.NewHybridEncrypt(pub)
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := enc.Encrypt([]byte(testKey), associatedData(testAccount, testMessage)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("data-key", func(b *testing.B) {
		s, err := NewSealer(pub, SealerOptions{})
		if err != nil {
			b.Fatal(err)
		}
		for b.Loop() {
			if _, err := s.Seal(testKey, testAccount, testMessage); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// BenchmarkOpen compares opening by HPKE per message with this package's
// cached data keys.
func BenchmarkOpen(b *testing.B) {
	priv, pub := newKeys(b)
	b.Run("hpke-per-message", func(b *testing.B) {
		enc, _ := hybrid.NewHybridEncrypt(pub)
		dec, err := hybrid.NewHybridDecrypt(priv)
		if err != nil {
			b.Fatal(err)
		}
		ct, _ := enc.Encrypt([]byte(testKey), associatedData(testAccount, testMessage))
		for b.Loop() {
			if _, err := dec.Decrypt(ct, associatedData(testAccount, testMessage)); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("data-key", func(b *testing.B) {
		s, o := newPair(b, priv, pub)
		sealed, _ := s.Seal(testKey, testAccount, testMessage)
		for b.Loop() {
			if _, err := o.Open(sealed, testAccount, testMessage); err != nil {
				b.Fatal(err)
			}
		}
	})
}
