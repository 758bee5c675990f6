package account

import (
	"encoding/json"
	"fmt"
	"math"
	"strconv"
	"strings"
	"time"

	"github.com/startdeliver/segment-destination/shared/abbrev"
)

// Type is the target type of a Startdeliver field in a {field, type} entry.
type Type string

// The field types of docs/api.md §3.
const (
	TypeText    Type = "text"
	TypeNumber  Type = "number"
	TypeBoolean Type = "boolean"
	TypeDate    Type = "date"
)

// Known reports whether t is one of the four types.
func (t Type) Known() bool {
	switch t {
	case TypeText, TypeNumber, TypeBoolean, TypeDate:
		return true
	}
	return false
}

// ConversionError explains why a value cannot become a Type. It names the
// kind of value, never the value itself (which may be personal data).
type ConversionError struct {
	Type Type
	Msg  string
}

func (e *ConversionError) Error() string {
	return fmt.Sprintf("cannot convert to %s: %s", e.Type, e.Msg)
}

// Convert converts a decoded JSON value (string, bool, json.Number,
// float64, int, int64; never nil) to t, following the rules in the package
// comment. The result is a string, a bool or a json.Number. A value that
// cannot convert returns a *ConversionError.
func Convert(v any, t Type) (any, error) {
	switch t {
	case TypeText:
		return toText(v)
	case TypeNumber:
		return toNumber(v)
	case TypeBoolean:
		return toBoolean(v)
	case TypeDate:
		return toDate(v)
	}
	return nil, &ConversionError{Type: t, Msg: "unknown type"}
}

func toText(v any) (any, error) {
	switch v := v.(type) {
	case string:
		return v, nil
	case bool:
		return strconv.FormatBool(v), nil
	case json.Number:
		return v.String(), nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, &ConversionError{Type: TypeText, Msg: "the number is not finite"}
		}
		return formatFloat(v), nil
	case int:
		return strconv.Itoa(v), nil
	case int64:
		return strconv.FormatInt(v, 10), nil
	}
	return nil, &ConversionError{Type: TypeText, Msg: abbrev.Kind(v) + " has no text form"}
}

// formatFloat writes f without an exponent unless it is very large or very
// small, as JavaScript does.
func formatFloat(f float64) string {
	if a := math.Abs(f); a != 0 && (a >= 1e21 || a < 1e-6) {
		return strconv.FormatFloat(f, 'g', -1, 64)
	}
	return strconv.FormatFloat(f, 'f', -1, 64)
}

func toNumber(v any) (any, error) {
	switch v := v.(type) {
	case json.Number:
		if !isJSONNumber(string(v)) {
			return nil, &ConversionError{Type: TypeNumber, Msg: "malformed number"}
		}
		return v, nil
	case float64:
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, &ConversionError{Type: TypeNumber, Msg: "the number is not finite"}
		}
		return json.Number(formatFloat(v)), nil
	case int:
		return json.Number(strconv.Itoa(v)), nil
	case int64:
		return json.Number(strconv.FormatInt(v, 10)), nil
	case string:
		s := strings.TrimSpace(v)
		s = strings.TrimPrefix(s, "+")
		if !isJSONNumber(s) {
			if s == "" {
				return nil, &ConversionError{Type: TypeNumber, Msg: "empty string"}
			}
			return nil, &ConversionError{Type: TypeNumber, Msg: "the string is not a decimal number"}
		}
		return json.Number(s), nil
	case bool:
		return nil, &ConversionError{Type: TypeNumber, Msg: "a boolean is not a number"}
	}
	return nil, &ConversionError{Type: TypeNumber, Msg: abbrev.Kind(v) + " is not a number"}
}

// isJSONNumber reports whether s is a number in JSON's grammar:
// -?(0|[1-9][0-9]*)(\.[0-9]+)?([eE][+-]?[0-9]+)?
func isJSONNumber(s string) bool {
	i := 0
	if i < len(s) && s[i] == '-' {
		i++
	}
	digits := func() int {
		start := i
		for i < len(s) && s[i] >= '0' && s[i] <= '9' {
			i++
		}
		return i - start
	}
	if i < len(s) && s[i] == '0' {
		i++
	} else if digits() == 0 {
		return false
	}
	if i < len(s) && s[i] == '.' {
		i++
		if digits() == 0 {
			return false
		}
	}
	if i < len(s) && (s[i] == 'e' || s[i] == 'E') {
		i++
		if i < len(s) && (s[i] == '+' || s[i] == '-') {
			i++
		}
		if digits() == 0 {
			return false
		}
	}
	if i != len(s) {
		return false
	}
	// Exponents such as 1e999 overflow float64: reject what no one can store.
	f, err := strconv.ParseFloat(s, 64)
	return err == nil && !math.IsInf(f, 0)
}

func toBoolean(v any) (any, error) {
	switch v := v.(type) {
	case bool:
		return v, nil
	case string:
		switch strings.ToLower(strings.TrimSpace(v)) {
		case "true", "1":
			return true, nil
		case "false", "0":
			return false, nil
		}
		return nil, &ConversionError{Type: TypeBoolean, Msg: `the string is not "true", "false", "1" or "0"`}
	case json.Number, float64, int, int64:
		f, ok := numberValue(v)
		switch {
		case ok && f == 1:
			return true, nil
		case ok && f == 0:
			return false, nil
		}
		return nil, &ConversionError{Type: TypeBoolean, Msg: "only the numbers 0 and 1 are booleans"}
	}
	return nil, &ConversionError{Type: TypeBoolean, Msg: abbrev.Kind(v) + " is not a boolean"}
}

// numberValue returns a numeric value as float64.
func numberValue(v any) (float64, bool) {
	switch v := v.(type) {
	case json.Number:
		f, err := strconv.ParseFloat(string(v), 64)
		return f, err == nil && !math.IsInf(f, 0)
	case float64:
		return v, !math.IsNaN(v) && !math.IsInf(v, 0)
	case int:
		return float64(v), true
	case int64:
		return float64(v), true
	}
	return 0, false
}

// dateLayouts are the ISO-8601 forms a date string may take.
var dateLayouts = []string{
	time.RFC3339Nano,                      // 2024-05-01T12:30:00.123Z, 2024-05-01T12:30:00+02:00
	"2006-01-02T15:04:05.999999999Z0700",  // +0200
	"2006-01-02T15:04:05.999999999",       // no zone: UTC
	"2006-01-02 15:04:05.999999999Z07:00", // space instead of T
	"2006-01-02 15:04:05.999999999",       // space, no zone: UTC
	"2006-01-02T15:04Z07:00",              // no seconds
	"2006-01-02T15:04",                    // no seconds, no zone: UTC
	"2006-01-02",                          // date only: midnight UTC
}

// unixMillisThreshold separates Unix seconds from Unix milliseconds: 1e11
// seconds is the year 5138, 1e11 milliseconds is March 1973.
const unixMillisThreshold = 1e11

// maxUnixSeconds keeps converted dates within RFC 3339's four-digit years.
const maxUnixSeconds = 253402300799 // 9999-12-31T23:59:59Z

func toDate(v any) (any, error) {
	switch v := v.(type) {
	case string:
		s := strings.TrimSpace(v)
		for _, layout := range dateLayouts {
			if t, err := time.Parse(layout, s); err == nil {
				if t.Year() < 0 || t.UTC().Year() > 9999 {
					break
				}
				return t.UTC().Format(time.RFC3339Nano), nil
			}
		}
		return nil, &ConversionError{Type: TypeDate, Msg: "the string is not an ISO-8601 date or time"}
	case json.Number, float64, int, int64:
		f, ok := numberValue(v)
		if !ok {
			return nil, &ConversionError{Type: TypeDate, Msg: "malformed number"}
		}
		if math.Abs(f) >= unixMillisThreshold {
			f /= 1000
		}
		if f < 0 || f > maxUnixSeconds {
			return nil, &ConversionError{Type: TypeDate, Msg: "the number is outside Unix time from 1970 to 9999"}
		}
		sec, frac := math.Modf(f)
		t := time.Unix(int64(sec), int64(math.Round(frac*1e3))*1e6).UTC()
		return t.Format(time.RFC3339Nano), nil
	case bool:
		return nil, &ConversionError{Type: TypeDate, Msg: "a boolean is not a date"}
	}
	return nil, &ConversionError{Type: TypeDate, Msg: abbrev.Kind(v) + " is not a date"}
}
