package envelope

import (
	"encoding/json"
	"errors"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"

	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/failure"
	"github.com/startdeliver/segment-destination/shared/segment"
)

const testKey = "sd-secret-key-123"

func testMessage(t testing.TB) *Message {
	t.Helper()
	ev, err := segment.Decode([]byte(`{"type":"track","userId":"97980cfea0067","event":"Login Button Clicked","messageId":"m-1","properties":{"n":1.50}}`))
	if err != nil {
		t.Fatal(err)
	}
	return &Message{
		AccountID:  AccountID(testKey),
		APIKey:     testKey,
		Settings:   &account.SettingsOverride{AllowUserIDFallback: ptr(true)},
		ReceivedAt: time.Date(2026, 11, 28, 12, 0, 0, 0, time.UTC),
		Trace:      map[string]string{"traceparent": "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"},
		Event:      ev,
	}
}

// TestRoundTrip: a plain key writes version 1, the previous format, which
// Decode still reads (messages in flight across an upgrade).
func TestRoundTrip(t *testing.T) {
	m := testMessage(t)
	enc, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	wantAttrs := map[string]string{AttrVersion: "1", AttrType: "track", AttrAccountID: AccountID(testKey), AttrMessageID: "m-1"}
	if diff := cmp.Diff(wantAttrs, enc.Attributes); diff != "" {
		t.Errorf("attributes (-want +got):\n%s", diff)
	}
	if want := AccountID(testKey) + ":97980cfea0067"; enc.OrderingKey != want {
		t.Errorf("OrderingKey = %q, want %q", enc.OrderingKey, want)
	}
	got, err := Decode(enc.Data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got.APIKey != testKey || got.AccountID != m.AccountID || !got.ReceivedAt.Equal(m.ReceivedAt) ||
		!cmp.Equal(got.Settings, m.Settings) || got.Trace["traceparent"] != m.Trace["traceparent"] {
		t.Errorf("Decode(Encode(m)) = %+v, want %+v", got, m)
	}
	if diff := cmp.Diff(m.Event.Raw, got.Event.Raw); diff != "" {
		t.Errorf("event changed (-want +got):\n%s", diff)
	}
}

func TestKeyNeverInAttributes(t *testing.T) {
	enc, err := Encode(testMessage(t))
	if err != nil {
		t.Fatal(err)
	}
	for k, v := range enc.Attributes {
		if strings.Contains(v, testKey) || strings.Contains(k, testKey) {
			t.Errorf("attribute %s=%q holds the API key", k, v)
		}
	}
	if strings.Contains(enc.OrderingKey, testKey) {
		t.Errorf("ordering key %q holds the API key", enc.OrderingKey)
	}
}

func TestOrderingKeyLimit(t *testing.T) {
	id := AccountID(testKey)
	long := strings.Repeat("x", 2000)
	k := OrderingKey(id, long)
	if len(k) > maxOrderingKey {
		t.Errorf("len(OrderingKey) = %d, want at most %d", len(k), maxOrderingKey)
	}
	if k == OrderingKey(id, long+"y") {
		t.Errorf("two long persons share ordering key %q", k)
	}
}

func TestDecodeRejects(t *testing.T) {
	good, _ := Encode(testMessage(t))
	tampered := strings.Replace(string(good.Data), AccountID(testKey), AccountID("other"), 1)
	for name, data := range map[string]string{
		"not json":         `nope`,
		"future version":   `{"v":99}`,
		"no key":           `{"v":1,"accountId":"x","event":{}}`,
		"account mismatch": tampered,
		"bad event":        `{"v":1,"accountId":"` + AccountID(testKey) + `","apiKey":"` + testKey + `","event":{"type":"track","userId":{}}}`,
	} {
		_, err := Decode([]byte(data))
		var de *DecodeError
		if !errors.As(err, &de) {
			t.Errorf("%s: Decode = %v, want a *DecodeError", name, err)
		}
		if !failure.IsPermanent(err) || failure.Class(err) != ClassBadMessage {
			t.Errorf("%s: Decode = %v (class %q), want permanent of class %q", name, err, failure.Class(err), ClassBadMessage)
		}
		if err != nil && strings.Contains(err.Error(), testKey) {
			t.Errorf("%s: error %q holds the API key", name, err)
		}
	}
}

// TestSealedRoundTrip: with a sealed key, Encode writes version 2, whose
// body holds the sealed bytes and never the plain key (even when the
// Message also carries it), and Decode gives the sealed bytes back.
func TestSealedRoundTrip(t *testing.T) {
	m := testMessage(t)
	m.SealedKey = []byte("\x01sealed-bytes\x00\xff")
	enc, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if enc.Attributes[AttrVersion] != "2" {
		t.Errorf("attribute v = %q, want 2", enc.Attributes[AttrVersion])
	}
	if strings.Contains(string(enc.Data), testKey) || strings.Contains(string(enc.Data), `"apiKey"`) {
		t.Fatalf("version 2 body holds the plain key: %s", enc.Data)
	}
	got, err := Decode(enc.Data)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if got.APIKey != "" || string(got.SealedKey) != string(m.SealedKey) || got.AccountID != m.AccountID {
		t.Errorf("Decode = APIKey %q, SealedKey %q, AccountID %q; want no key, the sealed bytes, the account", got.APIKey, got.SealedKey, got.AccountID)
	}
	if diff := cmp.Diff(m.Event.Raw, got.Event.Raw); diff != "" {
		t.Errorf("event changed (-want +got):\n%s", diff)
	}
}

func TestDecodeRejectsVersion2(t *testing.T) {
	id := AccountID(testKey)
	ev := `"event":{"type":"track","userId":"u","event":"e","messageId":"m"}`
	for name, data := range map[string]string{
		"plain key in version 2": `{"v":2,"accountId":"` + id + `","apiKey":"` + testKey + `","sealedKey":"AQ==",` + ev + `}`,
		"no sealed key":          `{"v":2,"accountId":"` + id + `",` + ev + `}`,
		"account id not hex":     `{"v":2,"accountId":"` + strings.ToUpper(id) + `","sealedKey":"AQ==",` + ev + `}`,
		"sealed key not base64":  `{"v":2,"accountId":"` + id + `","sealedKey":"%%",` + ev + `}`,
	} {
		_, err := Decode([]byte(data))
		if !failure.IsPermanent(err) || failure.Class(err) != ClassBadMessage {
			t.Errorf("%s: Decode = %v, want permanent %s", name, err, ClassBadMessage)
		}
		if err != nil && strings.Contains(err.Error(), testKey) {
			t.Errorf("%s: error %q holds the API key", name, err)
		}
	}
}

// FuzzDecode: whatever a message body holds, Decode never panics, and its
// error never carries the API key in the body, in any field.
func FuzzDecode(f *testing.F) {
	m := testMessage(f)
	enc, err := Encode(m)
	if err != nil {
		f.Fatal(err)
	}
	f.Add(enc.Data)
	f.Add([]byte(`{"v":1,"accountId":"x","apiKey":"` + testKey + `","event":{"type":"track"}}`))
	f.Add([]byte(`{"v":1,"apiKey":"` + testKey + `",,"event":{}}`))
	f.Add([]byte(`{"v":"` + testKey + `"}`))
	f.Add([]byte(`{"v":1,"apiKey":"` + testKey + `","receivedAt":"` + testKey + `"}`))
	f.Add([]byte(`{"event":` + strings.Repeat("[", 100000)))
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := Decode(data)
		if err != nil {
			if strings.Contains(err.Error(), testKey) {
				t.Fatalf("Decode error %q carries the key", err)
			}
			return
		}
		if got.APIKey != "" && AccountID(got.APIKey) != got.AccountID {
			t.Fatalf("decoded a message whose account is not its key's")
		}
	})
}

func ptr[T any](v T) *T { return &v }

// raw is m with its values as strings, for diffs.
func raw(m map[string]json.RawMessage) map[string]string {
	out := map[string]string{}
	for k, v := range m {
		out[k] = string(v)
	}
	return out
}

// TestDecodeEarlierBodies: bodies as the encoder wrote them before the
// settings were typed (testdata, version 1 with a plain key and version 2
// with a sealed one, the settings object as ingest marshalled it) still
// decode, to the same override; and Encode writes every field but the event
// (whose keys are in map order) again byte for byte, so old and new
// instances read each other's messages.
func TestDecodeEarlierBodies(t *testing.T) {
	tests := []struct {
		file string
		want *account.SettingsOverride
	}{
		{"testdata/v1.json", &account.SettingsOverride{AllowUserIDFallback: ptr(true)}},
		{"testdata/v2.json", &account.SettingsOverride{
			StartdeliverUserCustomFieldToMatchOn: ptr("externalId"),
			SyncUsingEmailInsteadOfCustomField:   ptr(false),
			SegmentOverrideMatchingField:         ptr("properties['Field With Space']"),
			AllowUserIDFallback:                  ptr(true),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.file, func(t *testing.T) {
			data, err := os.ReadFile(tt.file)
			if err != nil {
				t.Fatal(err)
			}
			data = []byte(strings.TrimSpace(string(data)))
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode(%s): %v", tt.file, err)
			}
			if diff := cmp.Diff(tt.want, got.Settings); diff != "" {
				t.Errorf("Decode(%s) settings (-want +got):\n%s", tt.file, diff)
			}
			enc, err := Encode(got)
			if err != nil {
				t.Fatalf("Encode(Decode(%s)): %v", tt.file, err)
			}
			var was, is map[string]json.RawMessage
			if err := json.Unmarshal(data, &was); err != nil {
				t.Fatal(err)
			}
			if err := json.Unmarshal(enc.Data, &is); err != nil {
				t.Fatal(err)
			}
			delete(was, "event")
			delete(is, "event")
			if diff := cmp.Diff(raw(was), raw(is)); diff != "" {
				t.Errorf("Encode(Decode(%s)) fields (-was +is):\n%s", tt.file, diff)
			}
		})
	}
}

// TestZeroSettingsOmitted: an override that sets nothing is not written,
// and reads back as nil (the stored settings apply).
func TestZeroSettingsOmitted(t *testing.T) {
	m := testMessage(t)
	m.Settings = &account.SettingsOverride{}
	enc, err := Encode(m)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(enc.Data), `"settings"`) {
		t.Errorf("Encode wrote an empty override: %s", enc.Data)
	}
	spliced := strings.Replace(string(enc.Data), `"receivedAt"`, `"settings":{},"receivedAt"`, 1)
	got, err := Decode([]byte(spliced))
	if err != nil {
		t.Fatal(err)
	}
	if got.Settings != nil {
		t.Errorf("Decode(settings {}) = %+v, want nil", got.Settings)
	}
}
