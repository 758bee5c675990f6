package keyseal

import (
	"errors"
	"testing"
)

// FuzzOpen: Open reads bytes from a Pub/Sub message, which anyone who may
// publish to the topic controls. Whatever they are, it never panics, and
// every failure is ErrOpen; only the sealer's own output opens.
func FuzzOpen(f *testing.F) {
	priv, pub := newKeys(f)
	s, o := newPair(f, priv, pub)
	good, err := s.Seal(testKey, testAccount, testMessage)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(good, testAccount, testMessage)
	f.Add(good[:len(good)-1], testAccount, testMessage)
	f.Add([]byte{1, 0xff, 0xff}, testAccount, testMessage)
	f.Add([]byte{}, "", "")
	f.Fuzz(func(t *testing.T, sealed []byte, account, message string) {
		got, err := o.Open(sealed, account, message)
		if err != nil {
			if !errors.Is(err, ErrOpen) {
				t.Fatalf("Open error %v is not ErrOpen", err)
			}
			return
		}
		if got != testKey {
			t.Fatalf("Open = %q from bytes the sealer did not make", got)
		}
	})
}
