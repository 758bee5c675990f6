package startdeliver

import (
	"fmt"
	"log/slog"

	"github.com/startdeliver/segment-destination/shared/envelope"
)

// Account is the credential of one Startdeliver account, passed with every
// call. It is a value: the client keeps no account registry.
//
// The key is a secret. String, Format (every verb, %#v included) and
// LogValue print only the start of the account's id (the key's hash), so an
// Account can be logged or wrapped into an error without leaking the key.
type Account struct {
	// ID is the account's id, envelope.AccountID of the key: it names the
	// account's rate limiter and its log lines. deliver has it from the
	// message; empty means it is computed from the key on each use.
	ID string
	// APIKey is the raw Startdeliver API key, sent as the Authorization header.
	APIKey string
	// BaseURL overrides the client's default base URL for this account
	// (the account's startdeliverApiUrl setting). Empty means the default.
	BaseURL string
}

func (a Account) id() string {
	if a.ID != "" {
		return a.ID
	}
	return envelope.AccountID(a.APIKey)
}

// ShortID returns the first 12 hex digits of the account's id, enough to
// tell accounts apart in logs.
func (a Account) ShortID() string { return a.id()[:12] }

// String describes the account by its id, never by its key.
func (a Account) String() string {
	if a.BaseURL == "" {
		return "account(" + a.ShortID() + ")"
	}
	return "account(" + a.ShortID() + " at " + a.BaseURL + ")"
}

// Format implements fmt.Formatter so that every verb, %#v and %+v included,
// prints the redacted form.
func (a Account) Format(f fmt.State, _ rune) { _, _ = f.Write([]byte(a.String())) }

// GoString implements fmt.GoStringer with the redacted form.
func (a Account) GoString() string { return a.String() }

// LogValue implements slog.LogValuer: logs see the account's short id and
// base URL only.
func (a Account) LogValue() slog.Value {
	attrs := []slog.Attr{slog.String("key_hash", a.ShortID())}
	if a.BaseURL != "" {
		attrs = append(attrs, slog.String("base_url", a.BaseURL))
	}
	return slog.GroupValue(attrs...)
}
