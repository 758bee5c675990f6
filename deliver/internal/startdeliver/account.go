package startdeliver

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
)

// Account is the credential of one Startdeliver account, passed with every
// call. It is a value: the client keeps no account registry.
//
// The key is a secret. String, Format (every verb, %#v included) and
// LogValue print only a short hash of it, so an Account can be logged or
// wrapped into an error without leaking the key.
type Account struct {
	// APIKey is the raw Startdeliver API key, sent as the Authorization header.
	APIKey string
	// BaseURL overrides the client's default base URL for this account
	// (the account's startdeliverApiUrl setting). Empty means the default.
	BaseURL string
}

// KeyHash returns the lowercase hex SHA-256 of the API key: the same value
// that names the account's Firestore document, safe to log and to use as a map key.
func (a Account) KeyHash() string {
	sum := sha256.Sum256([]byte(a.APIKey))
	return hex.EncodeToString(sum[:])
}

// ShortKeyHash returns the first 12 hex digits of KeyHash, enough to tell
// accounts apart in logs.
func (a Account) ShortKeyHash() string { return a.KeyHash()[:12] }

// String describes the account by its key hash, never by its key.
func (a Account) String() string {
	if a.BaseURL == "" {
		return "account(" + a.ShortKeyHash() + ")"
	}
	return "account(" + a.ShortKeyHash() + " at " + a.BaseURL + ")"
}

// Format implements fmt.Formatter so that every verb, %#v and %+v included,
// prints the redacted form.
func (a Account) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(a.String())) }

// GoString implements fmt.GoStringer with the redacted form.
func (a Account) GoString() string { return a.String() }

// LogValue implements slog.LogValuer: logs see the key hash and base URL only.
func (a Account) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("key_hash", a.ShortKeyHash())}
	if a.BaseURL != "" {
		attrs = append(attrs, slog.String("base_url", a.BaseURL))
	}
	return slog.GroupValue(attrs...)
}
