package segment

import (
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
)

// viewCases are bodies that exercise every rule a view must share with
// FromMap: aliases and their precedence, numbers as ids, escapes in keys,
// type normalisation, null and absent fields, and every field error.
var viewCases = []string{
	`{"type":"track","userId":"u","event":"e","messageId":"m"}`,
	`{"Type":" TRACK ","user_id":"snake","USERID":"upper","userid":"lower","Event":"e"}`,
	`{"userId":"canonical","user_id":"snake","type":"identify"}`,
	`{"type":"page","userId":12345,"anonymousId":-1.5e3,"messageId":7,"name":"Home"}`,
	`{"type":"track","user\u0049d":"esc","us\u0065r_id":"x","event":"e"}`,
	`{"type":"track","userId":"u","event":"e","writeKey":"k","write_key":"k2"}`,
	"{\"type\":\"identify\",\"WRITE_\u212aEY\":\"kelvin\",\"userId\":\"u\"}",
	`{"type":"identify","userId":"u","messageId":null,"receivedAt":null,"sentAt":null,"timestamp":""}`,
	`{"type":"identify","userId":"u","receivedAt":"2026-01-02T03:04:05.123456789Z","originalTimestamp":"2026-01-02"}`,
	`{"type":"track","userId":"u","event":"e","context":null,"integrations":{"All":true},"traits":{},"properties":{"a":{"a":1,"a":2}}}`,
	`{"type":"track","userId":"u","version":"2"}`,
	`{"type":"track","userId":"u","version":2}`,
	`{"type":"track","userId":"u","version":true}`,
	`{"type":"track","userId":{"id":1}}`,
	`{"type":["track"]}`,
	`{"type":"track","userId":"u","timestamp":"yesterday"}`,
	`{"type":"track","userId":"u","timestamp":12}`,
	`{"type":"track","userId":"u","properties":[1]}`,
	`{"type":"track","userId":"u","Context":"x"}`,
	`{"type":"track","userId":"u","userId":"v"}`,
	`{"a":1,"\u0061":2}`,
	`[1,2]`,
	` "track" `,
	`{}`,
	`{"Category":"c","category":"d","Channel":"server","TIMESTAMP":"x","Timestamp":"2026-01-01T00:00:00Z"}`,
}

// TestViewMatchesDecode: for each case, DecodeView finds what Decode finds
// (the same typed fields, or the same error), and what the view writes
// decodes to the same Raw as Decode's, after the setters ingest calls.
func TestViewMatchesDecode(t *testing.T) {
	cases := append([]string(nil), viewCases...)
	seeds, _ := filepath.Glob("testdata/*.json")
	for _, s := range seeds {
		data, _ := os.ReadFile(s)
		cases = append(cases, string(data))
	}
	for _, body := range cases {
		checkView(t, []byte(body))
	}
}

func FuzzViewMatchesDecode(f *testing.F) {
	for _, c := range viewCases {
		f.Add([]byte(c))
	}
	f.Fuzz(func(t *testing.T, data []byte) { checkView(t, data) })
}

// checkView compares DecodeView with Decode on data.
func checkView(t *testing.T, data []byte) {
	t.Helper()
	want, werr := Decode(data)
	s, serr := Check(data)
	var got *Event
	var gerr error
	if serr != nil {
		gerr = serr
	} else {
		got, gerr = DecodeView(data, s)
	}
	if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
		t.Fatalf("DecodeView(%q) error = %v, Decode's = %v", data, gerr, werr)
	}
	if werr != nil {
		return
	}
	compareEvents(t, data, want, got, func(e *Event) {
		e.DropWriteKey()
		if e.MessageID == "" {
			e.SetMessageID("generated")
		}
		if e.ReceivedAt.IsZero() {
			e.SetReceivedAt(time.Date(2026, 12, 1, 10, 0, 0, 5, time.UTC))
		}
	})
}

// compareEvents checks that a view (got) reads and writes as the tree
// (want) does, after prepare is applied to both.
func compareEvents(t *testing.T, data []byte, want, got *Event, prepare func(*Event)) {
	t.Helper()
	if diff := cmp.Diff(want, got, cmpIgnoreMaps()); diff != "" {
		t.Fatalf("DecodeView(%q) typed fields differ from Decode's (-Decode +view):\n%s", data, diff)
	}
	prepare(want)
	prepare(got)
	out, err := got.AppendJSON(nil)
	if err != nil {
		t.Fatal(err)
	}
	back, err := Decode(out)
	if err != nil {
		t.Fatalf("the view of %q wrote %s, which does not decode: %v", data, out, err)
	}
	if diff := cmp.Diff(want.Raw, back.Raw); diff != "" {
		t.Fatalf("the view of %q wrote %s, not Decode's event (-Decode +view):\n%s", data, out, diff)
	}
	if m, _ := got.MarshalJSON(); string(m) != string(out) {
		t.Fatalf("MarshalJSON = %s, AppendJSON = %s", m, out)
	}
}

// TestBatchEventMatchesDecode: each event of a batch, read with Batch.Event
// from the pre-pass's records and merged, is the event Decode and Merge
// make of the same item, and the merge adds as many bytes either way when
// the body has no spaces to lose.
func TestBatchEventMatchesDecode(t *testing.T) {
	items := strings.Join(viewCases, ",")
	for _, body := range []string{
		`{"batch":[` + items + `]}`,
		`{"context":{"ip":"1.2.3.4","library":{"name":"outer"},"ip":"5.6.7.8"},"integrations":{"All":false},"batch":[` + items + `]}`,
		`{"context":{},"integrations":null,"batch":[{"type":"track","userId":"u","event":"e","context":{"a":1}}]}`,
		`{"context":{"a":2,"b":3},"batch":[{"type":"track","userId":"u","event":"e","context":{ }},{"type":"track","userId":"u","event":"e","context":{"b":1}},{"type":"track","userId":"u","event":"e","CONTEXT":{"b":1}},{"type":"track","userId":"u","event":"e","Context":null}]}`,
		manyKeys(),
	} {
		checkBatchView(t, []byte(body))
	}
}

// manyKeys is a batch whose outer context and events' own contexts have
// enough keys that merging looks keys up in a set rather than pairwise.
func manyKeys() string {
	var outer, own []string
	for i := range 30 {
		outer = append(outer, fmt.Sprintf(`"k%d":%d`, i, i))
		if i%2 == 0 {
			own = append(own, fmt.Sprintf(`"k%d":"own"`, i))
		}
		own = append(own, fmt.Sprintf(`"o%d":true`, i))
	}
	return `{"context":{` + strings.Join(outer, ",") + `},"batch":[{"type":"track","userId":"u","event":"e","context":{` + strings.Join(own, ",") + `}}]}`
}

func FuzzBatchEventMatchesDecode(f *testing.F) {
	f.Add([]byte(`{"context":{"ip":"1.2.3.4"},"batch":[` + strings.Join(viewCases, ",") + `]}`))
	f.Add([]byte(`{"integrations":{"x":{"y":1}},"batch":[{"type":"track","userId":"u","event":"e","integrations":{"z":1}},1]}`))
	f.Fuzz(func(t *testing.T, data []byte) { checkBatchView(t, data) })
}

func checkBatchView(t *testing.T, data []byte) {
	t.Helper()
	bt, err := DecodeBatch(data) // the tree's batch
	if err != nil {
		return
	}
	bv, err := DecodeBatch(data) // the views' batch
	if err != nil {
		t.Fatal(err)
	}
	for i, item := range bt.Items {
		want, werr := Decode(item)
		got, gerr := bv.Event(i)
		if (werr == nil) != (gerr == nil) || (werr != nil && werr.Error() != gerr.Error()) {
			t.Fatalf("Batch.Event(%d) of %q error = %v, Decode's = %v", i, data, gerr, werr)
		}
		if werr != nil {
			continue
		}
		var addedTree, addedView int
		compareEvents(t, item, want, got, func(e *Event) {
			if e.view != nil {
				addedView = bv.Merge(e)
			} else {
				addedTree = bt.Merge(e)
			}
		})
		if (addedTree == 0) != (addedView == 0) {
			t.Fatalf("item %d of %q: merge added %d bytes to the tree, %d to the view", i, data, addedTree, addedView)
		}
	}
}
