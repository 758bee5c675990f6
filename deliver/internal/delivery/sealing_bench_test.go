package delivery

import (
	"context"
	"fmt"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver"
	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/accountstore"
	"github.com/startdeliver/segment-destination/shared/cputime"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/keyseal"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// BenchmarkSealing measures deliver's CPU per event with the API key sealed
// (envelope version 2, opened with keyseal) against the same events with
// the key in plain text (version 1), in the same run: blocks of 200 events
// of each (b.N events of each in all), alternating which goes first, the process's CPU time (getrusage)
// per block. Each event is a track for a known user: one find (cached after
// the first) and one usage record against the Startdeliver stand-in over
// real HTTP in this process, so the stand-in's CPU is in both figures; the
// record of completed events and the account store are in-memory fakes.
// The goal is sealed/plain under 1.10.
func BenchmarkSealing(b *testing.B) {
	priv, err := keyseal.NewKeyset()
	if err != nil {
		b.Fatal(err)
	}
	pub, _ := priv.Public()
	sealer, err := keyseal.NewSealer(pub, keyseal.SealerOptions{})
	if err != nil {
		b.Fatal(err)
	}
	opener, err := keyseal.NewOpener(priv)
	if err != nil {
		b.Fatal(err)
	}
	sd := startdelivertest.NewServer(key)
	defer sd.Close()
	sd.AddUser(key, map[string]any{"externalId": "u1"})
	a, err := account.Parse([]byte(simple))
	if err != nil {
		b.Fatal(err)
	}
	c, err := account.Compile(a)
	if err != nil {
		b.Fatal(err)
	}
	p := New(Options{
		Accounts:    &fakeAccounts{entries: map[string]*accountstore.Entry{envelope.AccountID(key): {ID: envelope.AccountID(key), Account: a, Compiled: c}}},
		Completions: &fakeCompletions{done: map[string]string{}},
		Claims:      fakeClaims{}, DeadLetters: &fakeDeadLetters{},
		Client: startdeliver.New(startdeliver.Options{DefaultBaseURL: sd.URL(), RateLimit: startdeliver.RateLimit{Disabled: true}}),
		Keys:   opener,
	})
	n := 0
	msg := func(seal bool) Message {
		n++
		ev, err := segment.Decode(fmt.Appendf(nil, `{"type":"track","userId":"u1","event":"e","messageId":"b-%d"}`, n))
		if err != nil {
			b.Fatal(err)
		}
		m := &envelope.Message{AccountID: envelope.AccountID(key), APIKey: key, ReceivedAt: time.Now(), Event: ev}
		if seal {
			if m.SealedKey, err = sealer.Seal(key, m.AccountID, ev.MessageID); err != nil {
				b.Fatal(err)
			}
			m.APIKey = ""
		}
		enc, err := envelope.Encode(m)
		if err != nil {
			b.Fatal(err)
		}
		return Message{ID: "ps", Data: enc.Data, Attributes: enc.Attributes, OrderingKey: enc.OrderingKey}
	}
	const block = 200
	run := func(seal bool) time.Duration {
		ms := make([]Message, block)
		for i := range ms {
			ms[i] = msg(seal)
		}
		c0 := cputime.Process()
		for _, m := range ms {
			if res := p.Process(context.Background(), m); res.Outcome != OutcomeDelivered {
				b.Fatalf("outcome %s: %v", res.Outcome, res.Err)
			}
		}
		return cputime.Process() - c0
	}
	cputime.Alternate(b, block, [2]string{"plain", "sealed"}, func(i int) time.Duration { return run(i == 1) })
}
