package startdeliver

import (
	"fmt"
	"time"

	"github.com/startdeliver/segment-destination/shared/plan"
)

// Kind names a Startdeliver entity that the client finds, creates and updates.
type Kind string

// The entity kinds deliver writes.
const (
	KindUser     Kind = "user"
	KindCustomer Kind = "customer"
)

func (k Kind) valid() bool { return k == KindUser || k == KindCustomer }

// Fields are the fields to write on an entity, keyed by name or custom field
// alias. A user's "customer" holds the customer's id.
type Fields map[string]any

// Usage is one usage record: what a track, page or screen event becomes.
type Usage struct {
	// User is the Startdeliver user's id (required).
	User int64
	// Customer is the customer's id; 0 leaves it out.
	Customer int64
	// Type is plan.UsageTrack or plan.UsagePage.
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
	case u.Type != plan.UsageTrack && u.Type != plan.UsagePage:
		return fmt.Errorf("usage record: type %q is not %q or %q", u.Type, plan.UsageTrack, plan.UsagePage)
	case u.Name == "":
		return fmt.Errorf("usage record: no name")
	case u.Timestamp.IsZero():
		return fmt.Errorf("usage record: no timestamp")
	}
	return nil
}
