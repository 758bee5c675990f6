package segment

import (
	"bytes"
	"strings"
	"time"
	"unicode/utf8"

	json "github.com/segmentio/encoding/json"
)

// This file is ingest's way of decoding an event: a view of the bytes the
// event arrived in, read from the members the pre-pass (Scanner) recorded,
// instead of a tree of maps. ingest reads only the few fields it validates
// and routes on, and publishes the event as JSON again; decoding every
// value into a map only to encode it back cost it about a third of its CPU
// per event (docs/benchmarks.md). A view reads the same typed fields with
// the same rules and errors as FromMap, and AppendJSON writes the same
// object as encoding Raw would (the same keys and values; members in the
// order received, each value as the bytes it came in), so deliver, which
// decodes the published event into a tree, cannot tell the two apart.
//
// Why not a library: no JSON library reads an object's members from spans a
// pre-pass already found, and decoding with one means a second pass and the
// tree. Measured (BenchmarkDeployed in ingest/internal/receive, the handler
// as deployed, same run): a /v1/batch event 73-85 µs with segmentio's
// decoder into maps, 25 µs as a view; allocations per batch of 100 19,220
// -> 4,842. The guarantees are the same: TestViewMatchesDecode and
// FuzzViewMatchesDecode hold a view to Decode's fields, errors and output.

// vfield is a canonical top-level key a view tracks: the typed fields, and
// the other keys that have aliases (so that aliases are resolved as FromMap
// resolves them).
type vfield uint8

const (
	fType vfield = iota
	fMessageID
	fUserID
	fAnonymousID
	fEvent
	fName
	fGroupID
	fPreviousID
	fWriteKey
	fTimestamp
	fOriginalTimestamp
	fSentAt
	fReceivedAt
	fTraits
	fProperties
	fContext
	fIntegrations
	fVersion
	fCategory
	fChannel
	numFields
)

// fieldNames are the canonical spellings, by vfield.
var fieldNames = [numFields]string{
	"type", "messageId", "userId", "anonymousId", "event", "name", "groupId", "previousId", "writeKey",
	"timestamp", "originalTimestamp", "sentAt", "receivedAt",
	"traits", "properties", "context", "integrations", "version", "category", "channel",
}

// canonicalFields maps each canonical key to its vfield; aliasFields each
// alias of keyAliases.
var canonicalFields, aliasFields = func() (map[string]vfield, map[string]vfield) {
	c := make(map[string]vfield, numFields)
	for i, n := range fieldNames {
		c[n] = vfield(i)
	}
	a := make(map[string]vfield, len(keyAliases))
	for alias, canon := range keyAliases {
		f, ok := c[canon]
		if !ok {
			panic("segment: alias " + alias + " of untracked key " + canon)
		}
		a[alias] = f
	}
	return c, a
}()

// maxAliasLen is the longest alias in keyAliases.
const maxAliasLen = len("original_timestamp")

// view is an event kept as the bytes it arrived in.
type view struct {
	data    []byte   // the body the event is in
	members []Member // the event's top-level members, spans into data
	edits   []memberEdit
	pos     [numFields]int32 // the member each tracked key is read from, or -1
	extra   []extraMember    // members added (messageId, receivedAt, a merged context)
}

// memberEdit changes how a member is written. The zero value writes it as
// received.
type memberEdit struct {
	drop bool
	key  string // written instead of the member's key (its canonical spelling)
	val  []byte // written instead of the member's value
}

type extraMember struct {
	key string
	val []byte
}

func (v *view) edit(i int) *memberEdit {
	if v.edits == nil {
		v.edits = make([]memberEdit, len(v.members))
	}
	return &v.edits[i]
}

func (v *view) editOf(i int) memberEdit {
	if v.edits == nil {
		return memberEdit{}
	}
	return v.edits[i]
}

// value returns the JSON value of field f as it will be written, and its
// kind ('"', '0', '{', '[', 't', 'f', 'n'); ok is false when absent.
func (v *view) value(f vfield) (val []byte, kind byte, ok bool) {
	i := v.pos[f]
	if i < 0 {
		for _, x := range v.extra {
			if x.key == fieldNames[f] {
				return x.val, x.val[0], true
			}
		}
		return nil, 0, false
	}
	m := v.members[i]
	if e := v.editOf(int(i)); e.val != nil {
		return e.val, kindByte(e.val[0]), true
	}
	return v.data[m.Value.Start:m.Value.End], m.Kind, true
}

func kindByte(c byte) byte {
	if c == '-' || (c >= '0' && c <= '9') {
		return '0'
	}
	return c
}

// set makes val (JSON) the value of f, replacing the member or adding one.
func (v *view) set(f vfield, val []byte) {
	if i := v.pos[f]; i >= 0 {
		v.edit(int(i)).val = val
		return
	}
	for j := range v.extra {
		if v.extra[j].key == fieldNames[f] {
			v.extra[j].val = val
			return
		}
	}
	v.extra = append(v.extra, extraMember{fieldNames[f], val})
}

// drop removes f.
func (v *view) drop(f vfield) {
	if i := v.pos[f]; i >= 0 {
		v.edit(int(i)).drop = true
		v.pos[f] = -1
	}
	for j := range v.extra {
		if v.extra[j].key == fieldNames[f] {
			v.extra = append(v.extra[:j], v.extra[j+1:]...)
			return
		}
	}
}

// appendJSON writes the event's object.
func (v *view) appendJSON(b []byte) []byte {
	b = append(b, '{')
	first := true
	for i, m := range v.members {
		e := v.editOf(i)
		if e.drop {
			continue
		}
		if !first {
			b = append(b, ',')
		}
		first = false
		if e.key != "" {
			b = append(b, '"')
			b = append(b, e.key...) // a canonical key: plain ASCII
			b = append(b, '"')
		} else {
			b = append(b, v.data[m.Key.Start:m.Key.End]...)
		}
		b = append(b, ':')
		if e.val != nil {
			b = append(b, e.val...)
		} else {
			b = append(b, v.data[m.Value.Start:m.Value.End]...)
		}
	}
	for _, x := range v.extra {
		if !first {
			b = append(b, ',')
		}
		first = false
		b = append(b, '"')
		b = append(b, x.key...)
		b = append(b, '"', ':')
		b = append(b, x.val...)
	}
	return append(b, '}')
}

// size is about how many bytes appendJSON writes.
func (v *view) size() int {
	n := 2
	for i, m := range v.members {
		n += m.Value.End - m.Key.Start
		if e := v.editOf(i); e.val != nil {
			n += len(e.val)
		}
	}
	for _, x := range v.extra {
		n += len(x.key) + len(x.val) + 4
	}
	return n
}

// keyText returns the text of a key token that passed the scanner: a
// slice of the token when it has no escapes.
func keyText(tok []byte) []byte {
	if bytes.IndexByte(tok, '\\') < 0 {
		return tok[1 : len(tok)-1]
	}
	return []byte(unquote(tok))
}

// trackedKey returns the vfield a key spells, by canonicalKey's rule, and
// whether it is an alias (not the canonical spelling); f < 0 for a key no
// field has.
func trackedKey(k []byte) (f int, alias bool) {
	if c, ok := canonicalFields[string(k)]; ok {
		return int(c), false
	}
	if c, ok := aliasFields[string(k)]; ok {
		return int(c), true
	}
	ascii := true
	for _, c := range k {
		if c >= utf8.RuneSelf {
			ascii = false
			break
		}
	}
	if ascii {
		if len(k) > maxAliasLen {
			return -1, false
		}
		var buf [maxAliasLen]byte
		for i, c := range k {
			if 'A' <= c && c <= 'Z' {
				c += 'a' - 'A'
			}
			buf[i] = c
		}
		if c, ok := aliasFields[string(buf[:len(k)])]; ok {
			return int(c), true
		}
		return -1, false
	}
	// strings.ToLower maps some non-ASCII letters to ASCII ones (the
	// Kelvin sign to k): take canonicalKey's own path.
	if c, ok := aliasFields[strings.ToLower(string(k))]; ok {
		return int(c), true
	}
	return -1, false
}

// decodeView builds the view of the object whose members are given (spans
// into data; base is where the object starts, for error offsets), reading
// the typed fields by FromMap's rules.
func decodeView(data []byte, base int, members []Member) (*Event, error) {
	if i := dupMember(data, members); i >= 0 {
		k := unquote(data[members[i].Key.Start:members[i].Key.End])
		return nil, &SyntaxError{Offset: int64(members[i].Key.Start - base), Msg: "duplicate key" + knownName(k)}
	}
	v := &view{data: data, members: members}
	for i := range v.pos {
		v.pos[i] = -1
	}
	for i, m := range members {
		k := keyText(data[m.Key.Start:m.Key.End])
		f, alias := trackedKey(k)
		if f < 0 {
			continue
		}
		if alias {
			v.edit(i).key = fieldNames[f]
		}
		w := v.pos[f]
		if w < 0 {
			v.pos[f] = int32(i)
			continue
		}
		// Two spellings of one field: the canonical one wins, else the
		// alias first in byte order (FromMap's rule).
		wAlias := v.editOf(int(w)).key != ""
		switch {
		case !wAlias:
			v.edit(i).drop = true
		case !alias:
			v.edit(int(w)).drop = true
			v.pos[f] = int32(i)
		default:
			wk := keyText(data[members[w].Key.Start:members[w].Key.End])
			if bytes.Compare(k, wk) < 0 {
				v.edit(int(w)).drop = true
				v.pos[f] = int32(i)
			} else {
				v.edit(i).drop = true
			}
		}
	}
	e := &Event{view: v}
	var typ string
	var err error
	str := func(f vfield, dst *string) {
		if err == nil {
			*dst, err = v.stringField(f)
		}
	}
	str(fType, &typ)
	e.Type = Type(strings.ToLower(strings.TrimSpace(typ)))
	if typ != string(e.Type) && e.Type != "" {
		v.set(fType, appendQuoted(nil, string(e.Type)))
	}
	str(fMessageID, &e.MessageID)
	str(fUserID, &e.UserID)
	str(fAnonymousID, &e.AnonymousID)
	str(fEvent, &e.Event)
	str(fName, &e.Name)
	str(fGroupID, &e.GroupID)
	str(fPreviousID, &e.PreviousID)
	str(fWriteKey, &e.WriteKey)
	if err != nil {
		return nil, err
	}
	for _, t := range []struct {
		f   vfield
		dst *time.Time
	}{
		{fTimestamp, &e.Timestamp},
		{fOriginalTimestamp, &e.OriginalTimestamp},
		{fSentAt, &e.SentAt},
		{fReceivedAt, &e.ReceivedAt},
	} {
		if *t.dst, err = v.timeField(t.f); err != nil {
			return nil, err
		}
	}
	for _, f := range []vfield{fTraits, fProperties, fContext, fIntegrations} {
		if val, kind, ok := v.value(f); ok && kind != '{' && kind != 'n' {
			_ = val
			return nil, &FieldError{Field: fieldNames[f], Msg: "want an object, got " + kindOf(kind)}
		}
	}
	if _, kind, ok := v.value(fVersion); ok {
		switch kind {
		case 'n', '"', '0':
		default:
			return nil, &FieldError{Field: "version", Msg: "want a number or a string, got " + kindOf(kind)}
		}
	}
	return e, nil
}

// stringField reads an identifier as FromMap's stringField does: a number
// is kept as its decimal text, and written as a string.
func (v *view) stringField(f vfield) (string, error) {
	val, kind, ok := v.value(f)
	if !ok {
		return "", nil
	}
	switch kind {
	case 'n':
		return "", nil
	case '"':
		return unquote(val), nil
	case '0':
		s := string(val)
		v.set(f, appendQuoted(nil, s))
		return s, nil
	}
	return "", &FieldError{Field: fieldNames[f], Msg: "want a string, got " + kindOf(kind)}
}

// timeField reads a timestamp as FromMap's timeField does.
func (v *view) timeField(f vfield) (time.Time, error) {
	val, kind, ok := v.value(f)
	if !ok || kind == 'n' {
		return time.Time{}, nil
	}
	if kind != '"' {
		return time.Time{}, &FieldError{Field: fieldNames[f], Msg: "want an ISO-8601 string, got " + kindOf(kind)}
	}
	s := unquote(val)
	if s == "" {
		return time.Time{}, nil
	}
	t, err := ParseTime(s)
	if err != nil {
		return time.Time{}, &FieldError{Field: fieldNames[f], Msg: err.Error()}
	}
	return t, nil
}

// dupMember returns the index of the first member whose key (unescaped)
// repeats an earlier one, or -1.
func dupMember(data []byte, members []Member) int {
	if len(members) < 2 {
		return -1
	}
	// Pairwise comparison for the few short keys of an event, which needs
	// no allocation; a map past that, so that the cost stays linear in the
	// key bytes whatever the keys are (this runs before authentication).
	keyBytes := 0
	for _, m := range members {
		keyBytes += m.Key.End - m.Key.Start
	}
	if len(members) > 32 || keyBytes > 1024 {
		seen := make(map[string]struct{}, len(members))
		for i, m := range members {
			k := string(keyText(data[m.Key.Start:m.Key.End]))
			if _, dup := seen[k]; dup {
				return i
			}
			seen[k] = struct{}{}
		}
		return -1
	}
	var esc uint32 // bit i: members[i]'s key has an escape
	for i, m := range members {
		if bytes.IndexByte(data[m.Key.Start:m.Key.End], '\\') >= 0 {
			esc |= 1 << i
		}
	}
	for i := 1; i < len(members); i++ {
		ki := data[members[i].Key.Start:members[i].Key.End]
		for j := range i {
			kj := data[members[j].Key.Start:members[j].Key.End]
			if (esc>>i|esc>>j)&1 == 0 {
				if len(ki) == len(kj) && string(ki) == string(kj) {
					return i
				}
			} else if keyEqual(ki, kj) {
				return i
			}
		}
	}
	return -1
}

// keyEqual reports whether two key tokens that passed the scanner spell the
// same text.
func keyEqual(a, b []byte) bool {
	ea, eb := bytes.IndexByte(a, '\\') >= 0, bytes.IndexByte(b, '\\') >= 0
	if !ea && !eb {
		return bytes.Equal(a, b)
	}
	return bytes.Equal(keyText(a), keyText(b))
}

// appendQuoted appends s as a JSON string.
func appendQuoted(b []byte, s string) []byte {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c == '"' || c == '\\' || c >= utf8.RuneSelf {
			out, _ := json.Append(b, s, 0)
			return out
		}
	}
	b = append(b, '"')
	b = append(b, s...)
	return append(b, '"')
}

// DecodeView is DecodeScanned without the tree: the event is read from the
// members the Scanner s recorded, with the same rules and errors, and kept
// as data (which the event then refers to: the caller must not change it).
// Raw and the Traits, Properties and Context maps stay nil; AppendJSON and
// MarshalJSON write the event. For ingest, which reads only the typed
// fields and publishes the rest as it came.
func DecodeView(data []byte, s *Scanner) (*Event, error) {
	if err := startsObject(data); err != nil {
		return nil, err
	}
	return decodeView(data, 0, s.Members())
}

// startsObject checks that the first value of data is an object.
func startsObject(data []byte) error {
	i := 0
	for i < len(data) && isSpace(data[i]) {
		i++
	}
	if i < len(data) && data[i] != '{' {
		return &SyntaxError{Offset: int64(i), Msg: "want a JSON object, got " + kindOf(data[i])}
	}
	return nil
}

// AppendJSON appends the event's JSON object, as MarshalJSON writes it.
func (e *Event) AppendJSON(b []byte) ([]byte, error) {
	if e.view != nil {
		return e.view.appendJSON(b), nil
	}
	return json.Append(b, e.Raw, 0)
}

// SizeHint is about how many bytes AppendJSON will write for a view, or
// 0 when unknown.
func (e *Event) SizeHint() int {
	if e.view != nil {
		return e.view.size()
	}
	return 0
}

// SetType sets the event's type in the typed view and in what is written.
func (e *Event) SetType(t Type) {
	e.Type = t
	if e.view != nil {
		e.view.set(fType, appendQuoted(nil, string(t)))
		return
	}
	e.Raw["type"] = string(t)
}
