// Package account is one Startdeliver account's configuration: the
// destination settings (stored, and per event from Segment's
// X-Segment-Settings header) and the segmentApp matching and mapping of
// identify and group calls (docs/api.md §4). It decodes the account document
// from JSON and from Firestore, validates it with messages that name the
// offending key, and compiles it once into a ready-to-run form.
//
// The API key is never part of an Account: the document is stored under
// the key's SHA-256 and holds nothing that reveals it.
//
// # Conversions
//
// A {field, type} entry converts the event's value before it is sent to
// Startdeliver (Convert). Values absent from the event (or null) are not
// converted at all: they are "no value".
//
//   - text: a string as is; a boolean as "true" or "false"; a JSON number as
//     the exact text it was sent with (42, 4.50, 1e3); a float64 in decimal
//     form without exponent (strconv 'f', shortest), except below 1e-6 or
//     from 1e21 up, where it takes an exponent as in JavaScript. Objects and
//     arrays have no text form.
//   - number: numbers as they are; a string whose trimmed content is a
//     JSON number (an optional leading "+" allowed), such as " 42 ", "-3.5"
//     or "1e3", becomes that number. Booleans, empty strings, hex, "NaN",
//     "Infinity" and numbers beyond float64 are not numbers. Numbers travel
//     as json.Number so no precision is lost.
//   - boolean: booleans; the strings "true", "false", "1", "0" (any case,
//     trimmed); the numbers 0 and 1.
//   - date: an ISO-8601 string: RFC 3339 with any fraction of a second, a
//     numeric zone without colon, a space instead of "T", no seconds, or a
//     date alone; without a zone it is UTC. A number is Unix time: seconds
//     below 1e11, milliseconds from 1e11 up, between 1970 and 9999. The
//     result is an RFC 3339 string in UTC, e.g. "2024-05-01T00:00:00Z".
//     Booleans and other strings are not dates.
//
// A value that cannot convert yields a *ConversionError; the planner leaves
// the field out and records the reason.
package account

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"sort"
	"strconv"

	"github.com/startdeliver/segment-destination/shared/abbrev"
)

// Account is one account's document (docs/api.md §4), as stored in Firestore.
type Account struct {
	// Name is the account's display name.
	Name string `json:"name"`
	// Disabled refuses the account's events at ingest.
	Disabled bool `json:"disabled"`
	// Settings are the stored destination settings; an event's
	// X-Segment-Settings header overrides them key by key.
	Settings Settings `json:"settings"`
	// SegmentApp configures identify and group calls.
	SegmentApp SegmentApp `json:"segmentApp"`
	// StartdeliverAPIURL replaces STARTDELIVER_API_URL for this account
	// when set.
	StartdeliverAPIURL string `json:"startdeliverApiUrl,omitempty"`
}

// SegmentApp is the "Segment app" configuration in Startdeliver: how
// identify and group calls match and update users and customers.
type SegmentApp struct {
	// Enabled turns on identify and group handling; without it they are
	// skipped.
	Enabled bool `json:"enabled"`
	// StartdeliverMatchingField is the user field matched against.
	StartdeliverMatchingField Target `json:"startdeliverMatchingField"`
	// ExternalMatchingField is the event path holding the user's value.
	ExternalMatchingField Source `json:"externalMatchingField"`
	// StartdeliverCustomerField is the customer field matched against;
	// empty when no customer is matched.
	StartdeliverCustomerField Target `json:"startdeliverCustomerField"`
	// ExternalCustomerField is the event path holding the customer's value.
	ExternalCustomerField Source `json:"externalCustomerField"`
	// UserMapping lists fields set on the user.
	UserMapping []Mapping `json:"userMapping,omitempty"`
	// CustomerMapping lists fields set on the customer.
	CustomerMapping []Mapping `json:"customerMapping,omitempty"`
}

// Target is a Startdeliver field (name or custom field alias) and its type.
// An empty Type means text.
type Target struct {
	Field string `json:"field"`
	Type  Type   `json:"type,omitempty"`
}

// Source is a field path into the event.
type Source struct {
	Field string `json:"field"`
}

// Mapping copies the value at ExternalField (a field path into the event)
// to the Startdeliver Field, converted to Type (empty means text).
type Mapping struct {
	Field         string `json:"field"`
	ExternalField string `json:"externalField"`
	Type          Type   `json:"type,omitempty"`
}

// Problem is one thing wrong with an account document: Key is the path of
// the offending key, e.g. "segmentApp.userMapping[1].field".
type Problem struct {
	Key string
	Msg string
}

func (p Problem) String() string { return p.Key + ": " + p.Msg }

// ValidationError lists everything wrong with an account document.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	var b bytes.Buffer
	b.WriteString("invalid account: ")
	for i, p := range e.Problems {
		if i > 0 {
			b.WriteString("; ")
		}
		b.WriteString(p.String())
	}
	return b.String()
}

// problems collects Problems while decoding or validating.
type problems []Problem

func (ps *problems) add(key, format string, args ...any) {
	*ps = append(*ps, Problem{Key: key, Msg: fmt.Sprintf(format, args...)})
}

func (ps problems) err() error {
	if len(ps) == 0 {
		return nil
	}
	return &ValidationError{Problems: ps}
}

// Parse decodes an account document from JSON, as the accounts command
// reads it from a file. Unlike FromMap it rejects keys it does not know,
// since in a hand-written file they are typos; the problem names the key.
// It does not validate: call Validate or Compile. Errors are
// *ValidationError, or a *json.SyntaxError wrapped with context.
func Parse(data []byte) (*Account, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	var v any
	if err := dec.Decode(&v); err != nil {
		if errors.Is(err, io.EOF) {
			return nil, errors.New("parse account: empty document")
		}
		return nil, fmt.Errorf("parse account: %w", err)
	}
	if dec.More() {
		return nil, errors.New("parse account: data after the JSON object")
	}
	m, ok := v.(map[string]any)
	if !ok {
		return nil, fmt.Errorf("parse account: want a JSON object, got %s", abbrev.Kind(v))
	}
	return decode(m, true)
}

// FromMap decodes an account document as the Firestore client returns it
// (string, bool, int64, float64, []any, map[string]any; json.Number is
// accepted too). Unknown keys are ignored so that tools may keep their own
// metadata in the document. It does not validate. Errors are
// *ValidationError.
func FromMap(m map[string]any) (*Account, error) {
	if m == nil {
		return nil, &ValidationError{Problems: []Problem{{Key: "(document)", Msg: "empty document"}}}
	}
	return decode(m, false)
}

// decoder reads typed values out of a generic document, collecting
// problems under their key paths.
type decoder struct {
	strict bool
	ps     problems
}

func decode(m map[string]any, strict bool) (*Account, error) {
	d := &decoder{strict: strict}
	a := &Account{}
	d.object("", m, map[string]func(key string, v any){
		"name":               func(k string, v any) { a.Name = d.str(k, v) },
		"disabled":           func(k string, v any) { a.Disabled = d.boolean(k, v) },
		"startdeliverApiUrl": func(k string, v any) { a.StartdeliverAPIURL = d.str(k, v) },
		"settings": func(k string, v any) {
			s, _ := d.asObject(k, v)
			d.object(k, s, map[string]func(string, any){
				keyCustomField: func(k string, v any) { a.Settings.StartdeliverUserCustomFieldToMatchOn = d.str(k, v) },
				keyEmail:       func(k string, v any) { a.Settings.SyncUsingEmailInsteadOfCustomField = d.boolean(k, v) },
				keyOverride:    func(k string, v any) { a.Settings.SegmentOverrideMatchingField = d.str(k, v) },
				keyFallback:    func(k string, v any) { a.Settings.AllowUserIDFallback = d.boolean(k, v) },
				keyAPIKey: func(k string, v any) {
					if d.strict {
						d.ps.add(k, "the API key is never stored in an account (the document id is its SHA-256): remove it")
					}
				},
			})
		},
		"segmentApp": func(k string, v any) {
			s, _ := d.asObject(k, v)
			sa := &a.SegmentApp
			d.object(k, s, map[string]func(string, any){
				"enabled":                   func(k string, v any) { sa.Enabled = d.boolean(k, v) },
				"startdeliverMatchingField": func(k string, v any) { sa.StartdeliverMatchingField = d.target(k, v) },
				"externalMatchingField":     func(k string, v any) { sa.ExternalMatchingField = d.source(k, v) },
				"startdeliverCustomerField": func(k string, v any) { sa.StartdeliverCustomerField = d.target(k, v) },
				"externalCustomerField":     func(k string, v any) { sa.ExternalCustomerField = d.source(k, v) },
				"userMapping":               func(k string, v any) { sa.UserMapping = d.mappings(k, v) },
				"customerMapping":           func(k string, v any) { sa.CustomerMapping = d.mappings(k, v) },
			})
		},
	})
	if err := d.ps.err(); err != nil {
		return nil, err
	}
	return a, nil
}

// object calls fields[key] for each key of m, in key order so that
// problems come out in a stable order. A null value is absent.
func (d *decoder) object(prefix string, m map[string]any, fields map[string]func(key string, v any)) {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		full := k
		if prefix != "" {
			full = prefix + "." + k
		}
		f, ok := fields[k]
		if !ok {
			if d.strict {
				d.ps.add(full, "unknown key%s", suggest(k, fields))
			}
			continue
		}
		if m[k] == nil {
			continue
		}
		f(full, m[k])
	}
}

// suggest names a known key that differs from k only in case.
func suggest(k string, fields map[string]func(string, any)) string {
	for known := range fields {
		if bytes.EqualFold([]byte(known), []byte(k)) {
			return fmt.Sprintf(" (did you mean %q?)", known)
		}
	}
	return ""
}

func (d *decoder) asObject(key string, v any) (map[string]any, bool) {
	m, ok := v.(map[string]any)
	if !ok {
		d.ps.add(key, "want an object, got %s", abbrev.Kind(v))
	}
	return m, ok
}

func (d *decoder) str(key string, v any) string {
	s, ok := v.(string)
	if !ok {
		d.ps.add(key, "want a string, got %s", abbrev.Kind(v))
	}
	return s
}

func (d *decoder) boolean(key string, v any) bool {
	b, ok := v.(bool)
	if !ok {
		d.ps.add(key, "want a boolean, got %s", abbrev.Kind(v))
	}
	return b
}

func (d *decoder) target(key string, v any) Target {
	var t Target
	m, _ := d.asObject(key, v)
	d.object(key, m, map[string]func(string, any){
		"field": func(k string, v any) { t.Field = d.str(k, v) },
		"type":  func(k string, v any) { t.Type = Type(d.str(k, v)) },
	})
	return t
}

func (d *decoder) source(key string, v any) Source {
	var s Source
	m, _ := d.asObject(key, v)
	d.object(key, m, map[string]func(string, any){
		"field": func(k string, v any) { s.Field = d.str(k, v) },
	})
	return s
}

func (d *decoder) mappings(key string, v any) []Mapping {
	list, ok := v.([]any)
	if !ok {
		d.ps.add(key, "want an array, got %s", abbrev.Kind(v))
		return nil
	}
	if len(list) == 0 {
		return nil
	}
	out := make([]Mapping, len(list))
	for i, item := range list {
		k := key + "[" + strconv.Itoa(i) + "]"
		m, ok := d.asObject(k, item)
		if !ok {
			continue
		}
		mp := &out[i]
		d.object(k, m, map[string]func(string, any){
			"field":         func(k string, v any) { mp.Field = d.str(k, v) },
			"externalField": func(k string, v any) { mp.ExternalField = d.str(k, v) },
			"type":          func(k string, v any) { mp.Type = Type(d.str(k, v)) },
		})
	}
	return out
}

// Map returns the document to store in Firestore; FromMap(a.Map()) equals
// *a. Empty optional keys are left out.
func (a *Account) Map() map[string]any {
	settings := map[string]any{keyCustomField: a.Settings.StartdeliverUserCustomFieldToMatchOn}
	if a.Settings.SyncUsingEmailInsteadOfCustomField {
		settings[keyEmail] = true
	}
	if a.Settings.SegmentOverrideMatchingField != "" {
		settings[keyOverride] = a.Settings.SegmentOverrideMatchingField
	}
	if a.Settings.AllowUserIDFallback {
		settings[keyFallback] = true
	}
	sa := a.SegmentApp
	app := map[string]any{"enabled": sa.Enabled}
	if sa.StartdeliverMatchingField != (Target{}) {
		app["startdeliverMatchingField"] = sa.StartdeliverMatchingField.mapValue()
	}
	if sa.ExternalMatchingField != (Source{}) {
		app["externalMatchingField"] = map[string]any{"field": sa.ExternalMatchingField.Field}
	}
	if sa.StartdeliverCustomerField != (Target{}) {
		app["startdeliverCustomerField"] = sa.StartdeliverCustomerField.mapValue()
	}
	if sa.ExternalCustomerField != (Source{}) {
		app["externalCustomerField"] = map[string]any{"field": sa.ExternalCustomerField.Field}
	}
	if len(sa.UserMapping) > 0 {
		app["userMapping"] = mappingList(sa.UserMapping)
	}
	if len(sa.CustomerMapping) > 0 {
		app["customerMapping"] = mappingList(sa.CustomerMapping)
	}
	m := map[string]any{
		"name":       a.Name,
		"disabled":   a.Disabled,
		"settings":   settings,
		"segmentApp": app,
	}
	if a.StartdeliverAPIURL != "" {
		m["startdeliverApiUrl"] = a.StartdeliverAPIURL
	}
	return m
}

func (t Target) mapValue() map[string]any {
	m := map[string]any{"field": t.Field}
	if t.Type != "" {
		m["type"] = string(t.Type)
	}
	return m
}

func mappingList(ms []Mapping) []any {
	out := make([]any, len(ms))
	for i, mp := range ms {
		m := map[string]any{"field": mp.Field, "externalField": mp.ExternalField}
		if mp.Type != "" {
			m["type"] = string(mp.Type)
		}
		out[i] = m
	}
	return out
}
