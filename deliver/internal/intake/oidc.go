package intake

import (
	"context"
	"errors"

	"google.golang.org/api/idtoken"
)

// googleValidator validates Google-signed OIDC tokens with Google's public
// certificates.
type googleValidator struct{}

func (googleValidator) Validate(ctx context.Context, token, audience string) (string, error) {
	p, err := idtoken.Validate(ctx, token, audience)
	if err != nil {
		return "", err
	}
	email, _ := p.Claims["email"].(string)
	if verified, ok := p.Claims["email_verified"].(bool); ok && !verified {
		return "", errors.New("token email not verified")
	}
	return email, nil
}
