package startdeliver_test

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/failure"
	"github.com/startdeliver/segment-destination/shared/plan"
)

// TestCallTimeURLRefusal: an account whose startdeliverApiUrl the allow-list
// refuses (a document changed behind the accounts command's back) gets no
// request at all; the failure is permanent with its class.
func TestCallTimeURLRefusal(t *testing.T) {
	var hits atomic.Int64
	attacker := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		w.Write([]byte(`{"result":[]}`))
	}))
	defer attacker.Close()
	policy := account.APIURLPolicy{} // production: app.startdeliver.com only, no loopback
	c := startdeliver.New(startdeliver.Options{DefaultBaseURL: "http://127.0.0.1:1/api/v1", CheckBaseURL: policy.Check, Retry: fastRetry})
	acct := startdeliver.Account{APIKey: testKey, BaseURL: attacker.URL + "/api/v1"}
	_, err := c.Find(context.Background(), acct, startdeliver.KindUser, plan.Match{Field: "externalId", Value: "u1"})
	if err == nil {
		t.Fatal("Find() to a refused URL succeeded")
	}
	if !failure.IsPermanent(err) || failure.Class(err) != startdeliver.ClassAPIURLRefused {
		t.Fatalf("Find() error = %v (class %q), want permanent %s", err, failure.Class(err), startdeliver.ClassAPIURLRefused)
	}
	if strings.Contains(err.Error(), testKey) {
		t.Fatalf("error %q holds the key", err)
	}
	if n := hits.Load(); n != 0 {
		t.Fatalf("refused URL got %d requests", n)
	}

	// The same client still calls an allowed (here: loopback on
	// emulators) URL.
	srv := startdelivertest.NewServer(testKey)
	defer srv.Close()
	c = startdeliver.New(startdeliver.Options{CheckBaseURL: account.APIURLPolicy{Loopback: true}.Check, Retry: fastRetry})
	id := srv.AddUser(testKey, map[string]any{"x": 1})
	if _, err := c.Update(context.Background(), startdeliver.Account{APIKey: testKey, BaseURL: srv.URL()}, startdeliver.KindUser, id, startdeliver.Fields{}); err != nil {
		t.Fatalf("Update() at an allowed URL = %v", err)
	}
}

// TestRedirectRefused: a redirect from Startdeliver's URL is not followed,
// so neither the key nor the request reaches its target; the answer is a
// permanent failure.
func TestRedirectRefused(t *testing.T) {
	var leaked atomic.Int64
	target := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		leaked.Add(1)
		w.Write([]byte(`{"result":[]}`))
	}))
	defer target.Close()
	redirector := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, target.URL+r.URL.RequestURI(), http.StatusTemporaryRedirect)
	}))
	defer redirector.Close()
	for _, tc := range []struct {
		name string
		opts startdeliver.Options
	}{
		{"default HTTP client", startdeliver.Options{}},
		{"caller's HTTP client", startdeliver.Options{HTTPClient: &http.Client{}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tc.opts.DefaultBaseURL = redirector.URL + "/api/v1"
			tc.opts.Retry = fastRetry
			c := startdeliver.New(tc.opts)
			_, err := c.Find(context.Background(), startdeliver.Account{APIKey: testKey}, startdeliver.KindUser, plan.Match{Field: "externalId", Value: "u1"})
			var ae *startdeliver.APIError
			if !errors.As(err, &ae) || ae.StatusCode != http.StatusTemporaryRedirect || ae.Retryable() {
				t.Fatalf("Find() through a redirect = %v, want a permanent APIError 307", err)
			}
			if n := leaked.Load(); n != 0 {
				t.Fatalf("redirect target got %d requests", n)
			}
		})
	}
}
