package intake

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"

	"google.golang.org/api/idtoken"

	"github.com/startdeliver/segment-destination/shared/abbrev"
)

// googleIssuers are the issuers of the Google-signed OIDC tokens that
// Pub/Sub push subscriptions and Eventarc triggers send.
var googleIssuers = map[string]bool{"https://accounts.google.com": true, "accounts.google.com": true}

// payloadValidator checks a token's signature (with Google's public
// certificates), audience and expiry, and returns its claims
// (idtoken.Validator). Safe for concurrent use.
type payloadValidator interface {
	Validate(ctx context.Context, token, audience string) (*idtoken.Payload, error)
}

// GoogleValidator validates Google-signed OIDC tokens: signature, audience
// and expiry by idtoken, then the issuer, and a verified email, which it
// returns.
type GoogleValidator struct {
	// Tokens checks signature, audience and expiry (default: idtoken's
	// package validator, with Google's certificates).
	Tokens payloadValidator
}

// Validate returns the token's verified email.
func (g GoogleValidator) Validate(ctx context.Context, token, audience string) (string, error) {
	var (
		p   *idtoken.Payload
		err error
	)
	if g.Tokens != nil {
		p, err = g.Tokens.Validate(ctx, token, audience)
	} else {
		p, err = idtoken.Validate(ctx, token, audience)
	}
	if err != nil {
		return "", err
	}
	return checkClaims(p, audience)
}

// checkClaims checks what idtoken does not: the issuer, and an email that
// Google has verified. The audience is checked again so that a validator
// that skipped it cannot let a token through.
func checkClaims(p *idtoken.Payload, audience string) (string, error) {
	if audience == "" || p.Audience != audience {
		return "", errors.New("token audience does not match")
	}
	if !googleIssuers[p.Issuer] {
		return "", fmt.Errorf("token issuer %q is not Google", abbrev.String(p.Issuer, 60))
	}
	email, _ := p.Claims["email"].(string)
	if email == "" {
		return "", errors.New("token has no email")
	}
	if verified, _ := p.Claims["email_verified"].(bool); !verified {
		return "", errors.New("token email is not verified")
	}
	return email, nil
}

// RequireToken serves h only to requests with a valid Google OIDC token for
// o.Audience whose verified email is o.ServiceAccount (when set): the push
// endpoint and the CloudEvent endpoint are authenticated alike. Every
// refusal is 401 {"message":"unauthorized"}; why is logged, never answered.
// An empty Audience refuses everything: callers decide, at start-up, whether
// an endpoint may run unauthenticated (only on the emulators).
func RequireToken(o PushOptions, h http.Handler) http.Handler {
	if o.Logger == nil {
		o.Logger = slog.New(slog.DiscardHandler)
	}
	if o.Validator == nil {
		o.Validator = GoogleValidator{}
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if err := authorize(r.Context(), r, o); err != nil {
			o.Logger.WarnContext(r.Context(), "request refused", "path", r.URL.Path, "error", err)
			w.Header().Set("WWW-Authenticate", `Bearer realm="deliver"`)
			writeJSON(w, http.StatusUnauthorized, "unauthorized")
			return
		}
		h.ServeHTTP(w, r)
	})
}

func authorize(ctx context.Context, r *http.Request, o PushOptions) error {
	if o.Audience == "" {
		return errors.New("no audience configured")
	}
	token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	if !ok || token == "" {
		return errors.New("missing bearer token")
	}
	email, err := o.Validator.Validate(ctx, token, o.Audience)
	if err != nil {
		return fmt.Errorf("invalid token: %w", err)
	}
	if o.ServiceAccount != "" && !strings.EqualFold(email, o.ServiceAccount) {
		return fmt.Errorf("token is for %s, not the push service account", abbrev.String(email, 100))
	}
	return nil
}
