// Package envelope is the one encoding of an event on the Pub/Sub topic
// between ingest and deliver: the message body, its attributes and its
// ordering key. Both services use Encode and Decode and nothing else.
//
// The body carries everything deliver needs: the event as received, the
// account, the per-event settings from Segment's header, the receive time,
// the trace context and the Startdeliver API key, sealed for deliver alone
// (package keyseal): nobody who reads the topic, a subscription, a snapshot
// or the dead-letter topic can read the key. Attributes (which Pub/Sub shows
// in consoles, logs and dead-letter inspection) hold only the event type,
// the account id (the key's SHA-256) and the messageId.
//
// Versions: 2 (written by Encode when the key is sealed) carries
// "sealedKey" and no key; 1, the previous version, carried the key in plain
// text as "apiKey". Decode reads both, so that version-1 messages still on
// the topic or the dead-letter topic after an upgrade are delivered;
// version 1 can be dropped once no such message can remain (topic and
// dead-letter retention after the last ingest that wrote it stopped).
package envelope

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	json "github.com/segmentio/encoding/json"
	"strconv"
	"time"

	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/failure"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// Version is the body format written by Encode for a sealed key. Decode
// accepts it and every earlier version still in flight.
const Version = 2

// versionPlainKey is the previous format, with the key in plain text.
const versionPlainKey = 1

// Attribute names on every message.
const (
	AttrVersion   = "v"
	AttrType      = "type"
	AttrAccountID = "accountId"
	AttrMessageID = "messageId"
)

// Attribute names deliver adds to a message it publishes to the dead-letter
// topic (the original attributes stay). Values are valid UTF-8; none holds
// the API key.
const (
	// AttrError is why the event cannot be delivered, at most
	// MaxErrorAttr bytes.
	AttrError = "error"
	// AttrErrorClass names the failure (failure.Class).
	AttrErrorClass = "errorClass"
	// AttrFailedAt is when it was dead-lettered (RFC 3339, UTC).
	AttrFailedAt = "failedAt"
	// AttrSourceMessageID is the Pub/Sub message id it arrived with.
	AttrSourceMessageID = "sourceMessageId"
)

// MaxErrorAttr bounds the AttrError value, in bytes.
const MaxErrorAttr = 1000

// ClassBadMessage is the failure class of a message body Decode cannot read.
const ClassBadMessage = "bad-message"

// maxOrderingKey is Pub/Sub's limit on an ordering key, in bytes.
const maxOrderingKey = 1024

// Message is one event on its way to deliver.
type Message struct {
	// AccountID is the lowercase hex SHA-256 of APIKey.
	AccountID string
	// APIKey is the account's Startdeliver API key in plain text. Encode
	// writes it only when SealedKey is empty (version 1, the previous
	// format; ingest always seals). Decode sets it only for version 1;
	// for version 2 deliver opens SealedKey.
	APIKey string
	// SealedKey is APIKey sealed for deliver (keyseal.Sealer.Seal with
	// AccountID and the event's messageId).
	SealedKey []byte
	// Settings is the request's X-Segment-Settings override (never its API
	// key), or nil when the account's stored settings apply.
	Settings *account.SettingsOverride
	// ReceivedAt is when ingest accepted the event.
	ReceivedAt time.Time
	// Trace is the W3C trace context (traceparent, tracestate) of the
	// request that brought the event.
	Trace map[string]string
	// Event is the event as received, normalised, with messageId and
	// receivedAt set.
	Event *segment.Event
}

// body is the JSON shape of a message body.
type body struct {
	V          int                       `json:"v"`
	AccountID  string                    `json:"accountId"`
	APIKey     string                    `json:"apiKey,omitempty"`
	SealedKey  []byte                    `json:"sealedKey,omitempty"`
	Settings   *account.SettingsOverride `json:"settings,omitempty"`
	ReceivedAt time.Time                 `json:"receivedAt"`
	Trace      map[string]string         `json:"trace,omitempty"`
	Event      json.RawMessage           `json:"event"`
}

// AccountID returns the account id of an API key: the lowercase hex SHA-256
// of the key, which is also the account's Firestore document id.
func AccountID(apiKey string) string {
	sum := sha256.Sum256([]byte(apiKey))
	var id [2 * sha256.Size]byte
	hex.Encode(id[:], sum[:])
	return string(id[:])
}

// Encoded is a message ready to publish.
type Encoded struct {
	Data        []byte
	Attributes  map[string]string
	OrderingKey string
}

// Encode builds the Pub/Sub message for m.
func Encode(m *Message) (*Encoded, error) {
	if m.Event == nil {
		return nil, errors.New("encode envelope: no event")
	}
	if m.AccountID == "" || m.APIKey == "" && len(m.SealedKey) == 0 {
		return nil, errors.New("encode envelope: no account")
	}
	data, err := appendBody(make([]byte, 0, max(2048, m.Event.SizeHint()+1024)), m)
	if err != nil {
		return nil, fmt.Errorf("encode envelope %s: %w", m.Event.MessageID, err)
	}
	return &Encoded{
		Data: data,
		Attributes: map[string]string{
			AttrVersion:   strconv.Itoa(version(m)),
			AttrType:      string(m.Event.Type),
			AttrAccountID: m.AccountID,
			AttrMessageID: m.Event.MessageID,
		},
		OrderingKey: OrderingKey(m.AccountID, m.Event.PersonKey()),
	}, nil
}

// version is the body format m is written in.
func version(m *Message) int {
	if len(m.SealedKey) > 0 {
		return Version
	}
	return versionPlainKey
}

// appendBody writes the body's JSON by hand, with the event, the bulk of
// every message, encoded once straight into it: keys in map order (nothing
// reads the body by position), no HTML escaping. This is on ingest's
// per-event path.
func appendBody(b []byte, m *Message) ([]byte, error) {
	var err error
	field := func(name string, v any) {
		if err != nil {
			return
		}
		b = append(b, ',', '"')
		b = append(b, name...)
		b = append(b, '"', ':')
		b, err = json.Append(b, v, 0)
	}
	b = append(b, `{"v":`...)
	b = strconv.AppendInt(b, int64(version(m)), 10)
	field("accountId", m.AccountID)
	if len(m.SealedKey) > 0 {
		field("sealedKey", m.SealedKey) // base64; never the plain key
	} else {
		field("apiKey", m.APIKey)
	}
	if m.Settings != nil && !m.Settings.IsZero() {
		field("settings", m.Settings)
	}
	field("receivedAt", m.ReceivedAt.UTC())
	if len(m.Trace) > 0 {
		field("trace", m.Trace)
	}
	if err != nil {
		return nil, err
	}
	b = append(b, `,"event":`...)
	if b, err = m.Event.AppendJSON(b); err != nil {
		return nil, fmt.Errorf("event: %w", err)
	}
	return append(b, '}'), nil
}

// OrderingKey keeps the events of one person of one account in order. It is
// the account id and the person's id, with the person hashed when the key
// would pass Pub/Sub's limit.
func OrderingKey(accountID, person string) string {
	k := accountID + ":" + person
	if len(k) <= maxOrderingKey {
		return k
	}
	sum := sha256.Sum256([]byte(person))
	return accountID + ":#" + hex.EncodeToString(sum[:])
}

// DecodeError is a message body that cannot be read. It can never succeed:
// Decode returns it marked permanent (failure.IsPermanent) with class
// ClassBadMessage.
type DecodeError struct {
	Err error
}

func (e *DecodeError) Error() string { return "decode envelope: " + e.Err.Error() }
func (e *DecodeError) Unwrap() error { return e.Err }

// MaxBodyBytes bounds a message body Decode reads: an event is at most
// segment.MaxEventBytes as published, and the rest of the body is small;
// the margin leaves room for a growing body format.
const MaxBodyBytes = 1 << 20

// Decode reads a message body written by Encode. Its errors are permanent
// *DecodeErrors. Before decoding it bounds the body as ingest bounds a
// request (segment.Scanner: size, nesting, one linear pass), so that a
// hostile message costs deliver no more than reading it; its errors never
// quote the body.
func Decode(data []byte) (*Message, error) {
	m, err := decode(data)
	if err != nil {
		return nil, failure.Permanent(ClassBadMessage, err)
	}
	return m, nil
}

func decode(data []byte) (*Message, error) {
	if len(data) > MaxBodyBytes {
		return nil, &DecodeError{Err: fmt.Errorf("body of %d bytes; at most %d", len(data), MaxBodyBytes)}
	}
	sc := &segment.Scanner{Depth: segment.MaxDepth + 1} // the event is one level down
	if err := sc.End(data); err != nil {
		return nil, &DecodeError{Err: err}
	}
	var b body
	if err := json.Unmarshal(data, &b); err != nil {
		// The decoder's messages may quote the body, which holds the key.
		return nil, &DecodeError{Err: errors.New("not an envelope: a field has the wrong type")}
	}
	if b.V < 1 || b.V > Version {
		return nil, &DecodeError{Err: fmt.Errorf("unsupported version %d", b.V)}
	}
	switch b.V {
	case versionPlainKey:
		if b.APIKey == "" {
			return nil, &DecodeError{Err: errors.New("no API key")}
		}
		if got := AccountID(b.APIKey); b.AccountID != got {
			return nil, &DecodeError{Err: errors.New("account id does not match the API key")}
		}
	default:
		if b.APIKey != "" {
			return nil, &DecodeError{Err: fmt.Errorf("version %d carries no plain API key", b.V)}
		}
		if len(b.SealedKey) == 0 {
			return nil, &DecodeError{Err: errors.New("no sealed API key")}
		}
		if !isAccountID(b.AccountID) {
			return nil, &DecodeError{Err: errors.New("account id is not a SHA-256 in hex")}
		}
	}
	if len(b.Event) == 0 {
		return nil, &DecodeError{Err: errors.New("no event")}
	}
	ev, err := segment.Decode(b.Event)
	if err != nil {
		return nil, &DecodeError{Err: fmt.Errorf("event: %w", err)}
	}
	if b.Settings != nil && b.Settings.IsZero() {
		b.Settings = nil
	}
	return &Message{
		AccountID:  b.AccountID,
		APIKey:     b.APIKey,
		SealedKey:  b.SealedKey,
		Settings:   b.Settings,
		ReceivedAt: b.ReceivedAt,
		Trace:      b.Trace,
		Event:      ev,
	}, nil
}

// isAccountID reports whether s is a lowercase hex SHA-256.
func isAccountID(s string) bool {
	if len(s) != 2*sha256.Size {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return false
		}
	}
	return true
}
