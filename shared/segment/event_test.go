package segment

import (
	"encoding/json"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/google/go-cmp/cmp"
)

func TestDecodeRealTraffic(t *testing.T) {
	tests := []struct {
		name string
		file string
		want Event // typed view only; Raw checked separately
	}{
		{
			name: "seed identify then track (analytics.js)",
			file: "seed_track.json",
			want: Event{Type: TypeTrack, MessageID: "ajs-next-1690000000000-4f3b", UserID: "97980cfea0067",
				AnonymousID: "5b2d", Event: "Login Button Clicked",
				Timestamp:         time.Date(2024, 8, 7, 10, 0, 0, 123456789, time.UTC),
				OriginalTimestamp: time.Date(2024, 8, 7, 10, 0, 0, 120000000, time.UTC),
				SentAt:            time.Date(2024, 8, 7, 10, 0, 0, 125000000, time.UTC),
				ReceivedAt:        time.Date(2024, 8, 7, 10, 0, 1, 0, time.UTC)},
		},
		{
			name: "engage audience identify: sentAt null, object integrations, snake_case trait",
			file: "engage_identify.json",
			want: Event{Type: TypeIdentify, MessageID: "personas_2Ab9x", UserID: "user-42",
				Timestamp: time.Date(2026, 11, 1, 8, 30, 0, 0, time.UTC)},
		},
		{
			name: "snake_case ids and numeric version (server library)",
			file: "snake_case_page.json",
			want: Event{Type: TypePage, MessageID: "m-1", UserID: "12345", AnonymousID: "anon-1", Name: "Home",
				Timestamp: time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)},
		},
		{
			name: "group with nanosecond original timestamp",
			file: "group.json",
			want: Event{Type: TypeGroup, MessageID: "g-1", UserID: "u-1", GroupID: "acme",
				OriginalTimestamp: time.Date(2026, 3, 4, 5, 6, 7, 999999999, time.FixedZone("", 0)).UTC()},
		},
	}
	ignore := cmpIgnoreMaps()
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			data, err := os.ReadFile(filepath.Join("testdata", tt.file))
			if err != nil {
				t.Fatal(err)
			}
			got, err := Decode(data)
			if err != nil {
				t.Fatalf("Decode(%s) error: %v", tt.file, err)
			}
			if err := got.Validate(); err != nil {
				t.Errorf("Validate() = %v, want nil", err)
			}
			if diff := cmp.Diff(&tt.want, got, ignore); diff != "" {
				t.Errorf("Decode(%s) mismatch (-want +got):\n%s", tt.file, diff)
			}
			// Nothing the caller sent is lost: re-encoding keeps every key.
			var orig map[string]any
			if err := json.Unmarshal(data, &orig); err != nil {
				t.Fatal(err)
			}
			out, err := json.Marshal(got)
			if err != nil {
				t.Fatal(err)
			}
			var back map[string]any
			if err := json.Unmarshal(out, &back); err != nil {
				t.Fatal(err)
			}
			if len(back) != len(orig) {
				t.Errorf("re-encoded event has %d keys, want %d: %s", len(back), len(orig), out)
			}
			for _, k := range []string{"context", "properties", "traits", "integrations"} {
				if diff := cmp.Diff(orig[k], back[k]); diff != "" {
					t.Errorf("%s changed on re-encoding (-orig +got):\n%s", k, diff)
				}
			}
		})
	}
}

func cmpIgnoreMaps() cmp.Option {
	return cmp.FilterPath(func(p cmp.Path) bool {
		switch p.Last().String() {
		case ".Raw", ".Traits", ".Properties", ".Context", ".view":
			return true
		}
		return false
	}, cmp.Ignore())
}

func TestDecodeKeepsNumbersExact(t *testing.T) {
	ev, err := Decode([]byte(`{"type":"track","userId":"u","event":"e","properties":{"revenue":12345678901234567890,"price":0.1}}`))
	if err != nil {
		t.Fatal(err)
	}
	out, _ := json.Marshal(ev)
	var back struct {
		Properties map[string]json.RawMessage `json:"properties"`
	}
	if err := json.Unmarshal(out, &back); err != nil {
		t.Fatal(err)
	}
	if got := string(back.Properties["revenue"]); got != "12345678901234567890" {
		t.Errorf("revenue = %s, want 12345678901234567890", got)
	}
	if got := string(back.Properties["price"]); got != "0.1" {
		t.Errorf("price = %s, want 0.1", got)
	}
}

func TestDecodeErrors(t *testing.T) {
	tests := []struct {
		body      string
		wantField string // "" for a syntax error
	}{
		{``, ""},
		{`{"type":"track"`, ""},
		{`[1,2]`, ""},
		{`"track"`, ""},
		{`{"a":1} {"b":2}`, ""},
		{`{"type":"track","userId":{"id":1}}`, "userId"},
		{`{"type":"track","userId":"u","timestamp":"yesterday"}`, "timestamp"},
		{`{"type":"track","userId":"u","timestamp":12}`, "timestamp"},
		{`{"type":"track","userId":"u","properties":[1]}`, "properties"},
		{`{"type":"track","userId":"u","context":"x"}`, "context"},
		{`{"type":"track","userId":"u","version":[2]}`, "version"},
	}
	for _, tt := range tests {
		t.Run(tt.body, func(t *testing.T) {
			_, err := Decode([]byte(tt.body))
			if err == nil {
				t.Fatalf("Decode(%q) = nil error, want one", tt.body)
			}
			var se *SyntaxError
			var fe *FieldError
			switch {
			case tt.wantField == "":
				if !errors.As(err, &se) {
					t.Errorf("Decode(%q) = %v, want a *SyntaxError", tt.body, err)
				}
			case !errors.As(err, &fe) || fe.Field != tt.wantField:
				t.Errorf("Decode(%q) = %v, want a *FieldError for %s", tt.body, err, tt.wantField)
			}
		})
	}
}

func TestValidate(t *testing.T) {
	long := make([]byte, 101)
	for i := range long {
		long[i] = 'a'
	}
	tests := []struct {
		body      string
		wantField string // "" = valid
	}{
		{`{"type":"track","userId":"u","event":"Login Button Clicked"}`, ""},
		{`{"type":"TRACK","anonymousId":"a","event":"e"}`, ""},
		{`{"type":"identify","userId":"97980cfea0067"}`, ""},
		{`{"type":"page","anonymous_id":"a"}`, ""},
		{`{"type":"screen","userId":"u","name":"Home"}`, ""},
		{`{"type":"group","userId":"u","groupId":"g"}`, ""},
		{`{"type":"alias","userId":"u","previousId":"p"}`, ""},
		{`{"userId":"u"}`, "type"},
		{`{"type":"purchase","userId":"u"}`, "type"},
		{`{"type":"track","event":"e"}`, "userId"},
		{`{"type":"track","userId":"u"}`, "event"},
		{`{"type":"group","userId":"u"}`, "groupId"},
		{`{"type":"alias","userId":"u"}`, "previousId"},
		{`{"type":"track","userId":"u","event":"e","messageId":"` + string(long) + `"}`, "messageId"},
	}
	for _, tt := range tests {
		t.Run(tt.body[:min(len(tt.body), 60)], func(t *testing.T) {
			ev, err := Decode([]byte(tt.body))
			if err != nil {
				t.Fatalf("Decode: %v", err)
			}
			err = ev.Validate()
			if tt.wantField == "" {
				if err != nil {
					t.Errorf("Validate() = %v, want nil", err)
				}
				return
			}
			var fe *FieldError
			if !errors.As(err, &fe) || fe.Field != tt.wantField {
				t.Errorf("Validate() = %v, want a *FieldError for %s", err, tt.wantField)
			}
		})
	}
}

func TestEventTime(t *testing.T) {
	ts := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	ot := ts.Add(-time.Second)
	ra := ts.Add(time.Second)
	tests := []struct {
		name string
		ev   Event
		want time.Time
	}{
		{"timestamp wins", Event{Timestamp: ts, OriginalTimestamp: ot, ReceivedAt: ra}, ts},
		{"then originalTimestamp", Event{OriginalTimestamp: ot, ReceivedAt: ra}, ot},
		{"then receivedAt", Event{ReceivedAt: ra}, ra},
	}
	for _, tt := range tests {
		if got := tt.ev.Time(); !got.Equal(tt.want) {
			t.Errorf("%s: Time() = %v, want %v", tt.name, got, tt.want)
		}
	}
}

func TestBatchMergeOwnKeysWin(t *testing.T) {
	b, err := DecodeBatch([]byte(`{"writeKey":"k","context":{"library":{"name":"outer"},"ip":"1.2.3.4"},"integrations":{"All":false},
		"batch":[{"type":"track","userId":"u","event":"e","context":{"library":{"name":"inner"}}},{"type":"identify","userId":"u"}]}`))
	if err != nil {
		t.Fatal(err)
	}
	if b.WriteKey != "k" || len(b.Items) != 2 {
		t.Fatalf("DecodeBatch = key %q, %d items; want k, 2", b.WriteKey, len(b.Items))
	}
	first, _ := Decode(b.Items[0])
	b.Merge(first)
	if got := first.Context["library"].(map[string]any)["name"]; got != "inner" {
		t.Errorf("context.library.name = %v, want the event's own (inner)", got)
	}
	if got := first.Context["ip"]; got != "1.2.3.4" {
		t.Errorf("context.ip = %v, want the outer 1.2.3.4", got)
	}
	second, _ := Decode(b.Items[1])
	b.Merge(second)
	if second.Context["ip"] != "1.2.3.4" || second.Raw["integrations"].(map[string]any)["All"] != false {
		t.Errorf("second event context/integrations not merged: %v", second.Raw)
	}
}

func TestDecodeBatchErrors(t *testing.T) {
	for _, body := range []string{`{"batch":{}}`, `{}`, `not json`, `{"batch":[],"context":"x"}`} {
		if _, err := DecodeBatch([]byte(body)); err == nil {
			t.Errorf("DecodeBatch(%q) = nil error, want one", body)
		}
	}
}

func FuzzDecode(f *testing.F) {
	seeds, _ := filepath.Glob("testdata/*.json")
	for _, s := range seeds {
		data, _ := os.ReadFile(s)
		f.Add(data)
	}
	f.Add([]byte(`{"type":"track","userId":1,"event":"e","sentAt":null,"version":"2"}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		ev, err := Decode(data)
		if err != nil {
			return
		}
		_ = ev.Validate()
		_ = ev.Time()
		out, err := json.Marshal(ev)
		if err != nil {
			t.Fatalf("Marshal after Decode: %v", err)
		}
		again, err := Decode(out)
		if err != nil {
			t.Fatalf("Decode(Marshal(Decode(x))) failed: %v\n%s", err, out)
		}
		if again.MessageID != ev.MessageID || again.Type != ev.Type || again.UserID != ev.UserID {
			t.Fatalf("round trip changed the event: %+v vs %+v", again, ev)
		}
	})
}

func BenchmarkDecodeTrack(b *testing.B) {
	data, err := os.ReadFile("testdata/seed_track.json")
	if err != nil {
		b.Fatal(err)
	}
	b.ReportAllocs()
	b.SetBytes(int64(len(data)))
	for b.Loop() {
		if _, err := Decode(data); err != nil {
			b.Fatal(err)
		}
	}
}

// TestAliasPrecedence: when a field comes in several spellings, the
// canonical one wins, else the first alias in byte order, every time.
func TestAliasPrecedence(t *testing.T) {
	tests := []struct {
		body, want string
	}{
		{`{"userId":"canonical","user_id":"snake","USERID":"upper"}`, "canonical"},
		{`{"user_id":"snake","USERID":"upper","userid":"lower"}`, "upper"},
		{`{"userid":"lower","user_id":"snake"}`, "snake"},
		{`{"UserId":"title","userid":"lower"}`, "title"},
	}
	for _, tt := range tests {
		for range 20 { // map order varies from run to run; the answer must not
			ev, err := Decode([]byte(tt.body))
			if err != nil {
				t.Fatal(err)
			}
			if ev.UserID != tt.want || ev.Raw["userId"] != tt.want || len(ev.Raw) != 1 {
				t.Fatalf("Decode(%s).UserID = %q (Raw %v), want %q", tt.body, ev.UserID, ev.Raw, tt.want)
			}
		}
	}
}

func TestMessageIDCountsCharacters(t *testing.T) {
	for _, tt := range []struct {
		id    string
		valid bool
	}{
		{strings.Repeat("é", 100), true}, // 200 bytes, 100 characters
		{strings.Repeat("é", 101), false},
		{strings.Repeat("a", 100), true},
	} {
		ev := &Event{Type: TypeIdentify, UserID: "u", MessageID: tt.id}
		if err := ev.Validate(); (err == nil) != tt.valid {
			t.Errorf("Validate(messageId of %d characters) = %v, want valid %v", utf8.RuneCountInString(tt.id), err, tt.valid)
		}
	}
}

// FuzzDecodeBatch fuzzes the batch decoder alone: it never panics, an
// accepted batch's items are each one complete JSON value, and no error
// carries a key planted in the body.
func FuzzDecodeBatch(f *testing.F) {
	f.Add([]byte(`{"writeKey":"k","context":{"ip":"1.2.3.4"},"batch":[{"type":"track","userId":"u","event":"e"},2]}`))
	f.Add([]byte(`{"batch":[],"batch":[]}`))
	f.Add([]byte(`{"Write_Key":"x","BATCH":[[[]]],"integrations":null}`))
	f.Fuzz(func(t *testing.T, data []byte) {
		const key = "sd-planted-batch-key"
		for _, in := range [][]byte{data, plant(data, key)} {
			b, err := DecodeBatch(in)
			if err != nil {
				if strings.Contains(err.Error(), key) {
					t.Fatalf("error %q carries the planted key", err)
				}
				continue
			}
			if len(b.Items) > MaxBatchEvents {
				t.Fatalf("%d items accepted", len(b.Items))
			}
			for _, it := range b.Items {
				if !json.Valid(it) {
					t.Fatalf("item %q is not one JSON value", it)
				}
				if ev, err := Decode(it); err == nil {
					b.Merge(ev)
				} else if strings.Contains(err.Error(), key) {
					t.Fatalf("item error %q carries the planted key", err)
				}
			}
		}
	})
}
