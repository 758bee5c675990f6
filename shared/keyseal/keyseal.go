// Package keyseal encrypts a Startdeliver API key for deliver alone: ingest
// seals each event's key with deliver's public keyset, and only deliver,
// which holds the private keyset, can open it. A sealed key is bound to its
// account and message (associated data), so it cannot be moved to another
// message or account.
//
// # Format
//
// Sealing uses Tink's hybrid encryption, HPKE with DHKEM(X25519,
// HKDF-SHA256), HKDF-SHA256 and AES-256-GCM, as envelope encryption: the
// Sealer draws a random 256-bit data key, wraps it once with HPKE for
// deliver's public keyset, and then seals each message's API key with
// AES-256-GCM under that data key, with the account id and the messageId as
// associated data. A sealed key is
//
//	0x01 | uint16 len(wrapped) | wrapped data key (Tink HPKE ciphertext) | AES-GCM nonce, ciphertext and tag
//
// The Opener unwraps a data key once and keeps it (a bounded cache keyed by
// the wrapped bytes), so an event costs one AES-GCM operation on each side.
// A Sealer draws a new data key after DataKeyLifetime or DataKeyUses,
// whichever comes first, far below AES-GCM's limit for random nonces under
// one key (2^32 messages).
//
// # Why envelope encryption, not HPKE per message
//
// HPKE per message costs an X25519 key generation and a Diffie-Hellman on
// ingest and one Diffie-Hellman on deliver for every event. Measured with
// this package's benchmarks (go test -bench . ./keyseal; 2 cores shared with
// other work, load average 5-7 during the run, three runs):
//
//	seal, HPKE per message          226-246 µs/event
//	seal, data key (this package)   0.87-0.90 µs/event
//	open, HPKE per message          221-235 µs/event
//	open, data key (this package)   0.45-0.89 µs/event
//
// deliver spends about 750 µs of CPU per event and ingest less, so HPKE per
// message alone would cost each 30% or more, far over the goal of 10%; the
// data key costs about a microsecond. Measured per service, sealed against
// plain in the same run (BenchmarkSealing in ingest/internal/receive and
// deliver/internal/delivery: process CPU over alternating blocks of 200
// events, three runs each, load average 500-2,000 from other work on the 2
// cores, so the spread is the machine's): ingest 1.037, 1.047 and 1.136
// (57-69 µs of CPU per event plain); deliver 1.014, 1.036 and 1.068
// (330-360 µs plain, the in-process Startdeliver stand-in included). The guarantees are the same: only the
// private keyset unwraps a data key, and the AES-GCM associated data binds
// each sealed key to its account and message as HPKE's context info would.
//
// # Keysets and rotation
//
// A private keyset may hold several HPKE keys: the primary seals, every key
// opens (Tink's ciphertext prefix names the key). Rotation adds a new
// primary and keeps the old keys until no message sealed with them can still
// be read (topic and dead-letter retention), so old messages and replays
// keep opening. No KMS is called per message: the private keyset is
// decrypted with the KMS once, at start.
package keyseal

import (
	"bytes"
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/tink-crypto/tink-go/v2/aead/subtle"
	"github.com/tink-crypto/tink-go/v2/hybrid"
	"github.com/tink-crypto/tink-go/v2/keyset"
	tinkpb "github.com/tink-crypto/tink-go/v2/proto/tink_go_proto"
	"github.com/tink-crypto/tink-go/v2/tink"
)

// formatV1 is the first byte of a sealed key.
const formatV1 = 1

// dataKeySize is the AES-256 key size.
const dataKeySize = 32

// wrapContext is HPKE's context info for a data key: it ties a wrapped data
// key to this use, so no other ciphertext made with the same keyset can be
// taken for one.
var wrapContext = []byte("startdeliver-segment-destination/keyseal/data-key/v1")

// Defaults of a Sealer's data key rotation.
const (
	DefaultDataKeyLifetime = 10 * time.Minute
	DefaultDataKeyUses     = 1 << 20
)

// ErrOpen is the failure to open a sealed key: it was sealed for another
// keyset, for another message or account, or altered. It is permanent:
// trying again cannot succeed.
var ErrOpen = errors.New("sealed API key cannot be opened")

// Template is the key template of every keyset this package makes:
// HPKE DHKEM(X25519, HKDF-SHA256), HKDF-SHA256, AES-256-GCM, with Tink's
// key-id prefix so that a rotated keyset finds the key of each ciphertext.
func Template() *tinkpb.KeyTemplate {
	return hybrid.DHKEM_X25519_HKDF_SHA256_HKDF_SHA256_AES_256_GCM_Key_Template()
}

// SealerOptions tune a Sealer. Zero values take the defaults.
type SealerOptions struct {
	// DataKeyLifetime is how long one data key seals (default 10m).
	DataKeyLifetime time.Duration
	// DataKeyUses is how many keys one data key seals at most (default 2^20).
	DataKeyUses int
	// Now is replaced in tests.
	Now func() time.Time
}

// Sealer seals API keys for deliver. It holds only deliver's public keyset
// and cannot open what it seals. Safe for concurrent use.
type Sealer struct {
	enc  tink.HybridEncrypt
	opts SealerOptions

	mu  sync.Mutex
	cur *sealKey
}

// sealKey is a Sealer's current data key.
type sealKey struct {
	aead    tink.AEAD
	wrapped []byte
	expires time.Time
	uses    int
}

// NewSealer returns a Sealer for a public keyset. A keyset that holds
// private key material is refused: the sealing side must not be able to
// open.
func NewSealer(public *keyset.Handle, opts SealerOptions) (*Sealer, error) {
	if err := requirePublic(public); err != nil {
		return nil, err
	}
	enc, err := hybrid.NewHybridEncrypt(public)
	if err != nil {
		return nil, fmt.Errorf("keyseal: hybrid encrypt: %w", err)
	}
	if opts.DataKeyLifetime <= 0 {
		opts.DataKeyLifetime = DefaultDataKeyLifetime
	}
	if opts.DataKeyUses <= 0 {
		opts.DataKeyUses = DefaultDataKeyUses
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	return &Sealer{enc: enc, opts: opts}, nil
}

// Seal encrypts apiKey for the message messageID of account accountID.
func (s *Sealer) Seal(apiKey, accountID, messageID string) ([]byte, error) {
	k, err := s.dataKey()
	if err != nil {
		return nil, err
	}
	ct, err := k.aead.Encrypt([]byte(apiKey), associatedData(accountID, messageID))
	if err != nil {
		return nil, fmt.Errorf("keyseal: seal: %w", err)
	}
	out := make([]byte, 0, 3+len(k.wrapped)+len(ct))
	out = append(out, formatV1)
	out = binary.BigEndian.AppendUint16(out, uint16(len(k.wrapped)))
	out = append(out, k.wrapped...)
	return append(out, ct...), nil
}

// dataKey returns the current data key, drawing a new one when the current
// one has expired or is used up.
func (s *Sealer) dataKey() (*sealKey, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.opts.Now()
	if c := s.cur; c != nil && c.uses < s.opts.DataKeyUses && now.Before(c.expires) {
		c.uses++
		return c, nil
	}
	raw := make([]byte, dataKeySize)
	if _, err := rand.Read(raw); err != nil {
		return nil, fmt.Errorf("keyseal: draw data key: %w", err)
	}
	a, err := subtle.NewAESGCM(raw)
	if err != nil {
		return nil, fmt.Errorf("keyseal: data key: %w", err)
	}
	wrapped, err := s.enc.Encrypt(raw, wrapContext)
	if err != nil {
		return nil, fmt.Errorf("keyseal: wrap data key: %w", err)
	}
	if len(wrapped) > 0xffff {
		return nil, errors.New("keyseal: wrapped data key too long")
	}
	s.cur = &sealKey{aead: a, wrapped: wrapped, expires: now.Add(s.opts.DataKeyLifetime), uses: 1}
	return s.cur, nil
}

// maxCachedDataKeys bounds an Opener's cache. Each ingest instance draws one
// data key per DataKeyLifetime, so this covers hundreds of instances over
// hours; an evicted key is only unwrapped again.
const maxCachedDataKeys = 1024

// Opener opens sealed keys with deliver's private keyset. Safe for
// concurrent use.
type Opener struct {
	dec tink.HybridDecrypt

	mu    sync.Mutex
	cache map[string]tink.AEAD
}

// NewOpener returns an Opener for a private keyset.
func NewOpener(private *keyset.Handle) (*Opener, error) {
	dec, err := hybrid.NewHybridDecrypt(private)
	if err != nil {
		return nil, fmt.Errorf("keyseal: hybrid decrypt: %w", err)
	}
	return &Opener{dec: dec, cache: make(map[string]tink.AEAD)}, nil
}

// Open decrypts a key sealed for the message messageID of account
// accountID. Every failure matches ErrOpen and is permanent.
func (o *Opener) Open(sealed []byte, accountID, messageID string) (string, error) {
	if len(sealed) < 3 || sealed[0] != formatV1 {
		return "", fmt.Errorf("%w: unknown format", ErrOpen)
	}
	n := int(binary.BigEndian.Uint16(sealed[1:3]))
	if len(sealed) < 3+n {
		return "", fmt.Errorf("%w: truncated", ErrOpen)
	}
	wrapped, ct := sealed[3:3+n], sealed[3+n:]
	a, err := o.dataKey(wrapped)
	if err != nil {
		return "", err
	}
	pt, err := a.Decrypt(ct, associatedData(accountID, messageID))
	if err != nil {
		// Tink's error says nothing of the plaintext; keep it out anyway
		// and say what the caller can act on.
		return "", fmt.Errorf("%w: not sealed for this account and message", ErrOpen)
	}
	return string(pt), nil
}

// dataKey unwraps a data key, or returns it from the cache. Only keys that
// unwrapped are cached, so garbage cannot fill the cache.
func (o *Opener) dataKey(wrapped []byte) (tink.AEAD, error) {
	o.mu.Lock()
	a, ok := o.cache[string(wrapped)]
	o.mu.Unlock()
	if ok {
		return a, nil
	}
	raw, err := o.dec.Decrypt(wrapped, wrapContext)
	if err != nil {
		return nil, fmt.Errorf("%w: data key not sealed for this keyset", ErrOpen)
	}
	a, err = subtle.NewAESGCM(raw)
	if err != nil {
		return nil, fmt.Errorf("%w: data key: %v", ErrOpen, err)
	}
	o.mu.Lock()
	if len(o.cache) >= maxCachedDataKeys {
		// Evict one at random (map order): a miss costs one unwrap.
		for k := range o.cache {
			delete(o.cache, k)
			break
		}
	}
	o.cache[string(wrapped)] = a
	o.mu.Unlock()
	return a, nil
}

// associatedData binds a sealed key to its account and message, each
// length-prefixed so that no two pairs encode alike.
func associatedData(accountID, messageID string) []byte {
	b := make([]byte, 0, 32+len(accountID)+len(messageID))
	b = append(b, "keyseal/v1"...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(accountID)))
	b = append(b, accountID...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(messageID)))
	return append(b, messageID...)
}

// requirePublic refuses a handle that holds secret key material.
func requirePublic(h *keyset.Handle) error {
	if h == nil {
		return errors.New("keyseal: no keyset")
	}
	var buf bytes.Buffer
	if err := h.WriteWithNoSecrets(keyset.NewBinaryWriter(&buf)); err != nil {
		return errors.New("keyseal: the keyset holds private key material; the sealing side takes the public keyset only")
	}
	return nil
}
