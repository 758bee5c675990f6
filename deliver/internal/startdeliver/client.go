// Package startdeliver is deliver's client for Startdeliver's REST API: find,
// create and update users and customers, and record usage, as described in
// docs/api.md §7.
//
// One Client serves every account; credentials travel with each call as an
// Account. The client is HTTP calls, their errors and a per-account rate
// limiter: it retries retryable failures a few times in process (within the
// delivery's budget: longer waits are Pub/Sub's job) and slows each account
// down when Startdeliver answers 429. It remembers nothing about entities:
// the id cache belongs to the caller that knows when an id is right
// (delivery's applier). A Client is safe for concurrent use.
package startdeliver

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"go.opentelemetry.io/contrib/instrumentation/net/http/otelhttp"
	"go.opentelemetry.io/otel/attribute"
	"go.opentelemetry.io/otel/metric"
	"go.opentelemetry.io/otel/propagation"
	"go.opentelemetry.io/otel/trace"

	"github.com/startdeliver/segment-destination/deliver/internal/retry"
	"github.com/startdeliver/segment-destination/shared/failure"
	"github.com/startdeliver/segment-destination/shared/lookup"
	"github.com/startdeliver/segment-destination/shared/plan"
)

// ClassAPIURLRefused is the permanent failure of an account whose
// startdeliverApiUrl the allow-list refuses (Options.CheckBaseURL): its key
// is not sent.
const ClassAPIURLRefused = "api-url-refused"

// DefaultBaseURL is Startdeliver's production API (STARTDELIVER_API_URL's default).
const DefaultBaseURL = "https://app.startdeliver.com/api/v1"

// Retry configures the in-process retries of one call, within the policy
// of package delivery: only retryable failures are retried (see
// IsRetryable), with retry.Backoff pauses or the Retry-After Startdeliver
// asked for, and only while the pause and another attempt fit before the
// context's deadline (the delivery's budget); a Retry-After beyond that
// returns at once, still retryable. A call that creates something (POST) is
// retried only when Startdeliver cannot have acted on it: a 429, or a
// connection that was never made. Other failures of a create are returned
// at once, still retryable, so the redelivery finds before it creates again.
type Retry struct {
	// MaxAttempts is the most attempts per call, the first included (default 4).
	// 1 disables retries.
	MaxAttempts int
	// BaseDelay is the first back-off; it doubles per attempt with full jitter (default 100ms).
	BaseDelay time.Duration
	// MaxDelay caps one back-off (default 1s).
	MaxDelay time.Duration
	// MinAttempt is the least time left before the deadline worth another
	// attempt (default 500ms).
	MinAttempt time.Duration
	// Budget stands in for the deadline of a context that has none
	// (default 5s, delivery's default budget).
	Budget time.Duration
}

func (r Retry) withDefaults() Retry {
	if r.MaxAttempts <= 0 {
		r.MaxAttempts = 4
	}
	if r.BaseDelay <= 0 {
		r.BaseDelay = 100 * time.Millisecond
	}
	if r.MaxDelay <= 0 {
		r.MaxDelay = time.Second
	}
	if r.MinAttempt <= 0 {
		r.MinAttempt = 500 * time.Millisecond
	}
	if r.Budget <= 0 {
		r.Budget = 5 * time.Second
	}
	return r
}

// Options configures a Client. The zero value is production's defaults.
type Options struct {
	// DefaultBaseURL is the API base for accounts without their own
	// (STARTDELIVER_API_URL; default DefaultBaseURL).
	DefaultBaseURL string
	// HTTPClient sends the requests. Default: one client with an
	// OpenTelemetry transport (spans named "GET /user" with url.template
	// "/user"; query values redacted from url.full; W3C trace context
	// injected; the http.client.request.duration histogram by method,
	// url.template and status), connection reuse and AttemptTimeout per
	// attempt.
	HTTPClient *http.Client
	// AttemptTimeout bounds one HTTP attempt of the default HTTPClient (default 10s).
	AttemptTimeout time.Duration
	// TracerProvider, MeterProvider and Propagators feed the default
	// HTTPClient's transport; nil means the global ones.
	TracerProvider trace.TracerProvider
	MeterProvider  metric.MeterProvider
	Propagators    propagation.TextMapPropagator
	// Retry configures in-process retries.
	Retry Retry
	// RateLimit configures the per-account limiter.
	RateLimit RateLimit
	// MaxURLLength is the longest find URL sent as GET; longer ones go as
	// POST with X-HTTP-Method-Override: GET (default 7,500).
	MaxURLLength int
	// UserAgent is sent with every request (default "startdeliver-segment-destination").
	UserAgent string
	// Logger receives debug lines about retries and throttling (default: discard).
	// Lines name accounts by key hash only.
	Logger *slog.Logger
	// CheckBaseURL, when set, is called with an account's own base URL
	// before every call; an error refuses the call (permanent, class
	// ClassAPIURLRefused) so the key never goes there. deliver sets it to
	// the startdeliverApiUrl allow-list (account.APIURLPolicy.Check).
	CheckBaseURL func(raw string) error
}

// Client calls Startdeliver's API. Build it once with New and share it.
type Client struct {
	base      string
	http      *http.Client
	retry     Retry
	limiters  *limiters
	maxURL    int
	userAgent string
	log       *slog.Logger
	checkURL  func(string) error
}

// routeKey holds the call's "METHOD /template" in a request's context, for
// the transport's span name and attributes.
type routeKey struct{}

// urlTemplate is the route template of a request made by attempt ("/user/{id}").
func urlTemplate(r *http.Request) (string, bool) {
	route, ok := r.Context().Value(routeKey{}).(string)
	if !ok {
		return "", false
	}
	_, tmpl, _ := strings.Cut(route, " ")
	return tmpl, true
}

// New builds a Client from opts; zero fields take production defaults.
func New(opts Options) *Client {
	c := &Client{
		base:      strings.TrimRight(opts.DefaultBaseURL, "/"),
		http:      opts.HTTPClient,
		retry:     opts.Retry.withDefaults(),
		limiters:  newLimiters(opts.RateLimit),
		maxURL:    opts.MaxURLLength,
		userAgent: opts.UserAgent,
		log:       opts.Logger,
		checkURL:  opts.CheckBaseURL,
	}
	if c.base == "" {
		c.base = DefaultBaseURL
	}
	if c.http == nil {
		c.http = defaultHTTPClient(opts)
	} else {
		hc := *c.http
		c.http = &hc
	}
	// A redirect is never followed: it would take the key (the
	// Authorization header goes along to the same host) or the request
	// somewhere the allow-list did not check. The 3xx comes back as an
	// APIError, which is permanent.
	c.http.CheckRedirect = func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse }
	if c.maxURL <= 0 {
		c.maxURL = 7500
	}
	if c.userAgent == "" {
		c.userAgent = "startdeliver-segment-destination"
	}
	if c.log == nil {
		c.log = slog.New(slog.DiscardHandler)
	}
	return c
}

func defaultHTTPClient(opts Options) *http.Client {
	timeout := opts.AttemptTimeout
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	base := &http.Transport{
		Proxy: http.ProxyFromEnvironment,
		DialContext: (&net.Dialer{
			Timeout:   5 * time.Second,
			KeepAlive: 30 * time.Second,
		}).DialContext,
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   5 * time.Second,
		ResponseHeaderTimeout: timeout,
		ExpectContinueTimeout: time.Second,
	}
	otelOpts := []otelhttp.Option{
		otelhttp.WithSpanNameFormatter(func(_ string, r *http.Request) string {
			if route, ok := r.Context().Value(routeKey{}).(string); ok {
				return route
			}
			return r.Method
		}),
		// Call latency and status by route: templates keep the
		// cardinality small (ids stay out).
		otelhttp.WithMetricAttributesFn(func(r *http.Request) []attribute.KeyValue {
			if tmpl, ok := urlTemplate(r); ok {
				return []attribute.KeyValue{attribute.String("url.template", tmpl)}
			}
			return nil
		}),
	}
	if opts.TracerProvider != nil {
		otelOpts = append(otelOpts, otelhttp.WithTracerProvider(opts.TracerProvider))
	}
	if opts.MeterProvider != nil {
		otelOpts = append(otelOpts, otelhttp.WithMeterProvider(opts.MeterProvider))
	}
	if opts.Propagators != nil {
		otelOpts = append(otelOpts, otelhttp.WithPropagators(opts.Propagators))
	}
	inner := redactingTransport{base: base}
	return &http.Client{Transport: otelhttp.NewTransport(inner, otelOpts...), Timeout: timeout}
}

// redactingTransport runs inside the OpenTelemetry transport and replaces
// the span's url.full with a form whose query values are redacted: find
// URLs carry filter values (emails, user ids) that do not belong in traces.
// It also names the span's route template (url.template).
type redactingTransport struct{ base http.RoundTripper }

func (t redactingTransport) RoundTrip(r *http.Request) (*http.Response, error) {
	span := trace.SpanFromContext(r.Context())
	if tmpl, ok := urlTemplate(r); ok && span.IsRecording() {
		span.SetAttributes(attribute.String("url.template", tmpl))
	}
	if span.IsRecording() && r.URL.RawQuery != "" {
		u := *r.URL
		u.User = nil
		q := u.Query()
		for k := range q {
			q[k] = []string{"REDACTED"}
		}
		u.RawQuery = q.Encode()
		span.SetAttributes(attribute.String("url.full", u.String()))
	}
	return t.base.RoundTrip(r)
}

// call is one API request, before retries.
type call struct {
	method string
	route  string // template: "/user/{id}"
	path   string // actual: "/user/42"
	query  string // encoded query string, without "?"
	header http.Header
	body   any
	// creates marks a non-idempotent call (POST that creates).
	creates bool
}

func (c *Client) baseURL(acct Account) string {
	if acct.BaseURL != "" {
		return strings.TrimRight(acct.BaseURL, "/")
	}
	return c.base
}

// do runs a call with rate limiting and retries and decodes a 2xx JSON
// answer into out. Its errors are permanent (failure.IsPermanent) when
// retrying cannot help, and retryable otherwise.
func (c *Client) do(ctx context.Context, acct Account, cl call, out any) error {
	if acct.APIKey == "" {
		return failure.Permanent(ClassRefused, fmt.Errorf("startdeliver %s %s: %s has no API key", cl.method, cl.route, acct))
	}
	if acct.BaseURL != "" && c.checkURL != nil {
		if err := c.checkURL(acct.BaseURL); err != nil {
			return failure.Permanent(ClassAPIURLRefused, fmt.Errorf("startdeliver %s %s: account %s: startdeliverApiUrl refused: %w", cl.method, cl.route, acct.ShortID(), err))
		}
	}
	var body []byte
	if cl.body != nil {
		var err error
		if body, err = json.Marshal(cl.body); err != nil {
			return failure.Permanent(ClassRefused, fmt.Errorf("startdeliver %s %s: encode body: %w", cl.method, cl.route, err))
		}
	}
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, c.retry.Budget)
		defer cancel()
	}
	lim := c.limiters.get(acct.id())
	for attempt := 1; ; attempt++ {
		pause, ok, err := lim.wait(ctx, c.left(ctx))
		if err != nil {
			return fmt.Errorf("startdeliver %s %s: wait for rate limiter: %w", cl.method, cl.route, err)
		}
		if !ok {
			return fmt.Errorf("startdeliver %s %s: %w", cl.method, cl.route, &ThrottledError{Account: acct, RetryAfter: pause})
		}
		err = c.attempt(ctx, acct, cl, body, out)
		if err == nil {
			lim.succeeded()
			return nil
		}
		var ae *APIError
		if errors.As(err, &ae) && ae.StatusCode == http.StatusTooManyRequests {
			lim.throttled(ae.RetryAfter)
		}
		if ctx.Err() != nil {
			if errors.Is(err, ctx.Err()) {
				return fmt.Errorf("startdeliver %s %s: %w", cl.method, cl.route, err)
			}
			return fmt.Errorf("startdeliver %s %s: %w (last error: %w)", cl.method, cl.route, ctx.Err(), err)
		}
		if errors.As(err, &ae) && !ae.Retryable() {
			return failure.Permanent(ClassRejected, err)
		}
		if attempt >= c.retry.MaxAttempts || !c.mayRetry(cl, err) {
			return err
		}
		delay := retry.Backoff(attempt, c.retry.BaseDelay, c.retry.MaxDelay)
		if ra := RetryAfter(err); ra > delay {
			delay = ra
		}
		if !retry.Fits(ctx, delay, c.retry.MinAttempt) {
			// No time left in the delivery's budget: Pub/Sub redelivers later.
			return err
		}
		trace.SpanFromContext(ctx).AddEvent("retry", trace.WithAttributes(
			attribute.Int("attempt", attempt+1), attribute.String("call", cl.method+" "+cl.route), attribute.Int64("delay_ms", delay.Milliseconds())))
		c.log.DebugContext(ctx, "startdeliver call failed, retrying",
			"account", acct, "call", cl.method+" "+cl.route, "attempt", attempt, "delay", delay, "error", err)
		if serr := retry.Sleep(ctx, delay); serr != nil {
			return fmt.Errorf("startdeliver %s %s: %w (last error: %w)", cl.method, cl.route, serr, err)
		}
	}
}

// left is how long a call may still wait for the rate limiter: the time to
// ctx's deadline less one attempt's worth.
func (c *Client) left(ctx context.Context) time.Duration {
	deadline, _ := ctx.Deadline()
	return max(time.Until(deadline)-c.retry.MinAttempt, 0)
}

// mayRetry decides whether a failed attempt may be repeated in process.
func (c *Client) mayRetry(cl call, err error) bool {
	if !IsRetryable(err) {
		return false
	}
	if !cl.creates {
		return true
	}
	var ae *APIError
	if errors.As(err, &ae) {
		return ae.StatusCode == http.StatusTooManyRequests
	}
	var op *net.OpError
	return errors.As(err, &op) && op.Op == "dial"
}

// maxAnswer bounds how much of an answer is read.
const maxAnswer = 8 << 20

func (c *Client) attempt(ctx context.Context, acct Account, cl call, body []byte, out any) error {
	u := c.baseURL(acct) + cl.path
	if cl.query != "" {
		u += "?" + cl.query
	}
	var rd io.Reader
	if body != nil {
		rd = bytes.NewReader(body)
	}
	ctx = context.WithValue(ctx, routeKey{}, cl.method+" "+cl.route)
	req, err := http.NewRequestWithContext(ctx, cl.method, u, rd)
	if err != nil {
		// The URL is not printed: it may hold filter values.
		return fmt.Errorf("startdeliver %s %s: build request for %s", cl.method, cl.route, acct)
	}
	req.Header.Set("Authorization", acct.APIKey)
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", c.userAgent)
	if body != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for k, vs := range cl.header {
		req.Header[k] = vs
	}
	resp, err := c.http.Do(req)
	record(ctx, cl, resp)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &NetworkError{Method: cl.method, Route: cl.route, Err: stripURL(err, acct.APIKey)}
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(io.LimitReader(resp.Body, maxAnswer))
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &NetworkError{Method: cl.method, Route: cl.route, Err: fmt.Errorf("read answer: %w", stripURL(err, acct.APIKey))}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return &APIError{
			StatusCode: resp.StatusCode,
			Method:     cl.method,
			Route:      cl.route,
			Body:       excerpt(data, acct.APIKey),
			RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now()),
		}
	}
	if out == nil {
		return nil
	}
	dec := json.NewDecoder(bytes.NewReader(data))
	dec.UseNumber()
	if err := dec.Decode(out); err != nil {
		// The answer breaks the API's shape: asking again will not mend it.
		return failure.Permanent(ClassMalformed, fmt.Errorf("startdeliver %s %s: decode %d answer: %w", cl.method, cl.route, resp.StatusCode, err))
	}
	return nil
}

// stripURL drops the request URL (which may carry filter values) from a
// transport error and scrubs the key from what remains.
func stripURL(err error, key string) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		err = ue.Err
	}
	if key != "" && strings.Contains(err.Error(), key) {
		return errors.New(strings.ReplaceAll(err.Error(), key, "[REDACTED]"))
	}
	return err
}

// Find returns the first entity of kind whose field m.Field equals m.Value,
// or ErrNotFound.
func (c *Client) Find(ctx context.Context, acct Account, kind Kind, m plan.Match) (lookup.Entity, error) {
	if !kind.valid() {
		return nil, fmt.Errorf("startdeliver: find: unknown kind %q", kind)
	}
	if m.Field == "" {
		return nil, fmt.Errorf("startdeliver: find %s: no field to match on", kind)
	}
	q := map[string]any{"filter": map[string]any{m.Field: m.Value}, "limit": 1}
	raw, err := json.Marshal(q)
	if err != nil {
		return nil, fmt.Errorf("startdeliver: find %s: encode query: %w", kind, err)
	}
	cl := call{method: http.MethodGet, route: "/" + string(kind), path: "/" + string(kind), query: "query=" + url.QueryEscape(string(raw))}
	if len(c.baseURL(acct))+len(cl.path)+1+len(cl.query) > c.maxURL {
		cl = call{
			method: http.MethodPost, route: "/" + string(kind), path: "/" + string(kind),
			header: http.Header{"X-Http-Method-Override": {http.MethodGet}},
			body:   map[string]any{"query": q},
		}
	}
	var ans struct {
		Result []lookup.Entity `json:"result"`
	}
	if err := c.do(ctx, acct, cl, &ans); err != nil {
		return nil, err
	}
	if len(ans.Result) == 0 {
		return nil, fmt.Errorf("find %s by %s: %w", kind, m.Field, ErrNotFound)
	}
	if _, ok := ans.Result[0].ID(); !ok {
		return nil, failure.Permanent(ClassMalformed, fmt.Errorf("startdeliver: find %s by %s: answer has no numeric id", kind, m.Field))
	}
	return ans.Result[0], nil
}

// Create creates an entity of kind with fields and returns it, with its id.
// It is not idempotent: see Retry for when it is retried.
func (c *Client) Create(ctx context.Context, acct Account, kind Kind, f Fields) (lookup.Entity, error) {
	if !kind.valid() {
		return nil, fmt.Errorf("startdeliver: create: unknown kind %q", kind)
	}
	var e lookup.Entity
	cl := call{method: http.MethodPost, route: "/" + string(kind), path: "/" + string(kind), body: f, creates: true}
	if err := c.do(ctx, acct, cl, &e); err != nil {
		return nil, err
	}
	if _, ok := e.ID(); !ok {
		return nil, failure.Permanent(ClassMalformed, fmt.Errorf("startdeliver: create %s: answer has no numeric id", kind))
	}
	return e, nil
}

// Update PATCHes the given fields (send only what changed: lookup.Diff) on
// the entity with id and returns the entity. A 404 is ErrNotFound.
func (c *Client) Update(ctx context.Context, acct Account, kind Kind, id int64, f Fields) (lookup.Entity, error) {
	if !kind.valid() {
		return nil, fmt.Errorf("startdeliver: update: unknown kind %q", kind)
	}
	var e lookup.Entity
	cl := call{method: http.MethodPatch, route: "/" + string(kind) + "/{id}", path: "/" + string(kind) + "/" + strconv.FormatInt(id, 10), body: f}
	if err := c.do(ctx, acct, cl, &e); err != nil {
		return nil, err
	}
	return e, nil
}

// RecordUsage creates one usage record and returns Startdeliver's answer.
// A 404 (unknown user or customer id) is ErrNotFound: the caller's cached
// ids are stale.
func (c *Client) RecordUsage(ctx context.Context, acct Account, u Usage) (lookup.Entity, error) {
	if err := u.validate(); err != nil {
		return nil, failure.Permanent(ClassRefused, fmt.Errorf("startdeliver: %w", err))
	}
	var e lookup.Entity
	// Not marked creates: a failed usage post is posted again in process,
	// as a redelivery would post it (its externalId is the messageId).
	cl := call{method: http.MethodPost, route: "/usage", path: "/usage", body: u.body()}
	if err := c.do(ctx, acct, cl, &e); err != nil {
		return nil, err
	}
	return e, nil
}
