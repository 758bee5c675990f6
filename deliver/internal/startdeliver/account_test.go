package startdeliver_test

import (
	"fmt"
	"strings"
	"testing"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/shared/envelope"
)

// TestAccountID: an Account is named by the one account id
// (envelope.AccountID), given by the caller as deliver does from the
// message, or computed from the key; never by its key.
func TestAccountID(t *testing.T) {
	const k = "sd-account-test-key"
	id := envelope.AccountID(k)
	for _, acct := range []startdeliver.Account{{ID: id, APIKey: k}, {APIKey: k}} {
		if got, want := acct.String(), "account("+id[:12]+")"; got != want {
			t.Errorf("%#v.String() = %q, want %q", acct, got, want)
		}
	}
	// A given ID is what names the account: the key is not hashed again.
	given := startdeliver.Account{ID: "0123456789abcdef", APIKey: k}
	if got := fmt.Sprintf("%v %+v %#v", given, given, given); strings.Contains(got, k) || !strings.Contains(got, "0123456789ab") {
		t.Errorf("formatted account = %q, want its given id and no key", got)
	}
}
