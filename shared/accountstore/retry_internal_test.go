package accountstore

import (
	"context"
	"errors"
	"testing"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// TestRetryIdempotent: a whole-document write that the server ended
// without saying anything of the document is tried again (the Firestore
// emulator sometimes answers a Commit with Canceled, "call already
// cancelled", under load); a refusal, or the caller's own end, is not.
func TestRetryIdempotent(t *testing.T) {
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	for _, tc := range []struct {
		name  string
		ctx   context.Context
		errs  []error // what each call returns; nil past the end
		calls int
		ok    bool
	}{
		{"canceled by the server, then written", context.Background(),
			[]error{status.Error(codes.Canceled, "call already cancelled")}, 2, true},
		{"aborted twice, then written", context.Background(),
			[]error{status.Error(codes.Aborted, "x"), status.Error(codes.Aborted, "x")}, 3, true},
		{"unavailable every time", context.Background(),
			[]error{status.Error(codes.Unavailable, "x"), status.Error(codes.Unavailable, "x"), status.Error(codes.Unavailable, "x"), nil}, writeAttempts, false},
		{"refused", context.Background(),
			[]error{status.Error(codes.InvalidArgument, "x")}, 1, false},
		{"not a status", context.Background(),
			[]error{errors.New("x")}, 1, false},
		{"the caller gave up", cancelled,
			[]error{status.Error(codes.Canceled, "x")}, 1, false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			calls := 0
			err := retryIdempotent(tc.ctx, func() error {
				calls++
				if calls <= len(tc.errs) {
					return tc.errs[calls-1]
				}
				return nil
			})
			if calls != tc.calls || (err == nil) != tc.ok {
				t.Errorf("calls = %d, err = %v; want %d calls, success %v", calls, err, tc.calls, tc.ok)
			}
		})
	}
}
