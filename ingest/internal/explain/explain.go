// Package explain answers what deliver would do with one event under an
// account's current configuration, without writing anything anywhere
// (POST /v1/explain, docs/api.md § Probes and the event console). It plans with plan.Decide, the code deliver
// runs, and lays the plan out as the Startdeliver calls deliver makes for it,
// in deliver's order: the customer first (so that the user can link to it),
// then the user, then the usage record; each entity is found first, then
// updated with the fields that differ (lookup.Diff) or created.
//
// Without a lookup, both branches of each find are listed (When "found" or
// "not_found"). With one, the finds run read-only against Startdeliver and
// only the branch taken is listed, with the ids found.
package explain

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/failure"
	"github.com/startdeliver/segment-destination/shared/journey"
	"github.com/startdeliver/segment-destination/shared/lookup"
	"github.com/startdeliver/segment-destination/shared/plan"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// Statuses of an explanation.
const (
	WouldDeliver    = "would_deliver"
	WouldSkip       = "would_skip"
	WouldDeadLetter = "would_dead_letter"
)

// Dead-letter classes that deliver gives beyond plan's (deliver's
// delivery.ClassInvalid and delivery.ClassStartdeliver).
const (
	ClassInvalidConfig = "invalid-config"
	ClassStartdeliver  = "startdeliver-rejected"
)

// Call is one Startdeliver call deliver would make.
type Call struct {
	Method string `json:"method"`
	Route  string `json:"route"`
	// Body is the request body (for a find, the search query).
	Body any `json:"body,omitempty"`
	// When is "found" or "not_found" for a call that depends on a find
	// that was not run; empty when it is made either way.
	When string `json:"when,omitempty"`
	// Note says what the call is for.
	Note string `json:"note,omitempty"`
}

// Lookup is what a read-only find said about an entity.
type Lookup struct {
	Entity string `json:"entity"`
	// Found is the id found, or nil when it would be created.
	Found *int64 `json:"found"`
	// Says is the answer for a person: "matches user 1234", "would create".
	Says string `json:"says"`
	// Error is why the find could not answer.
	Error string `json:"error,omitempty"`
}

// Result is an explanation (docs/api.md § Probes and the event console).
type Result struct {
	Status     string `json:"status"`
	Reason     string `json:"reason"`
	ErrorClass string `json:"errorClass"`
	// Settings are the settings that apply: the account's, with the
	// X-Segment-Settings header's keys over them (FromHeader names those).
	Settings   account.Settings `json:"settings"`
	FromHeader []string         `json:"settingsFromHeader"`
	SegmentApp bool             `json:"segmentAppEnabled"`
	// Match is the user's match (or the customer's when only a customer is
	// planned); CustomerMatch the customer's.
	Match         *journey.Match `json:"match"`
	CustomerMatch *journey.Match `json:"customerMatch,omitempty"`
	Calls         []Call         `json:"calls"`
	Dropped       []plan.Issue   `json:"dropped"`
	Lookups       []Lookup       `json:"lookups,omitempty"`
}

// finder runs a read-only find (lookup.Client). Safe for concurrent use.
type finder interface {
	Find(ctx context.Context, apiKey, baseURL, kind, field string, value any) (lookup.Entity, bool, error)
}

// Explainer explains events. Safe for concurrent use.
type Explainer struct {
	finder finder
}

// New returns an Explainer; f may be nil when lookups are not possible.
func New(f finder) *Explainer { return &Explainer{finder: f} }

// Input is one event to explain.
type Input struct {
	Event *segment.Event
	// Entry is the account's configuration.
	Entry *accountstore.Entry
	// Header is the event's X-Segment-Settings, zero when absent.
	Header account.SettingsOverride
	// APIKey is the caller's key, used only for lookups.
	APIKey string
	// Lookup runs the read-only finds.
	Lookup bool
}

// Explain explains one event. A lookup that Startdeliver could not answer is
// reported in the Result's Lookups; one it refused (401, 403, 400) makes the
// event would_dead_letter, as deliver would get the same answer.
func (x *Explainer) Explain(ctx context.Context, in Input) *Result {
	res := &Result{Calls: []Call{}, Dropped: []plan.Issue{}, FromHeader: headerKeys(in.Header)}
	if in.Entry.Invalid != nil || in.Entry.Account == nil {
		res.Status, res.ErrorClass = WouldDeadLetter, ClassInvalidConfig
		res.Reason = fmt.Sprintf("the account's configuration cannot be used: %v", in.Entry.Invalid)
		return res
	}
	s := in.Entry.Account.Settings.With(in.Header)
	res.Settings = s
	res.SegmentApp = in.Entry.Compiled != nil && in.Entry.Compiled.SegmentApp.Enabled
	pl, err := plan.Decide(in.Event, s, in.Entry.Compiled)
	if err != nil {
		res.Status, res.ErrorClass, res.Reason = WouldDeadLetter, plan.ClassEvent, err.Error()
		var pe *plan.Error
		if errors.As(err, &pe) {
			res.ErrorClass, res.Reason = pe.Class, pe.Reason
		}
		return res
	}
	if pl.Dropped != nil {
		res.Dropped = pl.Dropped
	}
	if pl.Skip != "" {
		res.Status, res.Reason, res.ErrorClass = WouldSkip, pl.Skip, pl.SkipClass
		return res
	}
	res.Status = WouldDeliver
	res.Match, res.CustomerMatch = journey.Matches(in.Event, s, pl)
	if res.Match == nil {
		res.Match, res.CustomerMatch = res.CustomerMatch, nil
	}
	x.calls(ctx, in, pl, res)
	return res
}

func headerKeys(o account.SettingsOverride) []string {
	raw, err := json.Marshal(o)
	keys := []string{}
	if err != nil {
		return keys
	}
	var m map[string]json.RawMessage
	if json.Unmarshal(raw, &m) != nil {
		return keys
	}
	for _, k := range []string{"startdeliverUserCustomFieldToMatchOn", "syncUsingEmailInsteadOfCustomField", "segmentOverrideMatchingField", "allowUserIdFallback"} {
		if v, ok := m[k]; ok && string(v) != "null" {
			keys = append(keys, k)
		}
	}
	return keys
}

// found is an entity's state as the explanation knows it.
type found struct {
	known  bool          // a lookup answered
	entity lookup.Entity // nil when known and absent
	id     int64
}

// calls lays pl out as deliver's calls (delivery.Processor.execute).
func (x *Explainer) calls(ctx context.Context, in Input, pl *plan.Plan, res *Result) {
	var customer found
	if pl.Customer != nil {
		customer = x.entity(ctx, in, "customer", pl.Customer, nil, res)
		if res.Status == WouldDeadLetter {
			return
		}
	}
	if pl.User != nil {
		var link map[string]any
		if pl.Link {
			var id any = "{customer.id}"
			if customer.known && customer.id != 0 {
				id = customer.id
			}
			link = map[string]any{"customer": id}
		}
		user := x.entity(ctx, in, "user", pl.User, link, res)
		if res.Status == WouldDeadLetter || pl.Usage == nil {
			return
		}
		body := map[string]any{"type": pl.Usage.Type, "name": pl.Usage.Name, "externalId": pl.Usage.ExternalID}
		body["user"] = any("{user.id}")
		if user.known && user.id != 0 {
			body["user"] = user.id
		}
		if pl.Customer != nil {
			body["customer"] = "{customer.id}"
			if customer.known && customer.id != 0 {
				body["customer"] = customer.id
			}
		}
		ts := pl.Usage.Timestamp
		if ts.IsZero() {
			ts = in.Event.ReceivedAt
		}
		body["timestamp"] = ts.UTC().Format(time.RFC3339Nano)
		body["properties"] = map[string]any{}
		if pl.Usage.Properties != nil {
			body["properties"] = pl.Usage.Properties
		}
		res.Calls = append(res.Calls, Call{Method: http.MethodPost, Route: "/usage", Body: body, Note: "record usage"})
	}
}

// entity lays out one find-then-update-or-create, as delivery.upsert does.
func (x *Explainer) entity(ctx context.Context, in Input, kind string, e *plan.Upsert, extra map[string]any, res *Result) found {
	route := "/" + kind
	query := map[string]any{"filter": map[string]any{e.Match.Field: e.Match.Value}, "limit": 1}
	res.Calls = append(res.Calls, Call{Method: http.MethodGet, Route: route, Body: map[string]any{"query": query}, Note: "find " + kind + " by " + e.Match.Field})
	update := merge(e.Update, extra)
	create := merge(e.Create, extra)
	if !in.Lookup || x.finder == nil {
		if len(update) > 0 {
			res.Calls = append(res.Calls, Call{Method: http.MethodPatch, Route: route + "/{id}", Body: update, When: "found",
				Note: "update the " + kind + " found: only the fields whose value differs are sent, and no call when none does"})
		}
		res.Calls = append(res.Calls, Call{Method: http.MethodPost, Route: route, Body: create, When: "not_found", Note: "create the " + kind})
		return found{}
	}
	ent, ok, err := x.finder.Find(ctx, in.APIKey, in.Entry.Account.StartdeliverAPIURL, kind, e.Match.Field, e.Match.Value)
	if err != nil {
		var ae *lookup.APIError
		switch {
		case failure.IsPermanent(err):
			res.Status, res.ErrorClass, res.Reason = WouldDeadLetter, failure.Class(err), err.Error()
		case errors.As(err, &ae) && !ae.Retryable():
			// deliver would get the same answer and dead-letter the event.
			res.Status, res.ErrorClass, res.Reason = WouldDeadLetter, ClassStartdeliver, err.Error()
		}
		res.Lookups = append(res.Lookups, Lookup{Entity: kind, Says: "could not look up", Error: err.Error()})
		// Both branches stay possible.
		if len(update) > 0 {
			res.Calls = append(res.Calls, Call{Method: http.MethodPatch, Route: route + "/{id}", Body: update, When: "found"})
		}
		res.Calls = append(res.Calls, Call{Method: http.MethodPost, Route: route, Body: create, When: "not_found"})
		return found{}
	}
	if !ok {
		res.Lookups = append(res.Lookups, Lookup{Entity: kind, Says: "would create a new " + kind})
		res.Calls = append(res.Calls, Call{Method: http.MethodPost, Route: route, Body: create, Note: "create the " + kind})
		return found{known: true}
	}
	id, _ := ent.ID()
	res.Lookups = append(res.Lookups, Lookup{Entity: kind, Found: &id, Says: fmt.Sprintf("matches %s %d", kind, id)})
	if changed := lookup.Diff(ent, update); len(changed) > 0 {
		res.Calls = append(res.Calls, Call{Method: http.MethodPatch, Route: route + "/{id}", Body: changed, Note: fmt.Sprintf("update %s %d: the fields that differ", kind, id)})
	}
	return found{known: true, entity: ent, id: id}
}

func merge(a, b map[string]any) map[string]any {
	if len(b) == 0 {
		return a
	}
	out := make(map[string]any, len(a)+len(b))
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}
