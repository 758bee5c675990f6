package startdeliver

import (
	"encoding/json"
	"fmt"
	"strconv"
	"time"
)

// Kind names a Startdeliver entity that the client finds, creates and updates.
type Kind string

// The entity kinds deliver writes.
const (
	KindUser     Kind = "user"
	KindCustomer Kind = "customer"
)

func (k Kind) valid() bool { return k == KindUser || k == KindCustomer }

// Entity is a user or customer as Startdeliver answers it: top-level fields
// keyed by name or custom field alias. Numbers decode as json.Number so that
// ids and values keep their exact text.
type Entity map[string]any

// ID returns the entity's numeric id, or 0 and false when it has none.
func (e Entity) ID() (int64, bool) { return toID(e["id"]) }

// Fields are the fields to write on an entity, keyed by name or custom field
// alias. A user's "customer" holds the customer's id.
type Fields map[string]any

// Match selects one entity by a field: a custom field alias or "email", and
// the value it must hold.
type Match struct {
	Field string
	Value any
}

// Usage types Startdeliver accepts on a usage record.
const (
	UsageTrack = "track"
	UsagePage  = "page"
)

// Usage is one usage record: what a track, page or screen event becomes.
type Usage struct {
	// User is the Startdeliver user's id (required).
	User int64
	// Customer is the customer's id; 0 leaves it out.
	Customer int64
	// Type is UsageTrack or UsagePage.
	Type string
	// Name is the event or page name.
	Name string
	// Timestamp is when the event happened; sent as RFC 3339.
	Timestamp time.Time
	// Properties are the event's properties; nil sends an empty object.
	Properties map[string]any
	// ExternalID is the Segment messageId.
	ExternalID string
}

// body is the one place that knows the (publicly undocumented) shape of a
// usage record: change it here and nowhere else.
func (u Usage) body() map[string]any {
	props := u.Properties
	if props == nil {
		props = map[string]any{}
	}
	b := map[string]any{
		"user":       u.User,
		"type":       u.Type,
		"name":       u.Name,
		"timestamp":  u.Timestamp.UTC().Format(time.RFC3339Nano),
		"properties": props,
		"externalId": u.ExternalID,
	}
	if u.Customer != 0 {
		b["customer"] = u.Customer
	}
	return b
}

func (u Usage) validate() error {
	switch {
	case u.User == 0:
		return fmt.Errorf("usage record: no user id")
	case u.Type != UsageTrack && u.Type != UsagePage:
		return fmt.Errorf("usage record: type %q is not %q or %q", u.Type, UsageTrack, UsagePage)
	case u.Name == "":
		return fmt.Errorf("usage record: no name")
	case u.Timestamp.IsZero():
		return fmt.Errorf("usage record: no timestamp")
	}
	return nil
}

// toID reads an id that Startdeliver sends as a JSON number (or, leniently, a
// numeric string).
func toID(v any) (int64, bool) {
	switch t := v.(type) {
	case json.Number:
		i, err := t.Int64()
		return i, err == nil && i != 0
	case float64:
		return int64(t), t != 0 && t == float64(int64(t))
	case int64:
		return t, t != 0
	case int:
		return int64(t), t != 0
	case string:
		i, err := strconv.ParseInt(t, 10, 64)
		return i, err == nil && i != 0
	}
	return 0, false
}
