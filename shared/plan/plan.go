// Package plan decides, for one Segment event and one account's
// configuration, exactly what deliver must do in Startdeliver (docs/api.md §2
// and §3): which user and customer to find and by what filter, which fields
// to set when creating them and when they exist, whether to link them, and
// the usage record to write. It does no I/O: the caller carries the plan
// out.
//
// Decisions, beyond the letter of docs/api.md:
//   - A JSON null is no value, as is an empty string where a value is
//     matched on. A value to match on must be a string, number or boolean
//     (booleans become "true"/"false"); objects and arrays are no value.
//   - identify: the user is matched by segmentApp.externalMatchingField and
//     the customer (when startdeliverCustomerField is configured) by
//     externalCustomerField, both evaluated on the event. With neither
//     value the event fails permanently; with one, only that entity is
//     planned.
//   - group: the customer value is externalCustomerField on the group event,
//     else groupId; the user is matched as for identify but gets no mapped
//     fields (a group call's traits describe the group). An account without
//     startdeliverCustomerField skips group calls.
//   - A mapping whose value cannot convert to its type is left out and
//     recorded in Plan.Dropped; so is a match value that cannot convert,
//     which then counts as no value.
//   - A mapping of the match field itself never changes the match value.
//   - page and screen names: name, else properties.name, else the path of
//     properties.path or properties.url, else of context.page.path or
//     context.page.url, else "page" or "screen".
package plan

import (
	"encoding/json"
	"errors"
	"fmt"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/startdeliver/segment-destination/shared/abbrev"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/failure"
	"github.com/startdeliver/segment-destination/shared/fieldpath"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// Plan is what deliver must do in Startdeliver for one event. Either Skip
// is set and nothing else, or at least one of User and Customer is set.
type Plan struct {
	// Skip, when not empty, says why the event has no effect; it is
	// acknowledged and counted as skipped.
	Skip string `json:"skip,omitempty"`
	// SkipClass names a skip that metrics and the event's record count
	// apart: ClassAnonymous. Empty for skips by design (alias, identify
	// without segmentApp).
	SkipClass string `json:"skipClass,omitempty"`
	// User is the user to find, and create when absent.
	User *Upsert `json:"user,omitempty"`
	// Customer is the customer to find, and create when absent.
	Customer *Upsert `json:"customer,omitempty"`
	// Link sets the user's "customer" field to the customer's id. It is
	// true only when both User and Customer are set.
	Link bool `json:"link,omitempty"`
	// Usage is the usage record to write for the user (track, page,
	// screen).
	Usage *Usage `json:"usage,omitempty"`
	// Dropped lists values left out because they could not convert.
	Dropped []Issue `json:"dropped,omitempty"`
}

// Upsert is a planned step on a Startdeliver user or customer: find it by
// Match, then update it with Update when it exists or create it with Create
// when it does not. (An entity as Startdeliver answers it is
// lookup.Entity.)
type Upsert struct {
	// Match is the search filter.
	Match Match `json:"match"`
	// Create holds the fields of a new entity, the match field included.
	Create map[string]any `json:"create"`
	// Update holds the fields to set on an existing entity; nil when there
	// is nothing to change. The caller may leave out fields whose value is
	// already the same.
	Update map[string]any `json:"update,omitempty"`
}

// Match is a filter on one field: {"filter":{Field: Value}}. It is the one
// match type: deliver's Startdeliver client finds by it.
type Match struct {
	// Field is a custom field alias, a standard field name, or "email".
	Field string `json:"field"`
	// Value is a string, json.Number or bool.
	Value any `json:"value"`
}

// Usage types of docs/api.md §2.
const (
	UsageTrack = "track"
	UsagePage  = "page"
)

// Usage is the usage record of a track, page or screen event.
type Usage struct {
	// Type is UsageTrack or UsagePage.
	Type string `json:"type"`
	// Name is the track event's name or the page or screen name.
	Name string `json:"name"`
	// Timestamp is the event's timestamp, else originalTimestamp, else
	// receivedAt; zero when the event has none (the caller then uses the
	// time it received the event).
	Timestamp time.Time `json:"timestamp"`
	// Properties are the event's properties, shared with the event (do not
	// modify); nil when it has none.
	Properties map[string]any `json:"properties,omitempty"`
	// ExternalID is the event's messageId, which makes the record
	// idempotent.
	ExternalID string `json:"externalId"`
}

// Issue records a value left out of a plan.
type Issue struct {
	// Entity is "user" or "customer".
	Entity string `json:"entity"`
	// Field is the Startdeliver field that was not set.
	Field string `json:"field"`
	// Reason says why, without the value itself.
	Reason string `json:"reason"`
}

// Error classes, suitable for the dead-letter errorClass attribute.
const (
	// ClassNoMatchValue: the event carries no value to match a user or
	// customer on.
	ClassNoMatchValue = "no-match-value"
	// ClassConfig: the account's settings cannot apply (an empty custom
	// field alias, a malformed override path from the header).
	ClassConfig = "config"
	// ClassEvent: the event itself cannot be planned (unknown type,
	// missing track name).
	ClassEvent = "invalid-event"
	// ClassAnonymous (a SkipClass, not an error): the event has neither a
	// userId nor any other value to match on. It can never match, so it is
	// skipped rather than dead-lettered (docs/api.md §2).
	ClassAnonymous = "anonymous"
)

// Error is why an event cannot be planned. Every error Decide returns holds
// an *Error, and every one is permanent (failure.IsPermanent, with Class as
// its class): the same event with the same settings fails the same way, so
// it must be dead-lettered, not retried.
type Error struct {
	// Class is one of the Class constants.
	Class string `json:"class"`
	// Reason explains the failure; it holds no secret and no event value.
	Reason string `json:"reason"`
}

func (e *Error) Error() string { return "plan event: " + e.Reason }

func errorf(class, format string, args ...any) error {
	return failure.Permanent(class, &Error{Class: class, Reason: fmt.Sprintf(format, args...)})
}

// errAnonymous is an event with nothing at all to match on; decideUsage
// and decideApp turn it into a skip.
var errAnonymous = errors.New("anonymous")

// anonymous is the plan of an event with nothing to match on.
func anonymous(ev *segment.Event) *Plan {
	return &Plan{Skip: fmt.Sprintf("anonymous %s: no userId and no other value to match on", ev.Type), SkipClass: ClassAnonymous}
}

// emailPath finds the email at the root, else traits.email, else
// context.traits.email, through the field path root fallback.
var emailPath = fieldpath.MustParse("email")

// Decide plans one event. s is the account's stored settings with the
// event's X-Segment-Settings header applied (account.Settings.With); c is
// the compiled account (nil is treated as segmentApp disabled).
//
// It returns a Plan, or a permanent error holding an *Error. Decide only
// reads ev and c and is safe for concurrent use.
func Decide(ev *segment.Event, s account.Settings, c *account.Compiled) (*Plan, error) {
	if ev == nil {
		return nil, errorf(ClassEvent, "no event")
	}
	switch ev.Type {
	case segment.TypeTrack:
		if ev.Event == "" {
			return nil, errorf(ClassEvent, "track call without an event name")
		}
		return decideUsage(ev, s, c, UsageTrack, ev.Event)
	case segment.TypePage, segment.TypeScreen:
		return decideUsage(ev, s, c, UsagePage, pageName(ev))
	case segment.TypeIdentify, segment.TypeGroup:
		return decideApp(ev, c)
	case segment.TypeAlias:
		return &Plan{Skip: "alias calls have no effect in Startdeliver"}, nil
	}
	return nil, errorf(ClassEvent, "unsupported event type %q", abbrev.String(string(ev.Type), 40))
}

// decideUsage plans a track, page or screen event (docs/api.md §3).
func decideUsage(ev *segment.Event, s account.Settings, c *account.Compiled, typ, name string) (*Plan, error) {
	field := strings.TrimSpace(s.StartdeliverUserCustomFieldToMatchOn)
	if field == "" {
		return nil, errorf(ClassConfig, "settings.startdeliverUserCustomFieldToMatchOn is empty")
	}
	email, hasEmail := emailOf(ev)
	user := &Upsert{Create: make(map[string]any, 2)}

	if s.SyncUsingEmailInsteadOfCustomField && hasEmail {
		user.Match = Match{Field: "email", Value: email}
		user.Create["email"] = email
		if ev.UserID != "" {
			user.Create[field] = ev.UserID
		}
	} else {
		v, err := customValue(ev, s, c)
		if errors.Is(err, errAnonymous) {
			return anonymous(ev), nil
		}
		if err != nil {
			return nil, err
		}
		user.Match = Match{Field: field, Value: v}
		user.Create[field] = v
		if hasEmail {
			user.Create["email"] = email
		}
	}
	return &Plan{
		User: user,
		Usage: &Usage{
			Type:       typ,
			Name:       name,
			Timestamp:  ev.Time(),
			Properties: ev.Properties,
			ExternalID: ev.MessageID,
		},
	}, nil
}

// customValue is the value matched against the custom field: the override
// path's value, else (with allowUserIdFallback) userId; or userId.
func customValue(ev *segment.Event, s account.Settings, c *account.Compiled) (any, error) {
	override := strings.TrimSpace(s.SegmentOverrideMatchingField)
	if override == "" {
		if ev.UserID == "" {
			return nil, errAnonymous
		}
		return ev.UserID, nil
	}
	var p fieldpath.Path
	var err error
	if c != nil {
		p, err = c.OverridePath(override)
	} else {
		p, err = fieldpath.Parse(override)
	}
	if err != nil {
		return nil, errorf(ClassConfig, "settings.segmentOverrideMatchingField: %v", err)
	}
	if v, ok := matchable(p.Lookup(ev.Raw)); ok {
		return v, nil
	}
	if ev.UserID == "" {
		return nil, errAnonymous
	}
	if !s.AllowUserIDFallback {
		// A config fix (or the fallback) and a replay can deliver it.
		return nil, errorf(ClassNoMatchValue, "no value to match on: nothing at %s and allowUserIdFallback is off", p)
	}
	return ev.UserID, nil
}

// matchable turns a looked-up value into a value to match on.
func matchable(v any, ok bool) (any, bool) {
	if !ok {
		return nil, false
	}
	switch v := v.(type) {
	case string:
		return v, v != ""
	case json.Number:
		return v, true
	case bool:
		return strconv.FormatBool(v), true
	case float64, int, int64:
		n, err := account.Convert(v, account.TypeNumber)
		return n, err == nil
	}
	return nil, false
}

func emailOf(ev *segment.Event) (string, bool) {
	v, ok := emailPath.Lookup(ev.Raw)
	if !ok {
		return "", false
	}
	s, ok := v.(string)
	s = strings.TrimSpace(s)
	return s, ok && s != ""
}

func pageName(ev *segment.Event) string {
	if ev.Name != "" {
		return ev.Name
	}
	if s := str(ev.Properties, "name"); s != "" {
		return s
	}
	if p := urlPath(ev.Properties); p != "" {
		return p
	}
	if page, ok := ev.Context["page"].(map[string]any); ok {
		if p := urlPath(page); p != "" {
			return p
		}
	}
	return string(ev.Type)
}

// urlPath returns m's "path", else the path of its "url".
func urlPath(m map[string]any) string {
	if p := str(m, "path"); p != "" {
		return p
	}
	if raw := str(m, "url"); raw != "" {
		if u, err := url.Parse(raw); err == nil {
			if u.Path != "" {
				return u.Path
			}
			if u.Host != "" {
				return "/"
			}
		}
	}
	return ""
}

func str(m map[string]any, key string) string {
	s, _ := m[key].(string)
	return strings.TrimSpace(s)
}

// decideApp plans an identify or group call with the segmentApp config.
func decideApp(ev *segment.Event, c *account.Compiled) (*Plan, error) {
	if c == nil || !c.SegmentApp.Enabled {
		return &Plan{Skip: fmt.Sprintf("segmentApp is not enabled: %s calls are skipped", ev.Type)}, nil
	}
	app := &c.SegmentApp
	group := ev.Type == segment.TypeGroup
	if group && app.Customer == nil {
		return &Plan{Skip: "segmentApp has no startdeliverCustomerField: group calls have no customer to match"}, nil
	}
	p := &Plan{}

	userVal, hasUser := p.matchValue("user", app.User, ev.Raw, "")
	var custVal any
	hasCust := false
	if app.Customer != nil {
		fallback := ""
		if group {
			fallback = ev.GroupID
		}
		custVal, hasCust = p.matchValue("customer", *app.Customer, ev.Raw, fallback)
	}

	switch {
	case group && !hasCust:
		return nil, errorf(ClassNoMatchValue, "no value to match the customer on: nothing at segmentApp.externalCustomerField and no usable groupId%s", droppedNote(p))
	case !hasUser && !hasCust && ev.UserID == "" && !group:
		return anonymous(ev), nil
	case !hasUser && !hasCust:
		return nil, errorf(ClassNoMatchValue, "no value to match on: nothing at segmentApp.externalMatchingField (%s)%s%s", app.User.Source, customerNote(app), droppedNote(p))
	}

	if hasUser {
		var mapping []account.FieldRule
		if !group {
			mapping = app.UserMapping
		}
		p.User = p.entity("user", app.User.Field, userVal, mapping, ev.Raw)
	}
	if hasCust {
		p.Customer = p.entity("customer", app.Customer.Field, custVal, app.CustomerMapping, ev.Raw)
	}
	p.Link = hasUser && hasCust
	return p, nil
}

func customerNote(app *account.CompiledApp) string {
	if app.Customer == nil || app.Customer.Source.IsZero() {
		return ""
	}
	return fmt.Sprintf(" nor at segmentApp.externalCustomerField (%s)", app.Customer.Source)
}

func droppedNote(p *Plan) string {
	if len(p.Dropped) == 0 {
		return ""
	}
	var b strings.Builder
	for _, d := range p.Dropped {
		fmt.Fprintf(&b, "; %s %s: %s", d.Entity, d.Field, d.Reason)
	}
	return b.String()
}

// matchValue evaluates a match rule on root, falling back to fallback when
// the path is unset or absent, and converts the value to the rule's type.
// A value that does not convert is recorded in p.Dropped.
func (p *Plan) matchValue(entity string, r account.MatchRule, root map[string]any, fallback string) (any, bool) {
	v, ok := matchable(r.Source.Lookup(root))
	if !ok && fallback != "" {
		v, ok = fallback, true
	}
	if !ok {
		return nil, false
	}
	out, err := account.Convert(v, r.Type)
	if err != nil {
		p.Dropped = append(p.Dropped, Issue{Entity: entity, Field: r.Field, Reason: "match value " + err.Error()})
		return nil, false
	}
	if s, isString := out.(string); isString && s == "" {
		return nil, false
	}
	return out, true
}

// entity builds the find-then-create-or-update step for one entity.
func (p *Plan) entity(name, field string, value any, mapping []account.FieldRule, root map[string]any) *Upsert {
	e := &Upsert{Match: Match{Field: field, Value: value}}
	var update map[string]any
	for _, m := range mapping {
		if m.Field == field {
			continue // never change the value the entity is matched on
		}
		v, ok := m.Source.Lookup(root)
		if !ok {
			continue
		}
		out, err := account.Convert(v, m.Type)
		if err != nil {
			p.Dropped = append(p.Dropped, Issue{Entity: name, Field: m.Field, Reason: err.Error()})
			continue
		}
		if update == nil {
			update = make(map[string]any, len(mapping))
		}
		update[m.Field] = out
	}
	e.Create = make(map[string]any, len(update)+1)
	for k, v := range update {
		e.Create[k] = v
	}
	e.Create[field] = value
	e.Update = update
	return e
}
