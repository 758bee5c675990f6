package delivery

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/keyseal"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// sealedMessage is a version-2 message, its key sealed for messageID and
// accountID (which may differ from the event's, to move a ciphertext).
func sealedMessage(t *testing.T, s *keyseal.Sealer, event, accountID, messageID string) Message {
	t.Helper()
	ev, err := segment.Decode([]byte(event))
	if err != nil {
		t.Fatal(err)
	}
	sealed, err := s.Seal(key, accountID, messageID)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := envelope.Encode(&envelope.Message{AccountID: envelope.AccountID(key), SealedKey: sealed, ReceivedAt: time.Now(), Event: ev})
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(enc.Data), key) {
		t.Fatalf("version 2 body holds the key")
	}
	return Message{ID: "ps-1", Data: enc.Data, Attributes: enc.Attributes, OrderingKey: enc.OrderingKey}
}

func newKeys(t *testing.T) (*keyseal.Sealer, *keyseal.Opener) {
	t.Helper()
	priv, err := keyseal.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := priv.Public()
	if err != nil {
		t.Fatal(err)
	}
	s, err := keyseal.NewSealer(pub, keyseal.SealerOptions{})
	if err != nil {
		t.Fatal(err)
	}
	o, err := keyseal.NewOpener(priv)
	if err != nil {
		t.Fatal(err)
	}
	return s, o
}

// TestSealedKey: a sealed key opens and the event is delivered with it; one
// moved from another message or account, or sealed for another keyset, is
// dead-lettered as sealed-key and acked (never retried), with no
// Startdeliver call and no key in the reason.
func TestSealedKey(t *testing.T) {
	const track = `{"type":"track","userId":"u1","event":"e","messageId":"m1"}`
	sealer, opener := newKeys(t)
	otherSealer, _ := newKeys(t)
	tests := []struct {
		name               string
		sealer             *keyseal.Sealer
		account, messageID string
		wantOutcome        string
	}{
		{"sealed for this message", sealer, envelope.AccountID(key), "m1", OutcomeDelivered},
		{"moved from another message", sealer, envelope.AccountID(key), "m0", OutcomeDeadLettered},
		{"moved from another account", sealer, envelope.AccountID("another key"), "m1", OutcomeDeadLettered},
		{"sealed for another keyset", otherSealer, envelope.AccountID(key), "m1", OutcomeDeadLettered},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			f := newFixture(t, simple)
			f.p.opts.Keys = opener
			res := f.p.Process(context.Background(), sealedMessage(t, tc.sealer, track, tc.account, tc.messageID))
			if res.Decision != Ack || res.Outcome != tc.wantOutcome {
				t.Fatalf("Process = %v %s (%v), want ack %s", res.Decision, res.Outcome, res.Err, tc.wantOutcome)
			}
			if tc.wantOutcome == OutcomeDelivered {
				if len(f.sd.Usage(key)) != 1 {
					t.Fatalf("usage records = %d, want 1", len(f.sd.Usage(key)))
				}
				return
			}
			if res.Class != ClassSealedKey || len(f.dead.msgs) != 1 || f.dead.msgs[0][envelope.AttrErrorClass] != ClassSealedKey {
				t.Fatalf("class %q, dead letters %v; want one of class %s", res.Class, f.dead.msgs, ClassSealedKey)
			}
			if strings.Contains(f.dead.msgs[0][envelope.AttrError], key) {
				t.Fatalf("dead-letter reason holds the key")
			}
			if n := f.sd.TotalCalls(); n != 0 {
				t.Fatalf("Startdeliver calls = %d, want 0", n)
			}
		})
	}
}

// TestPlainKeyStillAccepted: a version-1 message (plain key, written by an
// ingest from before the upgrade) is still delivered.
func TestPlainKeyStillAccepted(t *testing.T) {
	f := newFixture(t, simple)
	_, f.p.opts.Keys = newKeys(t)
	m := message(t, `{"type":"track","userId":"u1","event":"e","messageId":"m1"}`)
	if m.Attributes[envelope.AttrVersion] != "1" {
		t.Fatalf("version %s, want 1", m.Attributes[envelope.AttrVersion])
	}
	if res := f.p.Process(context.Background(), m); res.Outcome != OutcomeDelivered {
		t.Fatalf("Process(version 1) = %s (%v), want delivered", res.Outcome, res.Err)
	}
}
