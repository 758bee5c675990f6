// Package abbrev shortens strings and values for messages, log lines and
// attributes: a value quoted in an error, an error in a Pub/Sub attribute
// (which must be valid UTF-8 and has a size limit), an account id in a
// listing, a decoded JSON value named by its kind where its bytes must not
// be repeated.
package abbrev

import (
	"encoding/json"
	"fmt"
	"strings"
	"unicode/utf8"
)

// String returns s in at most n bytes of valid UTF-8: invalid bytes become
// U+FFFD, and a longer s is cut on a character boundary and ends with "…"
// (counted in n).
func String(s string, n int) string {
	s = strings.ToValidUTF8(s, "\uFFFD")
	if len(s) <= n {
		return s
	}
	const ellipsis = "…"
	cut, mark := n-len(ellipsis), ellipsis
	if cut < 0 {
		cut, mark = n, "" // no room for the mark
	}
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + mark
}

// IDLength is how many characters of an account id ID keeps: enough to
// tell accounts apart in messages and listings.
const IDLength = 12

// ID returns the first IDLength characters of an account id (the SHA-256 of
// its key, in hex).
func ID(id string) string {
	if len(id) > IDLength {
		return id[:IDLength]
	}
	return id
}

// Kind names a decoded JSON value by its kind ("a string", "an object",
// "null"), for a message that says what was wrong without repeating it.
func Kind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "a boolean"
	case json.Number, float64, int, int64:
		return "a number"
	case string:
		return "a string"
	case []any:
		return "an array"
	case map[string]any:
		return "an object"
	}
	return fmt.Sprintf("%T", v)
}
