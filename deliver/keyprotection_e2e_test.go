package main

import (
	"bytes"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/url"
	"strings"
	"testing"
	"time"

	"cloud.google.com/go/pubsub/v2"
	"github.com/tink-crypto/tink-go/v2/keyset"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/emulatortest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/keyseal"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// Keys with characters that every encoding below writes differently.
const (
	outsiderKeyA = `sd/live+Key=1&2<3>"q"\x`
	outsiderKeyB = "sd-live-0123456789abcdefABCDEF"
)

// TestNoKeyOnTheTopics reads the events topic and the dead-letter topic as
// an outsider would (their own subscriptions, attached before any event)
// and finds no API key in any message body, attribute or ordering key, in
// any encoding, while every event is delivered: the dead-lettered one too,
// once replayed from its encrypted body. ingest and deliver run with no
// keyset configured, as on the emulators, so they share the development
// keyset.
func TestNoKeyOnTheTopics(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	outsiderEvents := p.topic + "-outsider"
	outsiderDead := p.deadTopic + "-outsider"
	emulatortest.CreateSubscription(t, p.ps, p.env.Project, p.topic, outsiderEvents, emulatortest.SubscriptionOptions{})
	emulatortest.CreateSubscription(t, p.ps, p.env.Project, p.deadTopic, outsiderDead, emulatortest.SubscriptionOptions{})
	keys := []string{outsiderKeyA, outsiderKeyB}
	for _, k := range keys {
		p.addAccount(k, simpleAccount)
	}

	const perAccount = 5
	for i := range perAccount {
		for j, k := range keys {
			p.send(k, fmt.Sprintf(`{"type":"track","userId":"u-%d","event":"e","messageId":"nk-%d-%d","properties":{"i":%d}}`, i%2, j, i, i), "")
		}
	}
	waitfor.Within(t, 60*time.Second, "every event", func() bool {
		return len(p.sd.Usage(outsiderKeyA)) == perAccount && len(p.sd.Usage(outsiderKeyB)) == perAccount
	})
	// One more whose usage record Startdeliver rejects once: a dead letter,
	// its body still the sealed envelope.
	p.sd.FailNext(1, startdelivertest.Fault{Status: 422, Route: "POST /usage"})
	p.send(outsiderKeyA, `{"type":"track","userId":"u-dead","event":"e","messageId":"nk-dead"}`, "")
	dead := emulatortest.Receive(t, p.ps, outsiderDead, 1, 60*time.Second)
	if len(dead) != 1 || dead[0].Attributes[envelope.AttrMessageID] != "nk-dead" {
		var ids []string
		for _, m := range dead {
			ids = append(ids, m.Attributes[envelope.AttrMessageID]+" "+m.Attributes[envelope.AttrErrorClass])
		}
		t.Fatalf("outsider's dead letters = %v, want nk-dead", ids)
	}

	// Replay the dead letter from its encrypted body: delivered.
	replay := buildBinary(t, "replay", "./cmd/replay")
	waitfor.Within(t, 60*time.Second, "the replayed event", func() bool {
		p.runReplay(replay, "-message", "nk-dead")
		return len(p.usageByExternalID(outsiderKeyA)["nk-dead"]) == 1
	})

	events := emulatortest.Receive(t, p.ps, outsiderEvents, 2*perAccount+2, 60*time.Second)
	if len(events) < 2*perAccount+2 {
		t.Fatalf("outsider read %d event messages, want %d (every send and the replay)", len(events), 2*perAccount+2)
	}
	all := append(events, dead...)
	for _, m := range all {
		if v := m.Attributes[envelope.AttrVersion]; v != "2" {
			t.Errorf("message %s has envelope version %q, want 2", m.Attributes[envelope.AttrMessageID], v)
		}
		for _, k := range keys {
			if where := findKey(m, k); where != "" {
				t.Errorf("message %s: an outsider reads the API key %s", m.Attributes[envelope.AttrMessageID], where)
			}
		}
	}
	// Every event delivered, once.
	for j, k := range keys {
		got := p.usageByExternalID(k)
		for i := range perAccount {
			if id := fmt.Sprintf("nk-%d-%d", j, i); len(got[id]) != 1 {
				t.Errorf("usage %s: %d records, want 1", id, len(got[id]))
			}
		}
	}
}

// findKey says where in m the key can be read, in any encoding, or "".
func findKey(m *pubsub.Message, key string) string {
	forms := keyForms(key)
	in := func(what string, b []byte) string {
		for name, f := range forms {
			if bytes.Contains(b, []byte(f)) {
				return what + " (" + name + ")"
			}
		}
		return ""
	}
	if w := in("body", m.Data); w != "" {
		return w
	}
	for k, v := range m.Attributes {
		if w := in("attribute "+k, []byte(k+"="+v)); w != "" {
			return w
		}
	}
	if w := in("ordering key", []byte(m.OrderingKey)); w != "" {
		return w
	}
	// Any string in the body, base64-decoded as an outsider would try.
	var doc any
	if json.Unmarshal(m.Data, &doc) == nil {
		var w string
		walkStrings(doc, func(path, s string) {
			for _, enc := range []*base64.Encoding{base64.StdEncoding, base64.URLEncoding, base64.RawStdEncoding, base64.RawURLEncoding} {
				if b, err := enc.DecodeString(s); err == nil && w == "" {
					w = in("base64-decoded "+path, b)
				}
			}
		})
		return w
	}
	return ""
}

func walkStrings(v any, f func(path, s string)) {
	var walk func(string, any)
	walk = func(path string, v any) {
		switch v := v.(type) {
		case string:
			f(path, v)
		case map[string]any:
			for k, x := range v {
				walk(path+"."+k, x)
			}
		case []any:
			for i, x := range v {
				walk(fmt.Sprintf("%s[%d]", path, i), x)
			}
		}
	}
	walk("", v)
}

// keyForms are the encodings of key an outsider would search for: raw,
// base64 (standard and URL alphabets, padded or not, at each of the three
// alignments it can take inside a longer encoded string), URL-encoded,
// hex, and JSON-escaped (with and without HTML escaping).
func keyForms(key string) map[string]string {
	forms := map[string]string{
		"raw":          key,
		"query-escape": url.QueryEscape(key),
		"path-escape":  url.PathEscape(key),
		"hex":          hex.EncodeToString([]byte(key)),
		"HEX":          strings.ToUpper(hex.EncodeToString([]byte(key))),
	}
	for name, enc := range map[string]*base64.Encoding{"base64": base64.StdEncoding, "base64url": base64.URLEncoding} {
		forms[name] = enc.EncodeToString([]byte(key))
		for pad := range 3 {
			// With pad bytes before it, the key's own characters start at
			// an offset; keep the part that depends on the key alone.
			s := enc.EncodeToString(append(make([]byte, pad), key...))
			start := (pad*4 + 2) / 3
			end := len(s) - 4
			forms[fmt.Sprintf("%s+%d", name, pad)] = s[start:end]
		}
	}
	j, _ := json.Marshal(key)
	forms["json"] = string(j[1 : len(j)-1])
	var b bytes.Buffer
	e := json.NewEncoder(&b)
	e.SetEscapeHTML(false)
	_ = e.Encode(key)
	forms["json-no-html-escape"] = strings.TrimSpace(b.String())[1 : len(strings.TrimSpace(b.String()))-1]
	return forms
}

// TestKeyFormsFindTheKey: the search above finds the key in each encoding
// (so TestNoKeyOnTheTopics could fail).
func TestKeyFormsFindTheKey(t *testing.T) {
	key := outsiderKeyA
	bodies := map[string]string{
		"raw":       `{"apiKey":"` + key + `"}`,
		"json":      func() string { b, _ := json.Marshal(map[string]string{"apiKey": key}); return string(b) }(),
		"base64":    `{"k":"` + base64.StdEncoding.EncodeToString([]byte("xy"+key+"z")) + `"}`,
		"base64url": `{"k":"` + base64.RawURLEncoding.EncodeToString([]byte("x"+key)) + `"}`,
		"hex":       `{"k":"` + hex.EncodeToString([]byte(key)) + `"}`,
		"url":       `{"k":"a=` + url.QueryEscape(key) + `"}`,
	}
	for name, body := range bodies {
		if findKey(&pubsub.Message{Data: []byte(body)}, key) == "" {
			t.Errorf("%s: the key was not found in %s", name, body)
		}
	}
	if w := findKey(&pubsub.Message{Data: []byte(`{"v":2}`), Attributes: map[string]string{"x": key}}, key); w == "" {
		t.Errorf("the key in an attribute was not found")
	}
}

// TestReplayAfterRotation: a message sealed under the first keyset is
// dead-lettered; the keyset is rotated (deliver first, then ingest); new
// events are sealed under the new primary and delivered, and the old dead
// letter, replayed, is delivered too: the rotated keyset keeps the old key.
func TestReplayAfterRotation(t *testing.T) {
	first, err := keyseal.NewKeyset()
	if err != nil {
		t.Fatal(err)
	}
	priv, pub := keysetEnv(t, first)
	p := newPipeline(t, pipelineOptions{
		deliverEnv: map[string]string{"API_KEY_KEYSET": priv},
		ingestEnv:  map[string]string{"API_KEY_PUBLIC_KEYSET": pub},
	})
	tap := p.topic + "-tap"
	emulatortest.CreateSubscription(t, p.ps, p.env.Project, p.topic, tap, emulatortest.SubscriptionOptions{})
	deadTap := p.deadTopic + "-tap"
	emulatortest.CreateSubscription(t, p.ps, p.env.Project, p.deadTopic, deadTap, emulatortest.SubscriptionOptions{})
	key := "sd-rotation-key"
	p.addAccount(key, simpleAccount)

	p.sd.FailNext(1, startdelivertest.Fault{Status: 422, Route: "POST /usage"})
	p.send(key, `{"type":"track","userId":"u1","event":"e","messageId":"rot-old"}`, "")
	// Watched on a subscription of its own: the inspection subscription
	// keeps it for replay.
	if dead := emulatortest.Receive(t, p.ps, deadTap, 1, 60*time.Second); len(dead) != 1 {
		t.Fatalf("dead letters = %d, want rot-old", len(dead))
	}

	rotated, newID, err := keyseal.Rotate(first)
	if err != nil {
		t.Fatal(err)
	}
	priv, pub = keysetEnv(t, rotated)
	p.stopDeliver()
	p.deliverEnv["API_KEY_KEYSET"] = priv
	p.startDeliver()
	p.ingestEnv = map[string]string{"API_KEY_PUBLIC_KEYSET": pub}
	p.startIngest()

	p.send(key, `{"type":"track","userId":"u1","event":"e","messageId":"rot-new"}`, "")
	waitfor.Within(t, 60*time.Second, "the event sealed under the new key", func() bool {
		return len(p.usageByExternalID(key)["rot-new"]) == 1
	})
	msgs := emulatortest.Receive(t, p.ps, tap, 2, 30*time.Second)
	ids := map[string]uint32{}
	for _, m := range msgs {
		env, err := envelope.Decode(m.Data)
		if err != nil {
			t.Fatal(err)
		}
		ids[env.Event.MessageID] = sealedKeyID(t, env.SealedKey)
	}
	oldID := first.KeysetInfo().GetPrimaryKeyId()
	if ids["rot-old"] != oldID || ids["rot-new"] != newID {
		t.Fatalf("sealed under keys %v, want rot-old %d (first) and rot-new %d (rotated)", ids, oldID, newID)
	}
	replay := buildBinary(t, "replay", "./cmd/replay")
	waitfor.Within(t, 60*time.Second, "the old dead letter, replayed after the rotation", func() bool {
		p.runReplay(replay, "-message", "rot-old")
		return len(p.usageByExternalID(key)["rot-old"]) == 1
	})
}

// keysetEnv returns a keyset as deliver's clear-text API_KEY_KEYSET (the
// emulators allow it without a KMS key) and ingest's public keyset.
func keysetEnv(t *testing.T, h *keyset.Handle) (priv, pub string) {
	t.Helper()
	pr, err := keyseal.WriteClearPrivate(h)
	if err != nil {
		t.Fatal(err)
	}
	pu, err := keyseal.WritePublic(h)
	if err != nil {
		t.Fatal(err)
	}
	return string(pr), string(pu)
}

// sealedKeyID reads the Tink key id in a sealed key's wrapped data key
// (its 5-byte prefix: 0x01, then the id).
func sealedKeyID(t *testing.T, sealed []byte) uint32 {
	t.Helper()
	if len(sealed) < 8 {
		t.Fatalf("sealed key of %d bytes", len(sealed))
	}
	return binary.BigEndian.Uint32(sealed[4:8])
}
