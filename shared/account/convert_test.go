package account

import (
	"encoding/json"
	"errors"
	"math"
	"strings"
	"testing"
)

func TestConvert(t *testing.T) {
	tests := []struct {
		in   any
		t    Type
		want any
	}{
		// text
		{"abc", TypeText, "abc"},
		{"", TypeText, ""},
		{true, TypeText, "true"},
		{false, TypeText, "false"},
		{json.Number("42"), TypeText, "42"},
		{json.Number("4.50"), TypeText, "4.50"},
		{json.Number("1e3"), TypeText, "1e3"},
		{1234567.0, TypeText, "1234567"},
		{0.1, TypeText, "0.1"},
		{1e20, TypeText, "100000000000000000000"},
		{1e21, TypeText, "1e+21"},
		{1e-7, TypeText, "1e-07"},
		{0.0, TypeText, "0"},
		{7, TypeText, "7"},
		{int64(-9), TypeText, "-9"},
		// number
		{json.Number("42"), TypeNumber, json.Number("42")},
		{json.Number("-3.5e2"), TypeNumber, json.Number("-3.5e2")},
		{" 42 ", TypeNumber, json.Number("42")},
		{"+7", TypeNumber, json.Number("7")},
		{"-3.5", TypeNumber, json.Number("-3.5")},
		{"1e3", TypeNumber, json.Number("1e3")},
		{2.5, TypeNumber, json.Number("2.5")},
		{3, TypeNumber, json.Number("3")},
		{int64(1) << 60, TypeNumber, json.Number("1152921504606846976")},
		// boolean
		{true, TypeBoolean, true},
		{false, TypeBoolean, false},
		{"true", TypeBoolean, true},
		{" FALSE ", TypeBoolean, false},
		{"1", TypeBoolean, true},
		{"0", TypeBoolean, false},
		{json.Number("1"), TypeBoolean, true},
		{json.Number("0.0"), TypeBoolean, false},
		{1.0, TypeBoolean, true},
		{0, TypeBoolean, false},
		// date
		{"2024-05-01T12:30:00.123456789Z", TypeDate, "2024-05-01T12:30:00.123456789Z"},
		{"2024-05-01T12:30:00+02:00", TypeDate, "2024-05-01T10:30:00Z"},
		{"2024-05-01T12:30:00+0200", TypeDate, "2024-05-01T10:30:00Z"},
		{"2024-05-01T12:30:00", TypeDate, "2024-05-01T12:30:00Z"},
		{"2024-05-01 12:30:00Z", TypeDate, "2024-05-01T12:30:00Z"},
		{"2024-05-01 12:30:00", TypeDate, "2024-05-01T12:30:00Z"},
		{"2024-05-01T12:30Z", TypeDate, "2024-05-01T12:30:00Z"},
		{"2024-05-01T12:30", TypeDate, "2024-05-01T12:30:00Z"},
		{" 2024-05-01 ", TypeDate, "2024-05-01T00:00:00Z"},
		{json.Number("1700000000"), TypeDate, "2023-11-14T22:13:20Z"},
		{json.Number("1700000000123"), TypeDate, "2023-11-14T22:13:20.123Z"},
		{1700000000.5, TypeDate, "2023-11-14T22:13:20.5Z"},
		{0, TypeDate, "1970-01-01T00:00:00Z"},
	}
	for _, tt := range tests {
		got, err := Convert(tt.in, tt.t)
		if err != nil {
			t.Errorf("Convert(%#v, %s) error: %v", tt.in, tt.t, err)
			continue
		}
		if got != tt.want {
			t.Errorf("Convert(%#v, %s) = %#v, want %#v", tt.in, tt.t, got, tt.want)
		}
	}
}

func TestConvertErrors(t *testing.T) {
	tests := []struct {
		in   any
		t    Type
		want string
	}{
		{map[string]any{}, TypeText, "cannot convert to text: an object has no text form"},
		{[]any{1}, TypeText, "cannot convert to text: an array has no text form"},
		{math.NaN(), TypeText, "cannot convert to text: the number is not finite"},
		{true, TypeNumber, "cannot convert to number: a boolean is not a number"},
		{"", TypeNumber, "cannot convert to number: empty string"},
		{"12abc", TypeNumber, "cannot convert to number: the string is not a decimal number"},
		{"0x10", TypeNumber, "cannot convert to number: the string is not a decimal number"},
		{"NaN", TypeNumber, "cannot convert to number: the string is not a decimal number"},
		{"Infinity", TypeNumber, "cannot convert to number: the string is not a decimal number"},
		{"1e999", TypeNumber, "cannot convert to number: the string is not a decimal number"},
		{"1,5", TypeNumber, "cannot convert to number: the string is not a decimal number"},
		{".5", TypeNumber, "cannot convert to number: the string is not a decimal number"},
		{math.Inf(1), TypeNumber, "cannot convert to number: the number is not finite"},
		{json.Number("1e999"), TypeNumber, "cannot convert to number: malformed number"},
		{map[string]any{}, TypeNumber, "cannot convert to number: an object is not a number"},
		{"yes", TypeBoolean, `cannot convert to boolean: the string is not "true", "false", "1" or "0"`},
		{json.Number("2"), TypeBoolean, "cannot convert to boolean: only the numbers 0 and 1 are booleans"},
		{[]any{}, TypeBoolean, "cannot convert to boolean: an array is not a boolean"},
		{"yesterday", TypeDate, "cannot convert to date: the string is not an ISO-8601 date or time"},
		{"2024-13-01", TypeDate, "cannot convert to date: the string is not an ISO-8601 date or time"},
		{"9999-12-31T23:00:00-05:00", TypeDate, "cannot convert to date: the string is not an ISO-8601 date or time"},
		{true, TypeDate, "cannot convert to date: a boolean is not a date"},
		{json.Number("-1"), TypeDate, "cannot convert to date: the number is outside Unix time from 1970 to 9999"},
		{json.Number("1e20"), TypeDate, "cannot convert to date: the number is outside Unix time from 1970 to 9999"},
		{"x", Type("num"), "cannot convert to num: unknown type"},
	}
	for _, tt := range tests {
		_, err := Convert(tt.in, tt.t)
		var ce *ConversionError
		if !errors.As(err, &ce) {
			t.Errorf("Convert(%#v, %s) error = %v, want *ConversionError", tt.in, tt.t, err)
			continue
		}
		if err.Error() != tt.want {
			t.Errorf("Convert(%#v, %s) error = %q, want %q", tt.in, tt.t, err, tt.want)
		}
		if s, ok := tt.in.(string); ok && len(s) > 3 && strings.Contains(err.Error(), s) {
			t.Errorf("Convert(%#v, %s) error %q echoes the value", tt.in, tt.t, err)
		}
	}
}
