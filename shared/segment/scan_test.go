package segment

import (
	"bytes"
	stdjson "encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"testing"
	"unicode/utf8"
)

func TestScannerErrors(t *testing.T) {
	deep := strings.Repeat("[", MaxDepth) + strings.Repeat("]", MaxDepth)
	tests := []struct {
		body    string
		wantOff int64 // -1: valid
		wantMsg string
	}{
		{`{"a":[1,2,{"b":null}],"c":"\u00e9\n"}`, -1, ""},
		{deep, -1, ""},
		{`{"a":` + deep + `}`, 5 + MaxDepth - 1, "nesting deeper than 64"},
		{strings.Repeat("[", 16000), MaxDepth, "nesting deeper than 64"},
		{`{"type":"track",,"writeKey":"sd-secret"}`, 16, "want a string as object key"},
		{`{"a":1 "b":2}`, 7, "want ',' or '}'"},
		{`[1 2]`, 3, "want ',' or ']'"},
		{`{"a" 1}`, 5, "want ':'"},
		{`{"a":tru}`, 8, "invalid literal"},
		{`{"a":-}`, 6, "invalid number"},
		{`{"a":01}`, 6, "want ',' or '}'"},
		{`{"a":1.}`, 7, "invalid number"},
		{`{"a":1e}`, 7, "invalid number"},
		{`{"a":"x` + "\x01" + `"}`, 7, "control character"},
		{`{"a":"\x"}`, 7, "invalid escape"},
		{`{"a":"\u12G4"}`, 10, "invalid \\u escape"},
		{"{\"a\":\"ok\xff\"}", 8, "invalid UTF-8"},
		{"{\"\xc3\x28\":1}", 2, "invalid UTF-8"},
		{`{"a":` + strings.Repeat("9", MaxNumberLen+1) + `}`, 5, "number longer than 128"},
		{`{"a":1} x`, 8, "data after the top-level value"},
		{`{"a":1`, 6, "unexpected end"},
		{``, 0, "empty body"},
		{`   `, 3, "empty body"},
		{`"unterminated`, 13, "unexpected end"},
		{`12`, -1, ""},
		{`-0.5e+3`, -1, ""},
		{`{"a":]`, 5, "want a JSON value"},
		{`[1,]`, 3, "want a JSON value"},
		{`{"a":1,}`, 7, "want a string as object key"},
	}
	for _, tt := range tests {
		t.Run(tt.body[:min(len(tt.body), 40)], func(t *testing.T) {
			_, err := Check([]byte(tt.body))
			if tt.wantOff < 0 {
				if err != nil {
					t.Fatalf("Check(%q) = %v, want nil", tt.body, err)
				}
				return
			}
			var se *SyntaxError
			if !errors.As(err, &se) {
				t.Fatalf("Check(%q) = %v, want a *SyntaxError", tt.body, err)
			}
			if se.Offset != tt.wantOff || !strings.Contains(se.Msg, tt.wantMsg) {
				t.Errorf("Check(%q) = %v, want %q at byte %d", tt.body, err, tt.wantMsg, tt.wantOff)
			}
			if strings.Contains(err.Error(), "sd-secret") {
				t.Errorf("error %q echoes the input", err)
			}
		})
	}
}

// TestScannerStopsAtDepth shows that a body nested past MaxDepth costs
// MaxDepth+1 bytes of scanning however long it is.
func TestScannerStopsAtDepth(t *testing.T) {
	body := []byte(strings.Repeat(`{"a":[`, 100000))
	s := &Scanner{}
	err := s.Feed(body)
	if err == nil {
		t.Fatal("Feed of 200,000 levels = nil error")
	}
	if s.MaxDepthSeen != MaxDepth+1 {
		t.Errorf("MaxDepthSeen = %d, want %d", s.MaxDepthSeen, MaxDepth+1)
	}
	if s.Scanned() > 6*MaxDepth {
		t.Errorf("scanned %d bytes, want at most %d", s.Scanned(), 6*MaxDepth)
	}
}

func TestScannerMembersAndItems(t *testing.T) {
	body := []byte(` { "writeKey" : "k\"1", "batch":[ {"a":[1]} , 2,"x" ], "n":-1.5e3 ,"o":{"batch":[9]}} `)
	s, err := Check(body)
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, m := range s.Members() {
		got = append(got, string(body[m.Key.Start:m.Key.End])+"="+string(body[m.Value.Start:m.Value.End])+"/"+string(m.Kind))
	}
	want := []string{`"writeKey"="k\"1"/"`, `"batch"=[ {"a":[1]} , 2,"x" ]/[`, `"n"=-1.5e3/0`, `"o"={"batch":[9]}/{`}
	if strings.Join(got, " ") != strings.Join(want, " ") {
		t.Errorf("Members = %q, want %q", got, want)
	}
	var items []string
	for _, sp := range s.Items(1) {
		items = append(items, string(body[sp.Start:sp.End]))
	}
	if strings.Join(items, "|") != `{"a":[1]}|2|"x"` {
		t.Errorf("Items(1) = %q", items)
	}
	if len(s.Items(3)) != 0 {
		t.Errorf("Items of a nested array = %v, want none", s.Items(3))
	}
	// The members of each item that is an object: what a batch's events
	// are read from without a second scan.
	var im []string
	for _, ms := range s.ItemMembers(1) {
		var one []string
		for _, m := range ms {
			one = append(one, string(body[m.Key.Start:m.Key.End])+"="+string(body[m.Value.Start:m.Value.End])+"/"+string(m.Kind))
		}
		im = append(im, strings.Join(one, ","))
	}
	if got, want := strings.Join(im, "|"), `"a"=[1]/[||`; got != want {
		t.Errorf("ItemMembers(1) = %q, want %q", got, want)
	}
	two := []byte(`{"batch":[{"type":"track","n":-1,"o":{"p":{"q":2}},"s":"x"},{},{"e":[{"f":1}],"t":true}],"x":[{"y":1}]}`)
	s, err = Check(two)
	if err != nil {
		t.Fatal(err)
	}
	im = nil
	for _, ms := range s.ItemMembers(0) {
		var one []string
		for _, m := range ms {
			one = append(one, string(two[m.Key.Start:m.Key.End])+"="+string(two[m.Value.Start:m.Value.End])+"/"+string(m.Kind))
		}
		im = append(im, strings.Join(one, ","))
	}
	if got, want := strings.Join(im, "|"), `"type"="track"/","n"=-1/0,"o"={"p":{"q":2}}/{,"s"="x"/"||"e"=[{"f":1}]/[,"t"=true/t`; got != want {
		t.Errorf("ItemMembers(0) = %q, want %q", got, want)
	}
	if got := s.ItemMembers(1); len(got) != 1 || len(got[0]) != 1 {
		t.Errorf("ItemMembers(1) = %v, want one item of one member", got)
	}
}

// TestScannerFeedInPieces shows that feeding a body byte by byte finds the
// same as scanning it whole.
func TestScannerFeedInPieces(t *testing.T) {
	for _, body := range []string{`{"a":"xé\"y","b":[1,-2.5e10,true,null,{}],"c":12}`, `{"a":1,,}`, `123`, "{\"a\":\"\xe2\x82\"}"} {
		whole, werr := Check([]byte(body))
		s := &Scanner{}
		var perr error
		for i := 1; i <= len(body) && perr == nil; i++ {
			perr = s.Feed([]byte(body[:i]))
		}
		if perr == nil {
			perr = s.End([]byte(body))
		}
		if (werr == nil) != (perr == nil) || (werr != nil && werr.Error() != perr.Error()) {
			t.Errorf("%q: whole = %v, in pieces = %v", body, werr, perr)
		}
		if werr == nil && len(whole.Members()) != len(s.Members()) {
			t.Errorf("%q: members differ", body)
		}
	}
}

// FuzzScanner checks the pre-pass against encoding/json: it accepts
// exactly the valid JSON within the bounds, and its errors never carry
// bytes of the input.
func FuzzScanner(f *testing.F) {
	for _, s := range []string{`{"a":[1,2]}`, `[[[[]]]]`, `{"a":"\u00e9"}`, `1e5`, `{"a":1,,"writeKey":"sd-planted-key"}`, "\"\xff\""} {
		f.Add([]byte(s))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, in := range [][]byte{data, plant(data, "sd-planted-key-123")} {
			_, err := Check(in)
			valid := stdjson.Valid(in) && utf8.Valid(in) && depthOf(in) <= MaxDepth && !longNumber(in)
			if valid && err != nil {
				t.Fatalf("Check(%q) = %v, want nil", in, err)
			}
			if !stdjson.Valid(in) && err == nil {
				t.Fatalf("Check(%q) = nil, encoding/json says invalid", in)
			}
			if err != nil && strings.Contains(err.Error(), "sd-planted-key-123") {
				t.Fatalf("error %q carries the planted key", err)
			}
		}
	})
}

// plant puts a key in the middle of data, inside a string where it can.
func plant(data []byte, key string) []byte {
	if i := bytes.IndexByte(data, '"'); i >= 0 {
		return append(append(append([]byte{}, data[:i+1]...), key...), data[i+1:]...)
	}
	return append(append([]byte(key), data...), key...)
}

// depthOf is the nesting depth of valid JSON.
func depthOf(b []byte) int {
	d, maxd := 0, 0
	dec := stdjson.NewDecoder(bytes.NewReader(b))
	for {
		tok, err := dec.Token()
		if err != nil {
			return maxd
		}
		if dl, ok := tok.(stdjson.Delim); ok {
			if dl == '{' || dl == '[' {
				d++
				maxd = max(maxd, d)
			} else {
				d--
			}
		}
	}
}

func longNumber(b []byte) bool {
	dec := stdjson.NewDecoder(bytes.NewReader(b))
	dec.UseNumber()
	for {
		tok, err := dec.Token()
		if err != nil {
			return false
		}
		if n, ok := tok.(stdjson.Number); ok && len(n) > MaxNumberLen {
			return true
		}
	}
}

// BenchmarkCheck is the pre-pass over a /v1/batch of 100 ~1 KB events
// (scripts/bench/track.json), against bytes.Count over the same bytes (a
// single pass doing nearly nothing per byte) in the same run.
func BenchmarkCheck(b *testing.B) {
	data, err := os.ReadFile("../../scripts/bench/track.json")
	if err != nil {
		b.Fatal(err)
	}
	items := make([]string, 100)
	for i := range items {
		items[i] = strings.Replace(strings.TrimSpace(string(data)), "USERID", fmt.Sprint("user-", i), 1)
	}
	body := []byte(`{"batch":[` + strings.Join(items, ",") + `]}`)
	b.Run("baseline-count", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		for b.Loop() {
			_ = bytes.Count(body, []byte{'"'})
		}
	})
	b.Run("check", func(b *testing.B) {
		b.SetBytes(int64(len(body)))
		b.ReportAllocs()
		for b.Loop() {
			if _, err := Check(body); err != nil {
				b.Fatal(err)
			}
		}
	})
}
