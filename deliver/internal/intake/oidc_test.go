package intake

import (
	"context"
	"crypto"
	"crypto/rand"
	"crypto/rsa"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"io"
	"math/big"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/api/idtoken"
	"google.golang.org/api/option"

	"github.com/startdeliver/segment-destination/deliver/internal/delivery"
)

const (
	testAudience = "https://deliver-abc-ew.a.run.app"
	testPushSA   = "pubsub-push@proj.iam.gserviceaccount.com"
)

// googleCerts stands in for Google's certificate endpoint: a transport that
// answers idtoken's fetch of https://www.googleapis.com/oauth2/v3/certs with
// the test key, so the real idtoken.Validator checks signatures made here.
// Nothing leaves the process.
type googleCerts struct {
	key     *rsa.PrivateKey
	fetches atomic.Int64
}

func (g *googleCerts) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.URL.String() != "https://www.googleapis.com/oauth2/v3/certs" {
		return &http.Response{StatusCode: http.StatusNotFound, Body: io.NopCloser(strings.NewReader("")), Request: r}, nil
	}
	g.fetches.Add(1)
	b64 := base64.RawURLEncoding.EncodeToString
	jwks, _ := json.Marshal(map[string]any{"keys": []map[string]string{{
		"kty": "RSA", "alg": "RS256", "use": "sig", "kid": "test-kid",
		"n": b64(g.key.N.Bytes()), "e": b64(big.NewInt(int64(g.key.E)).Bytes()),
	}}})
	return &http.Response{StatusCode: http.StatusOK, Header: http.Header{"Content-Type": {"application/json"}},
		Body: io.NopCloser(strings.NewReader(string(jwks))), Request: r}, nil
}

// sign makes an RS256 JWT with the test key (or another key) over claims.
func sign(t *testing.T, key *rsa.PrivateKey, claims map[string]any) string {
	t.Helper()
	b64 := base64.RawURLEncoding.EncodeToString
	h, _ := json.Marshal(map[string]string{"alg": "RS256", "typ": "JWT", "kid": "test-kid"})
	p, _ := json.Marshal(claims)
	signed := b64(h) + "." + b64(p)
	sum := sha256.Sum256([]byte(signed))
	sig, err := rsa.SignPKCS1v15(rand.Reader, key, crypto.SHA256, sum[:])
	if err != nil {
		t.Fatal(err)
	}
	return signed + "." + b64(sig)
}

func goodClaims() map[string]any {
	now := time.Now()
	return map[string]any{
		"iss": "https://accounts.google.com", "aud": testAudience, "sub": "1234",
		"email": testPushSA, "email_verified": true,
		"iat": now.Unix(), "exp": now.Add(time.Hour).Unix(),
	}
}

type countingProcessor struct{ n atomic.Int64 }

func (c *countingProcessor) Process(context.Context, delivery.Message) delivery.Result {
	c.n.Add(1)
	return delivery.Result{Decision: delivery.Ack, Outcome: delivery.OutcomeDelivered}
}

// TestPushAndCloudEventAuth: the push endpoint and the CloudEvent endpoint
// take only a Google-signed token for the audience, from Google's issuer,
// with the push service account's verified email; every refusal is the same
// 401 body, without the reason.
func TestPushAndCloudEventAuth(t *testing.T) {
	key, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	otherKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	certs := &googleCerts{key: key}
	v, err := idtoken.NewValidator(context.Background(), option.WithHTTPClient(&http.Client{Transport: certs}))
	if err != nil {
		t.Fatal(err)
	}
	opts := PushOptions{Audience: testAudience, ServiceAccount: testPushSA, Validator: GoogleValidator{Tokens: v}}

	with := func(f func(c map[string]any)) string {
		c := goodClaims()
		f(c)
		return "Bearer " + sign(t, key, c)
	}
	tests := []struct {
		name string
		auth string
		ok   bool
	}{
		{"valid", with(func(map[string]any) {}), true},
		{"valid, issuer without scheme", with(func(c map[string]any) { c["iss"] = "accounts.google.com" }), true},
		{"missing", "", false},
		{"not bearer", "Basic eDp5", false},
		{"not a JWT", "Bearer not-a-token", false},
		{"wrong audience", with(func(c map[string]any) { c["aud"] = "https://other.a.run.app" }), false},
		{"wrong issuer", with(func(c map[string]any) { c["iss"] = "https://evil.example" }), false},
		{"wrong service account", with(func(c map[string]any) { c["email"] = "attacker@evil.iam.gserviceaccount.com" }), false},
		{"unverified email", with(func(c map[string]any) { c["email_verified"] = false }), false},
		{"email_verified missing", with(func(c map[string]any) { delete(c, "email_verified") }), false},
		{"email_verified as a string", with(func(c map[string]any) { c["email_verified"] = "true" }), false},
		{"no email", with(func(c map[string]any) { delete(c, "email") }), false},
		{"expired", with(func(c map[string]any) { c["exp"] = time.Now().Add(-time.Minute).Unix() }), false},
		{"signed by another key", "Bearer " + sign(t, otherKey, goodClaims()), false},
	}
	pushBody := `{"message":{"data":"e30=","messageId":"1"},"subscription":"s"}`
	ceBody := `{"subscription":"s","message":{"data":"e30=","messageId":"1"}}`
	for _, tc := range tests {
		for _, ep := range []struct {
			name string
			h    func(p processor) http.Handler
			body string
			hdr  map[string]string
		}{
			{"push", func(p processor) http.Handler { return PushHandler(p, opts) }, pushBody, nil},
			{"cloudevent", func(p processor) http.Handler {
				return RequireToken(opts, CloudEventHandler(CloudEventFunc(p, 0)))
			}, ceBody, map[string]string{"ce-specversion": "1.0", "ce-id": "1", "ce-source": "//pubsub.googleapis.com/x",
				"ce-type": "google.cloud.pubsub.topic.v1.messagePublished"}},
		} {
			t.Run(tc.name+"/"+ep.name, func(t *testing.T) {
				p := &countingProcessor{}
				req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(ep.body))
				req.Header.Set("Content-Type", "application/json")
				for k, v := range ep.hdr {
					req.Header.Set(k, v)
				}
				if tc.auth != "" {
					req.Header.Set("Authorization", tc.auth)
				}
				rec := httptest.NewRecorder()
				ep.h(p).ServeHTTP(rec, req)
				if tc.ok {
					if rec.Code != http.StatusOK || p.n.Load() != 1 {
						t.Fatalf("status %d, processed %d; want 200 and 1 (body %s)", rec.Code, p.n.Load(), rec.Body)
					}
					return
				}
				if rec.Code != http.StatusUnauthorized || p.n.Load() != 0 {
					t.Fatalf("status %d, processed %d; want 401 and 0", rec.Code, p.n.Load())
				}
				if got := strings.TrimSpace(rec.Body.String()); got != `{"message":"unauthorized"}` {
					t.Fatalf("body = %s, want the reason kept out of it", got)
				}
			})
		}
	}
	if certs.fetches.Load() == 0 {
		t.Fatal("the real validator never fetched certificates: signatures were not checked")
	}
}

// TestRequireTokenWithoutAudience: RequireToken with no audience refuses
// everything rather than letting requests through.
func TestRequireTokenWithoutAudience(t *testing.T) {
	p := &countingProcessor{}
	h := RequireToken(PushOptions{Validator: GoogleValidator{Tokens: acceptAll{}}}, PushHandler(p, PushOptions{}))
	req := httptest.NewRequest(http.MethodPost, "/", strings.NewReader(`{}`))
	req.Header.Set("Authorization", "Bearer x")
	rec := httptest.NewRecorder()
	h.ServeHTTP(rec, req)
	if rec.Code != http.StatusUnauthorized || p.n.Load() != 0 {
		t.Fatalf("status %d, processed %d; want 401 and 0", rec.Code, p.n.Load())
	}
}

// acceptAll is a validator that checks nothing and returns a payload with
// the caller's audience.
type acceptAll struct{}

func (acceptAll) Validate(_ context.Context, _, aud string) (*idtoken.Payload, error) {
	return &idtoken.Payload{Issuer: "https://accounts.google.com", Audience: aud,
		Claims: map[string]any{"email": testPushSA, "email_verified": true}}, nil
}
