package account

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"strings"

	"github.com/startdeliver/segment-destination/shared/abbrev"
)

// Settings are the destination settings of docs/api.md §4, as stored with an
// account or sent by Segment (except the API key, which is never part of
// them).
type Settings struct {
	// StartdeliverUserCustomFieldToMatchOn is the alias of the Startdeliver
	// user custom field that track, page and screen events match on.
	StartdeliverUserCustomFieldToMatchOn string `json:"startdeliverUserCustomFieldToMatchOn"`
	// SyncUsingEmailInsteadOfCustomField matches on the user's email when
	// the event carries one.
	SyncUsingEmailInsteadOfCustomField bool `json:"syncUsingEmailInsteadOfCustomField,omitempty"`
	// SegmentOverrideMatchingField is a field path to match on instead of
	// userId; empty means userId.
	SegmentOverrideMatchingField string `json:"segmentOverrideMatchingField,omitempty"`
	// AllowUserIDFallback matches on userId when the override field is
	// absent from an event.
	AllowUserIDFallback bool `json:"allowUserIdFallback,omitempty"`
}

// Settings keys, as Segment and the stored document spell them.
const (
	keyCustomField   = "startdeliverUserCustomFieldToMatchOn"
	keyEmail         = "syncUsingEmailInsteadOfCustomField"
	keyOverride      = "segmentOverrideMatchingField"
	keyFallback      = "allowUserIdFallback"
	keyAPIKey        = "apiKey"
	maxHeaderLen     = 16 << 10
	maxSettingLength = 1024
)

// SettingsOverride holds the settings present in one event's
// X-Segment-Settings header; a nil field was not in the header and leaves
// the stored setting as it is. It travels inside the Pub/Sub message as
// JSON (absent keys omitted).
type SettingsOverride struct {
	StartdeliverUserCustomFieldToMatchOn *string `json:"startdeliverUserCustomFieldToMatchOn,omitempty"`
	SyncUsingEmailInsteadOfCustomField   *bool   `json:"syncUsingEmailInsteadOfCustomField,omitempty"`
	SegmentOverrideMatchingField         *string `json:"segmentOverrideMatchingField,omitempty"`
	AllowUserIDFallback                  *bool   `json:"allowUserIdFallback,omitempty"`
}

// IsZero reports whether o overrides nothing.
func (o SettingsOverride) IsZero() bool { return o == SettingsOverride{} }

// With returns s with the keys present in o replacing the stored ones.
func (s Settings) With(o SettingsOverride) Settings {
	if o.StartdeliverUserCustomFieldToMatchOn != nil {
		s.StartdeliverUserCustomFieldToMatchOn = *o.StartdeliverUserCustomFieldToMatchOn
	}
	if o.SyncUsingEmailInsteadOfCustomField != nil {
		s.SyncUsingEmailInsteadOfCustomField = *o.SyncUsingEmailInsteadOfCustomField
	}
	if o.SegmentOverrideMatchingField != nil {
		s.SegmentOverrideMatchingField = *o.SegmentOverrideMatchingField
	}
	if o.AllowUserIDFallback != nil {
		s.AllowUserIDFallback = *o.AllowUserIDFallback
	}
	return s
}

// HeaderError reports an X-Segment-Settings header that cannot be used. Its
// message never contains the header's API key.
type HeaderError struct {
	Msg string
}

func (e *HeaderError) Error() string { return "X-Segment-Settings header: " + e.Msg }

// ParseSettingsHeader decodes an X-Segment-Settings header value: base64
// (standard or URL alphabet, with or without padding) of a JSON object.
//
// Unknown keys are ignored, and so is apiKey, whose value never appears in
// an error. A null value or an empty string for a boolean counts as absent.
// Booleans may also arrive as the strings "true" and "false". Errors are
// *HeaderError.
func ParseSettingsHeader(value string) (SettingsOverride, error) {
	value = strings.TrimSpace(value)
	if value == "" {
		return SettingsOverride{}, &HeaderError{Msg: "empty value"}
	}
	if len(value) > maxHeaderLen {
		return SettingsOverride{}, &HeaderError{Msg: fmt.Sprintf("longer than %d bytes", maxHeaderLen)}
	}
	raw, err := decodeBase64(value)
	if err != nil {
		return SettingsOverride{}, &HeaderError{Msg: "not base64"}
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var m map[string]any
	if err := dec.Decode(&m); err != nil || m == nil {
		// encoding/json's messages quote the offending character, which
		// could be part of the key: say only where it broke.
		var se *json.SyntaxError
		switch {
		case errors.As(err, &se):
			return SettingsOverride{}, &HeaderError{Msg: fmt.Sprintf("not valid JSON (syntax error at byte %d)", se.Offset)}
		case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF):
			return SettingsOverride{}, &HeaderError{Msg: "not valid JSON (unexpected end)"}
		default:
			return SettingsOverride{}, &HeaderError{Msg: "not a JSON object"}
		}
	}
	if dec.More() {
		return SettingsOverride{}, &HeaderError{Msg: "not valid JSON (data after the object)"}
	}
	var o SettingsOverride
	var problems []string
	for _, k := range []string{keyCustomField, keyOverride} {
		v, ok := m[k]
		if !ok || v == nil {
			continue
		}
		s, isString := v.(string)
		if !isString {
			problems = append(problems, fmt.Sprintf("%s: want a string, got %s", k, abbrev.Kind(v)))
			continue
		}
		if len(s) > maxSettingLength {
			problems = append(problems, fmt.Sprintf("%s: longer than %d bytes", k, maxSettingLength))
			continue
		}
		s = strings.TrimSpace(s)
		if k == keyCustomField {
			o.StartdeliverUserCustomFieldToMatchOn = &s
		} else {
			o.SegmentOverrideMatchingField = &s
		}
	}
	for _, k := range []string{keyEmail, keyFallback} {
		v, ok := m[k]
		if !ok || v == nil {
			continue
		}
		b, present, err := headerBool(v)
		if err != nil {
			problems = append(problems, k+": "+err.Error())
			continue
		}
		if !present {
			continue
		}
		if k == keyEmail {
			o.SyncUsingEmailInsteadOfCustomField = &b
		} else {
			o.AllowUserIDFallback = &b
		}
	}
	if len(problems) > 0 {
		return SettingsOverride{}, &HeaderError{Msg: strings.Join(problems, "; ")}
	}
	return o, nil
}

// decodeBase64 accepts both alphabets, padded or not.
func decodeBase64(s string) ([]byte, error) {
	enc := base64.RawStdEncoding
	if strings.ContainsAny(s, "-_") {
		enc = base64.RawURLEncoding
	}
	return enc.DecodeString(strings.TrimRight(s, "="))
}

// headerBool reads a boolean setting as Segment may send it.
func headerBool(v any) (b, present bool, err error) {
	switch v := v.(type) {
	case bool:
		return v, true, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true":
			return true, true, nil
		case "false":
			return false, true, nil
		case "":
			return false, false, nil
		}
		return false, false, errors.New("want true or false, got another string")
	}
	return false, false, fmt.Errorf("want a boolean, got %s", abbrev.Kind(v))
}
