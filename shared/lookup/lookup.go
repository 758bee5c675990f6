// Package lookup runs read-only finds against Startdeliver's REST API: the
// same search deliver makes before it creates or updates a user or customer
// (GET /user?query={"filter":{...},"limit":1}), so that ingest's explain
// endpoint can say "matches user 1234" or "would create" without writing
// anything. It never sends anything but GET.
//
// Diff is the rule that decides which fields an update PATCHes, shared by
// deliver (which sends the PATCH) and explain (which predicts it).
package lookup

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"github.com/startdeliver/segment-destination/shared/failure"
)

// Entity is a user or customer as Startdeliver answers it: top-level fields
// keyed by name or custom field alias, numbers as json.Number so that ids
// and values keep their exact text. It is the one answer type, for
// deliver's client and for explain.
type Entity map[string]any

// ID returns the entity's numeric id, or 0 and false when it has none (0 is
// no id). Startdeliver sends ids as JSON numbers; a numeric string is
// accepted too.
func (e Entity) ID() (int64, bool) {
	switch v := e["id"].(type) {
	case json.Number:
		i, err := v.Int64()
		return i, err == nil && i != 0
	case float64:
		return int64(v), v != 0 && v == float64(int64(v))
	case int64:
		return v, v != 0
	case int:
		return int64(v), v != 0
	case string:
		i, err := strconv.ParseInt(v, 10, 64)
		return i, err == nil && i != 0
	}
	return 0, false
}

// APIError is an answer other than 2xx. It holds neither the URL (filter
// values) nor the key.
type APIError struct {
	StatusCode int
	Route      string
}

func (e *APIError) Error() string {
	return fmt.Sprintf("startdeliver GET %s answered %d", e.Route, e.StatusCode)
}

// Retryable reports whether the same find could succeed later (408, 429,
// 5xx); any other answer (a 3xx included) is permanent.
func (e *APIError) Retryable() bool {
	return e.StatusCode == http.StatusRequestTimeout || e.StatusCode == http.StatusTooManyRequests || e.StatusCode >= 500
}

// ClassAPIURLRefused is the permanent failure of an account whose
// startdeliverApiUrl the allow-list refuses: its key is not sent (the class
// deliver's client gives the same refusal).
const ClassAPIURLRefused = "api-url-refused"

// Client finds entities. Build it once; safe for concurrent use.
type Client struct {
	http  *http.Client
	base  string
	check func(string) error
}

// New returns a Client sending through hc (which should carry a timeout and
// an OpenTelemetry transport) to defaultBase for accounts without their own
// startdeliverApiUrl. check, when not nil, vets an account's own base URL
// before every find (account.APIURLPolicy.Check): a refused one is a
// permanent error of class ClassAPIURLRefused and no request is sent.
// Redirects are never followed: they would carry the key elsewhere.
func New(hc *http.Client, defaultBase string, check func(string) error) *Client {
	c := *hc
	c.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	return &Client{http: &c, base: strings.TrimRight(defaultBase, "/"), check: check}
}

// maxURL is the longest find URL sent; deliver sends longer ones as a POST
// with a method override, which a read-only client does not.
const maxURL = 7500

// maxAnswer bounds how much of an answer is read.
const maxAnswer = 1 << 20

// Find returns the first entity of kind ("user" or "customer") whose field
// equals value; found is false when there is none. baseURL is the
// account's startdeliverApiUrl, or "" for the default.
func (c *Client) Find(ctx context.Context, apiKey, baseURL, kind, field string, value any) (_ Entity, found bool, _ error) {
	if kind != "user" && kind != "customer" {
		return nil, false, fmt.Errorf("find: unknown kind %q", kind)
	}
	base := c.base
	if baseURL != "" {
		if c.check != nil {
			if err := c.check(baseURL); err != nil {
				return nil, false, failure.Permanent(ClassAPIURLRefused, fmt.Errorf("find %s: startdeliverApiUrl refused: %w", kind, err))
			}
		}
		base = strings.TrimRight(baseURL, "/")
	}
	raw, err := json.Marshal(map[string]any{"filter": map[string]any{field: value}, "limit": 1})
	if err != nil {
		return nil, false, fmt.Errorf("find %s: encode query: %w", kind, err)
	}
	route := "/" + kind
	u := base + route + "?query=" + url.QueryEscape(string(raw))
	if len(u) > maxURL {
		return nil, false, fmt.Errorf("find %s by %s: match value too long for a read-only find", kind, field)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, u, nil)
	if err != nil {
		return nil, false, fmt.Errorf("find %s: build request", kind)
	}
	req.Header.Set("Authorization", apiKey)
	req.Header.Set("Accept", "application/json")
	resp, err := c.http.Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // the URL holds filter values
		}
		return nil, false, fmt.Errorf("find %s: %w", kind, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		return nil, false, fmt.Errorf("find %s: read answer: %w", kind, err)
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return nil, false, &APIError{StatusCode: resp.StatusCode, Route: route}
	}
	var ans struct {
		Result []Entity `json:"result"`
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(&ans); err != nil {
		return nil, false, fmt.Errorf("find %s: decode answer: %w", kind, err)
	}
	if len(ans.Result) == 0 {
		return nil, false, nil
	}
	if _, ok := ans.Result[0].ID(); !ok {
		return nil, false, fmt.Errorf("find %s: answer has no numeric id", kind)
	}
	return ans.Result[0], true, nil
}
