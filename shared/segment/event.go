// Package segment is the Segment event model both services share: decoding
// of everything real Segment traffic contains, the typed view of the fields
// the pipeline acts on, and validation with precise messages.
//
// An Event keeps the caller's whole object, so nothing the caller sent is
// lost on the way through Pub/Sub; the typed fields are a view of it. Decode
// keeps it as a tree (Raw), for deliver and explain, which look values up by
// path; DecodeView and Batch.Event keep it as the bytes it came in, for
// ingest, which only validates, routes and publishes it (view.go).
package segment

import (
	"bytes"
	"errors"
	"fmt"
	"slices"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"

	json "github.com/segmentio/encoding/json"

	"github.com/startdeliver/segment-destination/shared/abbrev"
)

// Type is a Segment call type.
type Type string

// The Segment Spec's call types.
const (
	TypeIdentify Type = "identify"
	TypeTrack    Type = "track"
	TypePage     Type = "page"
	TypeScreen   Type = "screen"
	TypeGroup    Type = "group"
	TypeAlias    Type = "alias"
)

// Known reports whether t is one of the Spec's call types.
func (t Type) Known() bool {
	switch t {
	case TypeIdentify, TypeTrack, TypePage, TypeScreen, TypeGroup, TypeAlias:
		return true
	}
	return false
}

// MaxMessageIDLen is the Spec's limit on messageId.
const MaxMessageIDLen = 100

// Event is one Segment call.
//
// Raw holds the whole object with top-level keys normalised to Segment's
// camelCase spelling and numbers as json.Number. Traits, Properties and
// Context are the same maps as inside Raw, so a change through either is
// seen by both. The typed fields are read from Raw by Decode; SetMessageID
// and SetReceivedAt keep both in step.
//
// An event decoded by DecodeView or Batch.Event (ingest's path) is a view
// of the bytes it arrived in instead: Raw, Traits, Properties and Context
// are nil, the typed fields are read by the same rules, the setters change
// what AppendJSON writes, and what it writes decodes to the Raw that Decode
// and the same setters would have built.
type Event struct {
	Type        Type
	MessageID   string
	UserID      string
	AnonymousID string
	Event       string // track
	Name        string // page, screen
	GroupID     string // group
	PreviousID  string // alias
	WriteKey    string // HTTP Tracking API only; never forwarded

	Timestamp         time.Time // zero when absent
	OriginalTimestamp time.Time
	SentAt            time.Time
	ReceivedAt        time.Time

	Traits     map[string]any
	Properties map[string]any
	Context    map[string]any

	Raw map[string]any

	view *view // instead of Raw, for a view (DecodeView)
}

// keyAliases maps every spelling Segment documents or its libraries send to
// the canonical camelCase key.
var keyAliases = map[string]string{
	"user_id":            "userId",
	"userid":             "userId",
	"anonymous_id":       "anonymousId",
	"anonymousid":        "anonymousId",
	"message_id":         "messageId",
	"messageid":          "messageId",
	"group_id":           "groupId",
	"groupid":            "groupId",
	"previous_id":        "previousId",
	"previousid":         "previousId",
	"original_timestamp": "originalTimestamp",
	"originaltimestamp":  "originalTimestamp",
	"sent_at":            "sentAt",
	"sentat":             "sentAt",
	"received_at":        "receivedAt",
	"receivedat":         "receivedAt",
	"write_key":          "writeKey",
	"writekey":           "writeKey",
	"Type":               "type",
	"Event":              "event",
	"Name":               "name",
	"Traits":             "traits",
	"Properties":         "properties",
	"Context":            "context",
	"Integrations":       "integrations",
	"Timestamp":          "timestamp",
	"Category":           "category",
	"Version":            "version",
	"Channel":            "channel",
}

// canonicalKey returns Segment's camelCase spelling of a top-level key.
func canonicalKey(k string) string {
	if c, ok := keyAliases[k]; ok {
		return c
	}
	if c, ok := keyAliases[strings.ToLower(k)]; ok {
		return c
	}
	return k
}

// SyntaxError is a body that is not a JSON object, or that fails the
// pre-pass (see Scanner): a syntax error, nesting deeper than MaxDepth,
// invalid UTF-8, an overlong number or a duplicate top-level key. Offset is
// the byte of the body where it was found. Msg is written by this package
// alone and never contains bytes of the input, so that a key sent in the
// body cannot come back in an error.
type SyntaxError struct {
	Offset int64
	Msg    string
}

func (e *SyntaxError) Error() string {
	return "invalid JSON at byte " + strconv.FormatInt(e.Offset, 10) + ": " + e.Msg
}

// Decode parses one event object. It fails only when data is not a JSON
// object, fails the pre-pass (see Scanner), or a known field has a type no
// Segment library sends; Validate checks the Spec's rules.
func Decode(data []byte) (*Event, error) {
	m, err := decodeObject(data)
	if err != nil {
		return nil, err
	}
	return FromMap(m)
}

// decodeObject runs the pre-pass over data and then decodes it as a JSON
// object keeping numbers exact, with segmentio's encoding/json-compatible
// decoder (several times faster than the standard library's on the
// map-shaped events ingest decodes per event). The pre-pass bounds the
// nesting that decoder would otherwise rescan level by level.
func decodeObject(data []byte) (map[string]any, error) {
	s, err := Check(data)
	if err != nil {
		return nil, err
	}
	return decodeChecked(data, s)
}

// decodeChecked decodes data that passed the scanner s.
func decodeChecked(data []byte, s *Scanner) (map[string]any, error) {
	if err := topLevelObject(data, s); err != nil {
		return nil, err
	}
	var v any
	if _, err := json.Parse(data, &v, json.UseNumber); err != nil {
		// The pre-pass accepted it, so this is the decoder's limit, not
		// the caller's syntax; its message may quote the input.
		return nil, &SyntaxError{Msg: "cannot be decoded"}
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, &SyntaxError{Msg: "want a JSON object"}
	}
	return m, nil
}

// CheckObject checks that a body the Scanner s accepted is a JSON object
// without duplicate top-level keys, before anything decodes it.
func CheckObject(data []byte, s *Scanner) error { return topLevelObject(data, s) }

// topLevelObject checks that the scanned value is an object without
// duplicate keys: decoders disagree on which of two equal keys wins (ours
// keeps the last), so an event that says userId twice is refused rather
// than read one way here and another way elsewhere.
func topLevelObject(data []byte, s *Scanner) error {
	if err := startsObject(data); err != nil {
		return err
	}
	members := s.Members()
	if i := dupMember(data, members); i >= 0 {
		m := members[i]
		return &SyntaxError{Offset: int64(m.Key.Start), Msg: "duplicate key" + knownName(unquote(data[m.Key.Start:m.Key.End]))}
	}
	return nil
}

// knownName is ` "k"` when k is a field of the Spec, else "": messages name
// fields only from our own vocabulary, never a caller's arbitrary key.
func knownName(k string) string {
	if c := canonicalKey(k); knownFields[c] {
		return " " + strconv.Quote(c)
	}
	return ""
}

// knownFields are the canonical top-level keys of events and batches.
var knownFields = func() map[string]bool {
	m := map[string]bool{"batch": true}
	for _, c := range keyAliases {
		m[c] = true
	}
	return m
}()

// unquote returns the text of a JSON string token that passed the scanner.
func unquote(tok []byte) string {
	if bytes.IndexByte(tok, '\\') < 0 {
		return string(tok[1 : len(tok)-1])
	}
	var s string
	if err := json.Unmarshal(tok, &s); err != nil {
		return string(tok[1 : len(tok)-1])
	}
	return s
}

// kindOf names the JSON type that starts with c.
func kindOf(c byte) string {
	switch c {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

// FieldError is a problem with one field of an event.
type FieldError struct {
	Field string
	Msg   string
}

func (e *FieldError) Error() string { return e.Field + ": " + e.Msg }

// FromMap builds an Event from a decoded JSON object (numbers as
// json.Number or float64). It normalises the top-level keys of m in place
// and takes ownership of it.
//
// When a field comes in several spellings, the canonical camelCase one
// wins, else the alias first in byte order (so USERID before user_id before
// userid); the others are dropped. The rule is fixed so that the same event
// reads the same way every time.
func FromMap(m map[string]any) (*Event, error) {
	var aliases []string
	for k := range m {
		if canonicalKey(k) != k {
			aliases = append(aliases, k)
		}
	}
	if len(aliases) > 0 {
		slices.Sort(aliases)
		for _, k := range aliases {
			c := canonicalKey(k)
			if _, taken := m[c]; !taken {
				m[c] = m[k]
			}
			delete(m, k)
		}
	}
	e := &Event{Raw: m}
	var err error
	str := func(key string, dst *string) {
		if err != nil {
			return
		}
		*dst, err = stringField(m, key)
	}
	var typ string
	str("type", &typ)
	e.Type = Type(strings.ToLower(strings.TrimSpace(typ)))
	if typ != string(e.Type) && e.Type != "" {
		m["type"] = string(e.Type)
	}
	str("messageId", &e.MessageID)
	str("userId", &e.UserID)
	str("anonymousId", &e.AnonymousID)
	str("event", &e.Event)
	str("name", &e.Name)
	str("groupId", &e.GroupID)
	str("previousId", &e.PreviousID)
	str("writeKey", &e.WriteKey)
	if err != nil {
		return nil, err
	}
	for _, f := range []struct {
		key string
		dst *time.Time
	}{
		{"timestamp", &e.Timestamp},
		{"originalTimestamp", &e.OriginalTimestamp},
		{"sentAt", &e.SentAt},
		{"receivedAt", &e.ReceivedAt},
	} {
		if *f.dst, err = timeField(m, f.key); err != nil {
			return nil, err
		}
	}
	for _, f := range []struct {
		key string
		dst *map[string]any
	}{
		{"traits", &e.Traits},
		{"properties", &e.Properties},
		{"context", &e.Context},
		{"integrations", nil},
	} {
		obj, err := objectField(m, f.key)
		if err != nil {
			return nil, err
		}
		if f.dst != nil {
			*f.dst = obj
		}
	}
	if v, ok := m["version"]; ok {
		switch v.(type) {
		case nil, string, json.Number, float64:
		default:
			return nil, &FieldError{Field: "version", Msg: "want a number or a string, got " + abbrev.Kind(v)}
		}
	}
	return e, nil
}

// stringField reads an identifier. Segment libraries send ids as strings,
// but some callers send numbers: those are kept as their decimal text.
func stringField(m map[string]any, key string) (string, error) {
	switch v := m[key].(type) {
	case nil:
		return "", nil
	case string:
		return v, nil
	case json.Number:
		m[key] = v.String()
		return v.String(), nil
	case float64:
		s := json.Number(fmt.Sprint(v)).String()
		m[key] = s
		return s, nil
	default:
		return "", &FieldError{Field: key, Msg: "want a string, got " + abbrev.Kind(v)}
	}
}

// timeField reads an ISO-8601 timestamp; null and "" are absent.
func timeField(m map[string]any, key string) (time.Time, error) {
	switch v := m[key].(type) {
	case nil:
		return time.Time{}, nil
	case string:
		if v == "" {
			return time.Time{}, nil
		}
		t, err := ParseTime(v)
		if err != nil {
			return time.Time{}, &FieldError{Field: key, Msg: err.Error()}
		}
		return t, nil
	default:
		return time.Time{}, &FieldError{Field: key, Msg: "want an ISO-8601 string, got " + abbrev.Kind(v)}
	}
}

// timeLayouts are the ISO-8601 forms Segment libraries send, most common
// first. RFC 3339 parsing accepts any number of fractional digits.
var timeLayouts = []string{
	time.RFC3339Nano,
	"2006-01-02T15:04:05.999999999Z0700",
	"2006-01-02T15:04:05.999999999",
	"2006-01-02 15:04:05.999999999Z07:00",
	"2006-01-02",
}

// ParseTime parses an ISO-8601 timestamp as Segment libraries write it,
// nanoseconds included. A time without a zone is taken as UTC.
func ParseTime(s string) (time.Time, error) {
	for _, layout := range timeLayouts {
		if t, err := time.Parse(layout, s); err == nil {
			return t.UTC(), nil
		}
	}
	return time.Time{}, errors.New("not an ISO-8601 time")
}

func objectField(m map[string]any, key string) (map[string]any, error) {
	switch v := m[key].(type) {
	case nil:
		return nil, nil
	case map[string]any:
		return v, nil
	default:
		return nil, &FieldError{Field: key, Msg: "want an object, got " + abbrev.Kind(v)}
	}
}

// SetMessageID sets the messageId in the typed view and in Raw.
func (e *Event) SetMessageID(id string) {
	e.MessageID = id
	if e.view != nil {
		e.view.set(fMessageID, appendQuoted(nil, id))
		return
	}
	e.Raw["messageId"] = id
}

// SetReceivedAt sets receivedAt in the typed view and in Raw.
func (e *Event) SetReceivedAt(t time.Time) {
	e.ReceivedAt = t.UTC()
	if e.view != nil {
		b := append(make([]byte, 0, len(time.RFC3339Nano)+2), '"')
		b = e.ReceivedAt.AppendFormat(b, time.RFC3339Nano)
		e.view.set(fReceivedAt, append(b, '"'))
		return
	}
	e.Raw["receivedAt"] = e.ReceivedAt.Format(time.RFC3339Nano)
}

// DropWriteKey removes the write key so it never travels further.
func (e *Event) DropWriteKey() {
	e.WriteKey = ""
	if e.view != nil {
		e.view.drop(fWriteKey)
		return
	}
	delete(e.Raw, "writeKey")
}

// Validate checks the Spec's rules for the event's type. It returns a
// *FieldError naming the first field at fault.
func (e *Event) Validate() error {
	if e.Type == "" {
		return &FieldError{Field: "type", Msg: "required"}
	}
	if !e.Type.Known() {
		return &FieldError{Field: "type", Msg: "unknown type (want identify, track, page, screen, group or alias)"}
	}
	if e.UserID == "" && e.AnonymousID == "" {
		return &FieldError{Field: "userId", Msg: "userId or anonymousId is required"}
	}
	if utf8.RuneCountInString(e.MessageID) > MaxMessageIDLen {
		return &FieldError{Field: "messageId", Msg: fmt.Sprintf("longer than %d characters", MaxMessageIDLen)}
	}
	switch e.Type {
	case TypeTrack:
		if e.Event == "" {
			return &FieldError{Field: "event", Msg: "required for a track call"}
		}
	case TypeGroup:
		if e.GroupID == "" {
			return &FieldError{Field: "groupId", Msg: "required for a group call"}
		}
	case TypeAlias:
		if e.PreviousID == "" {
			return &FieldError{Field: "previousId", Msg: "required for an alias call"}
		}
	}
	return nil
}

// Time is the event's own time: timestamp, else originalTimestamp, else
// receivedAt.
func (e *Event) Time() time.Time {
	switch {
	case !e.Timestamp.IsZero():
		return e.Timestamp
	case !e.OriginalTimestamp.IsZero():
		return e.OriginalTimestamp
	}
	return e.ReceivedAt
}

// PersonKey is who the event is about: userId, else anonymousId.
func (e *Event) PersonKey() string {
	if e.UserID != "" {
		return e.UserID
	}
	return e.AnonymousID
}

// MarshalJSON encodes the whole event as received, normalised.
func (e *Event) MarshalJSON() ([]byte, error) {
	if e.view != nil {
		return e.view.appendJSON(make([]byte, 0, e.view.size())), nil
	}
	return json.Marshal(e.Raw)
}

// UnmarshalJSON decodes an event as Decode does.
func (e *Event) UnmarshalJSON(data []byte) error {
	d, err := Decode(data)
	if err != nil {
		return err
	}
	*e = *d
	return nil
}

// DecodeScanned is Decode for data the caller has already run through the
// Scanner s (to the end, without error), so that a body read from the
// network is scanned once.
func DecodeScanned(data []byte, s *Scanner) (*Event, error) {
	m, err := decodeChecked(data, s)
	if err != nil {
		return nil, err
	}
	return FromMap(m)
}

// WriteKey returns the top-level writeKey of a scanned body (any spelling
// Segment uses, chosen as FromMap chooses) without decoding the body: the
// key is read from the member the scanner found. It is "" when absent or
// null, and a *FieldError when it is not a string.
func WriteKey(data []byte, s *Scanner) (string, error) {
	best, bestKey := -1, ""
	for i, m := range s.Members() {
		k := unquote(data[m.Key.Start:m.Key.End])
		if canonicalKey(k) != "writeKey" {
			continue
		}
		if best < 0 || k == "writeKey" || (bestKey != "writeKey" && k < bestKey) {
			best, bestKey = i, k
		}
	}
	if best < 0 {
		return "", nil
	}
	m := s.Members()[best]
	switch m.Kind {
	case '"':
		return unquote(data[m.Value.Start:m.Value.End]), nil
	case 'n':
		return "", nil
	}
	return "", &FieldError{Field: "writeKey", Msg: "want a string"}
}
