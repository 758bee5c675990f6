package startdeliver_test

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
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"go.opentelemetry.io/otel/propagation"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/sdk/trace/tracetest"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/failure"
	"github.com/startdeliver/segment-destination/shared/lookup"
	"github.com/startdeliver/segment-destination/shared/plan"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

const testKey = "sd-test-key-0123456789abcdef"

// fastRetry keeps retry waits short so tests stay quick.
var fastRetry = startdeliver.Retry{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxDelay: 5 * time.Millisecond, MinAttempt: time.Millisecond}

func newTestClient(t *testing.T, opts startdeliver.Options) (*startdeliver.Client, *startdelivertest.Server, startdeliver.Account) {
	t.Helper()
	srv := startdelivertest.NewServer(testKey)
	t.Cleanup(srv.Close)
	if opts.Retry == (startdeliver.Retry{}) {
		opts.Retry = fastRetry
	}
	if opts.DefaultBaseURL == "" {
		opts.DefaultBaseURL = srv.URL()
	}
	return startdeliver.New(opts), srv, startdeliver.Account{APIKey: testKey}
}

func mustID(t *testing.T, e lookup.Entity) int64 {
	t.Helper()
	id, ok := e.ID()
	if !ok {
		t.Fatalf("entity %v has no id", e)
	}
	return id
}

func TestEntityCalls(t *testing.T) {
	ctx := context.Background()
	c, srv, acct := newTestClient(t, startdeliver.Options{})

	cust, err := c.Create(ctx, acct, startdeliver.KindCustomer, startdeliver.Fields{"name": "Acme", "customfieldCustomId": 42})
	if err != nil {
		t.Fatalf("Create(customer) error = %v", err)
	}
	custID := mustID(t, cust)
	user, err := c.Create(ctx, acct, startdeliver.KindUser, startdeliver.Fields{"email": "ada@example.com", "externalId": "u-1", "customer": custID})
	if err != nil {
		t.Fatalf("Create(user) error = %v", err)
	}
	userID := mustID(t, user)

	for _, m := range []plan.Match{{Field: "externalId", Value: "u-1"}, {Field: "email", Value: "ada@example.com"}, {Field: "customer", Value: custID}} {
		got, err := c.Find(ctx, acct, startdeliver.KindUser, m)
		if err != nil {
			t.Fatalf("Find(user, %v) error = %v", m, err)
		}
		if id := mustID(t, got); id != userID {
			t.Errorf("Find(user, %v) id = %d, want %d", m, id, userID)
		}
	}
	got, err := c.Find(ctx, acct, startdeliver.KindCustomer, plan.Match{Field: "customfieldCustomId", Value: 42})
	if err != nil || mustID(t, got) != custID {
		t.Fatalf("Find(customer by number) = %v, %v, want id %d", got, err, custID)
	}
	if _, err := c.Find(ctx, acct, startdeliver.KindUser, plan.Match{Field: "externalId", Value: "nobody"}); !errors.Is(err, startdeliver.ErrNotFound) {
		t.Errorf("Find(unknown) error = %v, want ErrNotFound", err)
	}

	got, err = c.Update(ctx, acct, startdeliver.KindUser, userID, startdeliver.Fields{})
	if err != nil || got["email"] != "ada@example.com" {
		t.Fatalf("Get(user %d) = %v, %v", userID, got, err)
	}
	if _, err := c.Update(ctx, acct, startdeliver.KindUser, 999999, startdeliver.Fields{}); !errors.Is(err, startdeliver.ErrNotFound) {
		t.Errorf("Get(unknown id) error = %v, want ErrNotFound", err)
	}

	updated, err := c.Update(ctx, acct, startdeliver.KindUser, userID, startdeliver.Fields{"name": "Ada"})
	if err != nil || updated["name"] != "Ada" || updated["email"] != "ada@example.com" {
		t.Fatalf("Update = %v, %v, want name Ada merged with email", updated, err)
	}
	srv.ResetCounters()
	if _, err := c.Update(ctx, acct, startdeliver.KindUser, userID, startdeliver.Fields{"name": "Ada L"}); err != nil {
		t.Fatalf("Update(name Ada L) error = %v", err)
	}
	if n := srv.Calls("PATCH /user/{id}"); n != 1 {
		t.Errorf("PATCH calls = %d, want 1", n)
	}

	if _, err := c.Update(ctx, acct, startdeliver.KindUser, 999999, startdeliver.Fields{"name": "x"}); !errors.Is(err, startdeliver.ErrNotFound) {
		t.Errorf("Update(unknown id) error = %v, want ErrNotFound", err)
	}
	users := srv.Users(testKey)
	if len(users) != 1 || users[0]["name"] != "Ada L" {
		t.Errorf("stand-in users = %v, want one named Ada L", users)
	}
}

func TestFindLongURLUsesMethodOverride(t *testing.T) {
	ctx := context.Background()
	c, srv, acct := newTestClient(t, startdeliver.Options{})
	long := strings.Repeat("é", 3000) // 6 bytes per rune once URL-encoded
	id := srv.AddUser(testKey, map[string]any{"externalId": long})

	got, err := c.Find(ctx, acct, startdeliver.KindUser, plan.Match{Field: "externalId", Value: long})
	if err != nil || mustID(t, got) != id {
		t.Fatalf("Find(long value) = %v, %v, want id %d", got, err, id)
	}
	reqs := srv.Requests()
	if len(reqs) != 1 || reqs[0].Method != http.MethodPost || reqs[0].Override != "GET" || reqs[0].RawQuery != "" {
		t.Errorf("requests = %+v, want one POST with X-HTTP-Method-Override: GET and no query string", reqs)
	}

	srv.ResetCounters()
	if _, err := c.Find(ctx, acct, startdeliver.KindUser, plan.Match{Field: "externalId", Value: "short"}); !errors.Is(err, startdeliver.ErrNotFound) {
		t.Fatalf("Find(short) error = %v, want ErrNotFound", err)
	}
	reqs = srv.Requests()
	if len(reqs) != 1 || reqs[0].Method != http.MethodGet || !strings.HasPrefix(reqs[0].RawQuery, "query=") {
		t.Errorf("requests = %+v, want one GET with ?query=", reqs)
	}
}

func TestRecordUsage(t *testing.T) {
	ctx := context.Background()
	c, srv, acct := newTestClient(t, startdeliver.Options{})
	custID := srv.AddCustomer(testKey, map[string]any{"name": "Acme"})
	userID := srv.AddUser(testKey, map[string]any{"externalId": "u-1", "customer": custID})
	ts := time.Date(2024, 5, 6, 7, 8, 9, 123456789, time.FixedZone("CEST", 2*3600))

	if _, err := c.RecordUsage(ctx, acct, startdeliver.Usage{
		User: userID, Customer: custID, Type: plan.UsageTrack, Name: "Order Completed",
		Timestamp: ts, Properties: map[string]any{"total": 12.5, "sku": "A"}, ExternalID: "msg-1",
	}); err != nil {
		t.Fatalf("RecordUsage(track) error = %v", err)
	}
	if _, err := c.RecordUsage(ctx, acct, startdeliver.Usage{
		User: userID, Type: plan.UsagePage, Name: "/pricing", Timestamp: ts, ExternalID: "msg-2",
	}); err != nil {
		t.Fatalf("RecordUsage(page) error = %v", err)
	}

	got := srv.Usage(testKey)
	for _, r := range got {
		delete(r, "id")
		delete(r, "createdAt")
	}
	want := []startdelivertest.Record{
		{"user": json.Number(fmt.Sprint(userID)), "customer": json.Number(fmt.Sprint(custID)), "type": "track", "name": "Order Completed",
			"timestamp": "2024-05-06T05:08:09.123456789Z", "properties": map[string]any{"total": json.Number("12.5"), "sku": "A"}, "externalId": "msg-1"},
		{"user": json.Number(fmt.Sprint(userID)), "type": "page", "name": "/pricing",
			"timestamp": "2024-05-06T05:08:09.123456789Z", "properties": map[string]any{}, "externalId": "msg-2"},
	}
	if diff := cmp.Diff(want, got); diff != "" {
		t.Errorf("stored usage mismatch (-want +got):\n%s", diff)
	}

	_, err := c.RecordUsage(ctx, acct, startdeliver.Usage{User: 999999, Type: plan.UsageTrack, Name: "x", Timestamp: ts})
	if !errors.Is(err, startdeliver.ErrNotFound) {
		t.Errorf("RecordUsage(unknown user) error = %v, want ErrNotFound", err)
	}
	srv.ResetCounters()
	for _, u := range []startdeliver.Usage{
		{Type: plan.UsageTrack, Name: "x", Timestamp: ts},
		{User: userID, Type: "identify", Name: "x", Timestamp: ts},
		{User: userID, Type: plan.UsageTrack, Timestamp: ts},
		{User: userID, Type: plan.UsageTrack, Name: "x"},
	} {
		if _, err := c.RecordUsage(ctx, acct, u); err == nil || startdeliver.IsRetryable(err) {
			t.Errorf("RecordUsage(%+v) error = %v, want a permanent validation error", u, err)
		}
	}
	if n := srv.TotalCalls(); n != 0 {
		t.Errorf("invalid usage records made %d calls, want 0", n)
	}
}

func TestErrorClasses(t *testing.T) {
	tests := []struct {
		name      string
		fault     startdelivertest.Fault
		key       string
		status    int
		retryable bool
	}{
		{name: "400", fault: startdelivertest.Fault{Status: 400}, status: 400},
		{name: "401 unknown key", key: "not-a-known-key", status: 401},
		{name: "403", fault: startdelivertest.Fault{Status: 403}, status: 403},
		{name: "404", fault: startdelivertest.Fault{Status: 404}, status: 404},
		{name: "422", fault: startdelivertest.Fault{Status: 422}, status: 422},
		{name: "408", fault: startdelivertest.Fault{Status: 408}, status: 408, retryable: true},
		{name: "429", fault: startdelivertest.Fault{Status: 429}, status: 429, retryable: true},
		{name: "500", fault: startdelivertest.Fault{Status: 500}, status: 500, retryable: true},
		{name: "502", fault: startdelivertest.Fault{Status: 502}, status: 502, retryable: true},
		{name: "503", fault: startdelivertest.Fault{Status: 503}, status: 503, retryable: true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, srv, acct := newTestClient(t, startdeliver.Options{RateLimit: startdeliver.RateLimit{Disabled: true}})
			if tt.key != "" {
				acct.APIKey = tt.key
			} else {
				srv.FailFraction(1, tt.fault)
			}
			_, err := c.Update(context.Background(), acct, startdeliver.KindUser, 1, startdeliver.Fields{})
			var ae *startdeliver.APIError
			if !errors.As(err, &ae) || ae.StatusCode != tt.status {
				t.Fatalf("Update() error = %v, want *APIError with status %d", err, tt.status)
			}
			if ae.Method != "PATCH" || ae.Route != "/user/{id}" {
				t.Errorf("APIError names %s %s, want PATCH /user/{id}", ae.Method, ae.Route)
			}
			if got := startdeliver.IsRetryable(err); got != tt.retryable {
				t.Errorf("IsRetryable(%v) = %v, want %v", err, got, tt.retryable)
			}
			wantCalls := 1
			if tt.retryable {
				wantCalls = fastRetry.MaxAttempts
			}
			if n := srv.TotalCalls(); n != wantCalls {
				t.Errorf("calls = %d, want %d (retries only for retryable errors)", n, wantCalls)
			}
		})
	}
}

func TestRetryRecoversFromBriefFault(t *testing.T) {
	c, srv, acct := newTestClient(t, startdeliver.Options{})
	id := srv.AddUser(testKey, map[string]any{"externalId": "u"})
	srv.FailNext(2, startdelivertest.Fault{Status: 503})
	if got, err := c.Update(context.Background(), acct, startdeliver.KindUser, id, startdeliver.Fields{}); err != nil || mustID(t, got) != id {
		t.Fatalf("Update() after 2 faults = %v, %v, want the user", got, err)
	}
	if n := srv.Calls("PATCH /user/{id}"); n != 3 {
		t.Errorf("calls = %d, want 3", n)
	}
}

func TestCreateRetriedOnlyWhenSafe(t *testing.T) {
	tests := []struct {
		name      string
		fault     startdelivertest.Fault
		wantCalls int
		wantErr   bool
	}{
		{name: "500 may have created: not repeated", fault: startdelivertest.Fault{Status: 500}, wantCalls: 1, wantErr: true},
		{name: "429 did not create: repeated", fault: startdelivertest.Fault{Status: 429}, wantCalls: 2},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, srv, acct := newTestClient(t, startdeliver.Options{})
			tt.fault.Route = "POST /user"
			srv.FailNext(1, tt.fault)
			_, err := c.Create(context.Background(), acct, startdeliver.KindUser, startdeliver.Fields{"externalId": "u"})
			if (err != nil) != tt.wantErr {
				t.Fatalf("Create() error = %v, want error %v", err, tt.wantErr)
			}
			if err != nil && !startdeliver.IsRetryable(err) {
				t.Errorf("IsRetryable(%v) = false, want true (the caller retries later)", err)
			}
			if n := srv.Calls("POST /user"); n != tt.wantCalls {
				t.Errorf("POST /user calls = %d, want %d", n, tt.wantCalls)
			}
		})
	}
}

func TestRetryAfter(t *testing.T) {
	ctx := context.Background()
	t.Run("exposed", func(t *testing.T) {
		c, srv, acct := newTestClient(t, startdeliver.Options{Retry: startdeliver.Retry{MaxAttempts: 1}})
		srv.FailNext(1, startdelivertest.Fault{Status: 429, RetryAfter: "7"})
		_, err := c.Update(ctx, acct, startdeliver.KindUser, 1, startdeliver.Fields{})
		var ae *startdeliver.APIError
		if !errors.As(err, &ae) || ae.RetryAfter != 7*time.Second || startdeliver.RetryAfter(err) != 7*time.Second {
			t.Fatalf("Update() error = %v, want 429 with RetryAfter 7s", err)
		}
	})
	t.Run("HTTP date", func(t *testing.T) {
		c, srv, acct := newTestClient(t, startdeliver.Options{Retry: startdeliver.Retry{MaxAttempts: 1}})
		srv.FailNext(1, startdelivertest.Fault{Status: 503, RetryAfter: time.Now().Add(time.Hour).UTC().Format(http.TimeFormat)})
		_, err := c.Update(ctx, acct, startdeliver.KindUser, 1, startdeliver.Fields{})
		if ra := startdeliver.RetryAfter(err); ra < 58*time.Minute || ra > time.Hour {
			t.Fatalf("RetryAfter(%v) = %v, want about 1h", err, ra)
		}
	})
	t.Run("honoured within budget", func(t *testing.T) {
		c, srv, acct := newTestClient(t, startdeliver.Options{})
		id := srv.AddUser(testKey, map[string]any{"externalId": "u"})
		srv.FailNext(1, startdelivertest.Fault{Status: 429, RetryAfter: "1"})
		start := time.Now()
		if _, err := c.Update(ctx, acct, startdeliver.KindUser, id, startdeliver.Fields{}); err != nil {
			t.Fatalf("Update() error = %v, want success after waiting", err)
		}
		if waited := time.Since(start); waited < time.Second {
			t.Errorf("Update() returned after %v, want it to wait the 1s Retry-After", waited)
		}
	})
	t.Run("beyond budget pauses the account", func(t *testing.T) {
		c, srv, acct := newTestClient(t, startdeliver.Options{})
		srv.FailNext(1, startdelivertest.Fault{Status: 429, RetryAfter: "60"})
		// The budget is the context's deadline (a delivery's).
		ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
		defer cancel()
		_, err := c.Update(ctx, acct, startdeliver.KindUser, 1, startdeliver.Fields{})
		var ae *startdeliver.APIError
		if !errors.As(err, &ae) || ae.StatusCode != 429 {
			t.Fatalf("Update() error = %v, want the 429 at once", err)
		}
		// The account stays paused: the next call fails without reaching Startdeliver.
		_, err = c.Update(ctx, acct, startdeliver.KindUser, 1, startdeliver.Fields{})
		var te *startdeliver.ThrottledError
		if !errors.As(err, &te) || !startdeliver.IsRetryable(err) || te.RetryAfter < 50*time.Second {
			t.Fatalf("second Update() error = %v, want a retryable *ThrottledError of about 60s", err)
		}
		if n := srv.TotalCalls(); n != 1 {
			t.Errorf("calls = %d, want 1", n)
		}
		// Another account is not paused.
		other := startdeliver.Account{APIKey: "other-key"}
		srv.AddKey("other-key")
		if _, err := c.Update(ctx, other, startdeliver.KindUser, 1, startdeliver.Fields{}); !errors.Is(err, startdeliver.ErrNotFound) {
			t.Errorf("Update() for another account error = %v, want a 404 from the stand-in", err)
		}
	})
}

func TestNetworkErrors(t *testing.T) {
	ctx := context.Background()
	t.Run("connection refused", func(t *testing.T) {
		l, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		addr := l.Addr().String()
		l.Close()
		c := startdeliver.New(startdeliver.Options{DefaultBaseURL: "http://" + addr + "/api/v1", Retry: fastRetry})
		_, err = c.Update(ctx, startdeliver.Account{APIKey: testKey}, startdeliver.KindUser, 1, startdeliver.Fields{})
		var ne *startdeliver.NetworkError
		if !errors.As(err, &ne) || !startdeliver.IsRetryable(err) {
			t.Fatalf("Update() error = %v, want a retryable *NetworkError", err)
		}
	})
	t.Run("timeout", func(t *testing.T) {
		c, srv, acct := newTestClient(t, startdeliver.Options{AttemptTimeout: 50 * time.Millisecond})
		srv.FailFraction(1, startdelivertest.Fault{Hang: true})
		_, err := c.Update(ctx, acct, startdeliver.KindUser, 1, startdeliver.Fields{})
		var ne *startdeliver.NetworkError
		if !errors.As(err, &ne) || !startdeliver.IsRetryable(err) {
			t.Fatalf("Update() error = %v, want a retryable *NetworkError", err)
		}
		if n := srv.TotalCalls(); n != fastRetry.MaxAttempts {
			t.Errorf("calls = %d, want %d (timeouts are retried)", n, fastRetry.MaxAttempts)
		}
	})
	t.Run("per-account base URL", func(t *testing.T) {
		srv := startdelivertest.NewServer(testKey)
		defer srv.Close()
		c := startdeliver.New(startdeliver.Options{DefaultBaseURL: "http://127.0.0.1:1/api/v1", Retry: startdeliver.Retry{MaxAttempts: 1}})
		id := srv.AddUser(testKey, map[string]any{"x": 1})
		if _, err := c.Update(ctx, startdeliver.Account{APIKey: testKey, BaseURL: srv.URL() + "/"}, startdeliver.KindUser, id, startdeliver.Fields{}); err != nil {
			t.Fatalf("Update() with account BaseURL error = %v", err)
		}
	})
}

func TestContextCancellation(t *testing.T) {
	c, srv, acct := newTestClient(t, startdeliver.Options{})
	t.Run("already cancelled", func(t *testing.T) {
		ctx, cancel := context.WithCancel(context.Background())
		cancel()
		srv.ResetCounters()
		_, err := c.Find(ctx, acct, startdeliver.KindUser, plan.Match{Field: "email", Value: "a@b"})
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("Find() error = %v, want context.Canceled", err)
		}
		if n := srv.TotalCalls(); n != 0 {
			t.Errorf("calls = %d, want 0", n)
		}
	})
	t.Run("during a hanging call", func(t *testing.T) {
		srv.FailFraction(1, startdelivertest.Fault{Hang: true})
		defer srv.ClearFaults()
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := c.Find(ctx, acct, startdeliver.KindUser, plan.Match{Field: "email", Value: "a@b"})
			errc <- err
		}()
		waitfor.True(t, "the condition", func() bool { return srv.Calls("GET /user") > 0 })
		cancel()
		if err := <-errc; !errors.Is(err, context.Canceled) {
			t.Fatalf("Find() error = %v, want context.Canceled", err)
		}
	})
	t.Run("during back-off", func(t *testing.T) {
		// The transport hands the client a fully read answer and only then
		// says so: cancelling after that cannot race the first attempt.
		answered := make(chan struct{}, 1)
		hc := &http.Client{Transport: roundTripFunc(func(r *http.Request) (*http.Response, error) {
			resp, err := http.DefaultTransport.RoundTrip(r)
			if err != nil {
				return nil, err
			}
			b, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err != nil {
				return nil, err
			}
			resp.Body = io.NopCloser(bytes.NewReader(b))
			select {
			case answered <- struct{}{}:
			default:
			}
			return resp, nil
		})}
		c := startdeliver.New(startdeliver.Options{DefaultBaseURL: srv.URL(), HTTPClient: hc, Retry: startdeliver.Retry{MaxAttempts: 5, BaseDelay: time.Hour, MaxDelay: time.Hour, MinAttempt: time.Millisecond, Budget: 10 * time.Hour}})
		srv.FailFraction(1, startdelivertest.Fault{Status: 500})
		defer srv.ClearFaults()
		srv.ResetCounters()
		ctx, cancel := context.WithCancel(context.Background())
		errc := make(chan error, 1)
		go func() {
			_, err := c.Update(ctx, acct, startdeliver.KindUser, 1, startdeliver.Fields{})
			errc <- err
		}()
		<-answered
		cancel()
		err := <-errc
		var ae *startdeliver.APIError
		if !errors.Is(err, context.Canceled) || !errors.As(err, &ae) {
			t.Fatalf("Update() error = %v, want context.Canceled wrapping the last 500", err)
		}
	})
}

func TestTracePropagationAndSpanNames(t *testing.T) {
	rec := tracetest.NewSpanRecorder()
	tp := sdktrace.NewTracerProvider(sdktrace.WithSpanProcessor(rec))
	defer tp.Shutdown(context.Background())
	c, srv, acct := newTestClient(t, startdeliver.Options{TracerProvider: tp, Propagators: propagation.TraceContext{}})

	ctx, parent := tp.Tracer("test").Start(context.Background(), "event")
	_, _ = c.Find(ctx, acct, startdeliver.KindUser, plan.Match{Field: "email", Value: "secret-ish@example.com"})
	id := srv.AddUser(testKey, map[string]any{"a": 1})
	_, _ = c.Update(ctx, acct, startdeliver.KindUser, id, startdeliver.Fields{"a": 2})
	parent.End()

	reqs := srv.Requests()
	if len(reqs) != 2 {
		t.Fatalf("requests = %d, want 2", len(reqs))
	}
	traceID := parent.SpanContext().TraceID().String()
	for _, r := range reqs {
		if !strings.Contains(r.Traceparent, traceID) {
			t.Errorf("%s traceparent = %q, want trace %s", r.Route, r.Traceparent, traceID)
		}
	}
	var names []string
	for _, s := range rec.Ended() {
		if s.Name() != "event" {
			names = append(names, s.Name())
		}
		for _, a := range s.Attributes() {
			if v := a.Value.Emit(); strings.Contains(v, "secret-ish") || strings.Contains(v, testKey) {
				t.Errorf("span %s attribute %s = %q holds a filter value or the key", s.Name(), a.Key, v)
			}
			if a.Key == "url.full" && s.Name() == "GET /user" && !strings.Contains(a.Value.Emit(), "query=REDACTED") {
				t.Errorf("span %s url.full = %q, want query=REDACTED", s.Name(), a.Value.Emit())
			}
		}
	}
	if diff := cmp.Diff([]string{"GET /user", "PATCH /user/{id}"}, names); diff != "" {
		t.Errorf("client span names (-want +got):\n%s", diff)
	}
}

func TestKeyNeverLeaks(t *testing.T) {
	var logs bytes.Buffer
	logger := slog.New(slog.NewJSONHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	c, srv, acct := newTestClient(t, startdeliver.Options{Logger: logger})
	ctx := context.Background()
	var texts []string
	record := func(err error) {
		if err != nil {
			texts = append(texts, err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err))
		}
	}

	srv.FailNext(3, startdelivertest.Fault{Status: 500, Body: `{"message":"bad key ` + testKey + `"}`})
	_, err := c.Update(ctx, acct, startdeliver.KindUser, 1, startdeliver.Fields{})
	record(err)
	var ae *startdeliver.APIError
	if !errors.As(err, &ae) || !strings.Contains(ae.Body, "[REDACTED]") {
		t.Errorf("APIError body = %q, want the key scrubbed", ae.Body)
	}
	srv.FailNext(1, startdelivertest.Fault{Status: 429, RetryAfter: "60"})
	_, err = c.Update(ctx, acct, startdeliver.KindUser, 1, startdeliver.Fields{})
	record(err)
	_, err = c.Update(ctx, acct, startdeliver.KindUser, 1, startdeliver.Fields{}) // throttled
	record(err)
	_, err = c.Update(ctx, startdeliver.Account{APIKey: testKey + "-unknown"}, startdeliver.KindUser, 1, startdeliver.Fields{})
	record(err)
	_, err = c.Update(ctx, startdeliver.Account{APIKey: testKey, BaseURL: "http://127.0.0.1:1/api/v1"}, startdeliver.KindUser, 1, startdeliver.Fields{})
	record(err)
	_, err = c.Update(ctx, startdeliver.Account{APIKey: testKey, BaseURL: "http://127.0.0.1:1/\x7f"}, startdeliver.KindUser, 1, startdeliver.Fields{})
	record(err)
	logger.Info("account", "acct", acct)
	texts = append(texts, fmt.Sprint(acct), fmt.Sprintf("%v %+v %#v %s %q", acct, acct, acct, acct, acct), logs.String())

	if len(texts) < 10 || !strings.Contains(logs.String(), "retrying") {
		t.Fatalf("test captured too little (%d texts, logs %q)", len(texts), logs.String())
	}
	for _, s := range texts {
		if strings.Contains(s, testKey) {
			t.Errorf("text contains the API key: %s", s)
		}
	}
}

func TestRateLimiterSlowsDuring429Storm(t *testing.T) {
	// The same storm, with and without the limiter: the limiter must cut the
	// number of requests Startdeliver receives in the same time.
	const window = 400 * time.Millisecond
	storm := func(rl startdeliver.RateLimit) (calls int) {
		srv := startdelivertest.NewServer(testKey)
		defer srv.Close()
		c := startdeliver.New(startdeliver.Options{DefaultBaseURL: srv.URL(), Retry: fastRetry, RateLimit: rl})
		acct := startdeliver.Account{APIKey: testKey}
		srv.FailFraction(1, startdelivertest.Fault{Status: 429})
		ctx, cancel := context.WithTimeout(context.Background(), window)
		defer cancel()
		var wg sync.WaitGroup
		for range 8 {
			wg.Go(func() {
				for ctx.Err() == nil {
					_, _ = c.Update(ctx, acct, startdeliver.KindUser, 1, startdeliver.Fields{})
				}
			})
		}
		wg.Wait()
		return srv.TotalCalls()
	}
	unlimited := storm(startdeliver.RateLimit{Disabled: true})
	limited := storm(startdeliver.RateLimit{})
	t.Logf("requests in %v: %d without limiter, %d with", window, unlimited, limited)
	if limited*4 > unlimited {
		t.Errorf("with limiter %d requests, want under a quarter of the %d without", limited, unlimited)
	}
}

// roundTripFunc adapts a function to http.RoundTripper.
type roundTripFunc func(*http.Request) (*http.Response, error)

func (f roundTripFunc) RoundTrip(r *http.Request) (*http.Response, error) { return f(r) }

// TestRefusedAndMalformedArePermanent: a usage the client will not send,
// and answers that break the API's shape, are permanent with their class.
func TestRefusedAndMalformedArePermanent(t *testing.T) {
	ctx := context.Background()
	c, srv, acct := newTestClient(t, startdeliver.Options{})
	_, err := c.RecordUsage(ctx, acct, startdeliver.Usage{Type: "track", Name: "e"}) // no user
	if !failure.IsPermanent(err) || failure.Class(err) != startdeliver.ClassRefused || srv.TotalCalls() != 0 {
		t.Errorf("RecordUsage(no user) = %v (class %q, %d calls), want permanent %q and no call", err, failure.Class(err), srv.TotalCalls(), startdeliver.ClassRefused)
	}
	srv.FailNext(1, startdelivertest.Fault{Status: 200, Body: "not json"})
	_, err = c.Find(ctx, acct, startdeliver.KindUser, plan.Match{Field: "externalId", Value: "u"})
	if !failure.IsPermanent(err) || failure.Class(err) != startdeliver.ClassMalformed {
		t.Errorf("Find(2xx not JSON) = %v (class %q), want permanent %q", err, failure.Class(err), startdeliver.ClassMalformed)
	}
	srv.FailNext(1, startdelivertest.Fault{Status: 400})
	_, err = c.Find(ctx, acct, startdeliver.KindUser, plan.Match{Field: "externalId", Value: "u"})
	var ae *startdeliver.APIError
	if !failure.IsPermanent(err) || failure.Class(err) != startdeliver.ClassRejected || !errors.As(err, &ae) {
		t.Errorf("Find(400) = %v (class %q), want a permanent *APIError of class %q", err, failure.Class(err), startdeliver.ClassRejected)
	}
}
