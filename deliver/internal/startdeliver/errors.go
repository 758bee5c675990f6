package startdeliver

import (
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"strings"
	"time"
	"unicode/utf8"
)

// ErrNotFound reports that no entity matched: Find found nothing, or
// Startdeliver answered 404 for an id (errors.Is(apiErr, ErrNotFound) holds
// for a 404 *APIError). A caller holding a cached id that meets ErrNotFound
// should forget it and look the entity up again.
var ErrNotFound = errors.New("startdeliver: not found")

// maxBodyExcerpt bounds the answer text kept in an APIError.
const maxBodyExcerpt = 256

// APIError is a non-2xx answer from Startdeliver. The status code decides
// what to do: see Retryable.
type APIError struct {
	// StatusCode is the HTTP status of the answer.
	StatusCode int
	// Method and Route name the call, with the route as a template
	// ("PATCH /user/{id}"), never with query values.
	Method, Route string
	// Body is a short excerpt of the answer with the API key scrubbed.
	Body string
	// RetryAfter is the parsed Retry-After header (seconds or HTTP date),
	// zero when absent or unparsable.
	RetryAfter time.Duration
}

// Error describes the call and its answer without the API key.
func (e *APIError) Error() string {
	var b strings.Builder
	fmt.Fprintf(&b, "startdeliver %s %s: %d %s", e.Method, e.Route, e.StatusCode, http.StatusText(e.StatusCode))
	if e.RetryAfter > 0 {
		fmt.Fprintf(&b, " (retry after %s)", e.RetryAfter)
	}
	if e.Body != "" {
		fmt.Fprintf(&b, ": %s", e.Body)
	}
	return b.String()
}

// Retryable reports whether the same call may succeed later: 408, 429 and
// 5xx are retryable; every other status (400, 401, 403, 404, 422, ...) is
// permanent.
func (e *APIError) Retryable() bool {
	return e.StatusCode == http.StatusRequestTimeout ||
		e.StatusCode == http.StatusTooManyRequests ||
		e.StatusCode >= 500
}

// Is makes errors.Is(err, ErrNotFound) true for a 404 answer.
func (e *APIError) Is(target error) bool {
	return target == ErrNotFound && e.StatusCode == http.StatusNotFound
}

// NetworkError is a call that got no HTTP answer: connection refused or
// reset, DNS failure, or the per-attempt timeout. It is always retryable.
type NetworkError struct {
	// Method and Route name the call as in APIError.
	Method, Route string
	// Err is the transport's error, with the request URL stripped.
	Err error
}

// Error describes the call and the transport failure.
func (e *NetworkError) Error() string {
	return fmt.Sprintf("startdeliver %s %s: %v", e.Method, e.Route, e.Err)
}

// Unwrap returns the transport's error.
func (e *NetworkError) Unwrap() error { return e.Err }

// Retryable is always true for a network error.
func (e *NetworkError) Retryable() bool { return true }

// ThrottledError is returned without calling Startdeliver when the account
// was told to wait (a 429 with Retry-After) longer than the client's retry
// budget. It is retryable: redeliver the event after RetryAfter.
type ThrottledError struct {
	// Account names the throttled account (redacted when printed).
	Account Account
	// RetryAfter is how long the account remains paused.
	RetryAfter time.Duration
}

// Error describes the pause.
func (e *ThrottledError) Error() string {
	return fmt.Sprintf("startdeliver: %s rate limited for another %s", e.Account, e.RetryAfter.Round(time.Millisecond))
}

// Retryable is always true for a throttled call.
func (e *ThrottledError) Retryable() bool { return true }

// IsRetryable reports whether err, anywhere in its chain, is a failure that
// may succeed when tried again later: a retryable *APIError, a
// *NetworkError or a *ThrottledError. It is false for nil, permanent API
// errors and errors of unknown kind (including context cancellation, which
// is the caller's own decision).
func IsRetryable(err error) bool {
	var r interface{ Retryable() bool }
	return errors.As(err, &r) && r.Retryable()
}

// RetryAfter returns the wait Startdeliver asked for in err's chain, or 0.
func RetryAfter(err error) time.Duration {
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.RetryAfter
	}
	var te *ThrottledError
	if errors.As(err, &te) {
		return te.RetryAfter
	}
	return 0
}

// parseRetryAfter reads a Retry-After header: delta seconds or an HTTP date.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if secs, err := strconv.ParseInt(v, 10, 64); err == nil {
		if secs <= 0 {
			return 0
		}
		if secs > 24*3600 {
			secs = 24 * 3600
		}
		return time.Duration(secs) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return d
		}
	}
	return 0
}

// excerpt returns a short, printable piece of an answer body with every
// occurrence of secret replaced.
func excerpt(body []byte, secret string) string {
	s := string(body)
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "[REDACTED]")
	}
	s = strings.Join(strings.Fields(s), " ")
	if len(s) > maxBodyExcerpt {
		cut := maxBodyExcerpt
		for cut > 0 && !utf8.RuneStart(s[cut]) {
			cut--
		}
		s = s[:cut] + "…"
	}
	return strings.ToValidUTF8(s, "?")
}

// Failure classes of the client's permanent errors (failure.Class).
const (
	// ClassRejected: Startdeliver refused the call (400, 401, 403, 404,
	// 422, ...); the same call would be refused again.
	ClassRejected = "startdeliver-rejected"
	// ClassMalformed: a 2xx answer that breaks the API's shape (not JSON,
	// an entity without an id).
	ClassMalformed = "startdeliver-malformed"
	// ClassRefused: the client will not send the call (a usage record
	// without a user or name, a body that cannot be encoded).
	ClassRefused = "startdeliver-refused"
)
