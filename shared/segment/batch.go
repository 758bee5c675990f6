package segment

import (
	"bytes"
	"fmt"

	json "github.com/segmentio/encoding/json"
)

// Limits of the Segment HTTP Tracking API (docs/api.md §1), and the cap on a
// batch's outer context and integrations.
const (
	// MaxEventBytes bounds one event as it will be published: for a batch
	// event, its own bytes plus what merging the outer context and
	// integrations adds to it.
	MaxEventBytes   = 32 << 10
	MaxRequestBytes = 500 << 10
	MaxBatchEvents  = 2500
	// MaxOuterBytes bounds a batch's outer context and integrations
	// together. They are copied into every event, so without their own
	// cap a 500 KB batch of 2,500 events could publish 2,500 times its
	// context. A rich analytics.js context is 1–2 KB.
	MaxOuterBytes = 8 << 10
	// MaxOuterKeys bounds the top-level keys of the outer context and
	// integrations together: merging copies them into each event that has
	// its own context, so their number, not only their bytes, is
	// multiplied by up to 2,500. Segment libraries send about a dozen.
	MaxOuterKeys = 64
)

// TooLargeError is input over one of the limits above: the whole request
// (413) unless the caller applies it to one event of a batch.
type TooLargeError struct {
	Msg string
}

func (e *TooLargeError) Error() string { return e.Msg }

// Batch is a /v1/batch body. Items stay undecoded so that each can be
// size-checked and rejected on its own.
type Batch struct {
	Items        []json.RawMessage
	Context      map[string]any
	Integrations map[string]any
	WriteKey     string
	// OuterBytes is the size of the outer context and integrations in the
	// body: the most merging adds to one event.
	OuterBytes int

	// encoded sizes of each outer key/value pair, computed on first Merge
	pairs map[string]map[string]int

	// For Event and the merge of views: the body, each item's span and
	// members (from the pre-pass), and the outer context and
	// integrations as they came.
	data        []byte
	spans       []Span
	itemMembers [][]Member
	outerRaw    [2][]byte    // context, integrations; nil when absent or null
	outerPairs  [2][]rawPair // their members, computed on first merge
}

// rawPair is one member of an outer object: its key, and the member's bytes
// ("key":value).
type rawPair struct {
	key string
	kv  []byte
}

// DecodeBatch parses a /v1/batch body. It runs the pre-pass over the whole
// body and decodes only the outer context and integrations: the events are
// found by the pre-pass and left as bytes. Top-level keys follow FromMap's
// spelling rule (the canonical one wins, else the first in byte order).
func DecodeBatch(data []byte) (*Batch, error) {
	s, err := Check(data)
	if err != nil {
		return nil, err
	}
	return DecodeScannedBatch(data, s)
}

// DecodeScannedBatch is DecodeBatch for data the caller has already run
// through the Scanner s (to the end, without error).
func DecodeScannedBatch(data []byte, s *Scanner) (*Batch, error) {
	if err := topLevelObject(data, s); err != nil {
		return nil, err
	}
	members := s.Members()
	// The member each canonical key is read from.
	type pick struct {
		raw string
		i   int
	}
	chosen := map[string]pick{}
	for i, m := range members {
		k := unquote(data[m.Key.Start:m.Key.End])
		c := canonicalKey(k)
		switch c {
		case "batch", "context", "integrations", "writeKey":
		default:
			continue
		}
		if p, ok := chosen[c]; ok && (p.raw == c || (k != c && p.raw < k)) {
			continue
		}
		chosen[c] = pick{k, i}
	}
	b := &Batch{}
	p, ok := chosen["batch"]
	if !ok {
		return nil, &FieldError{Field: "batch", Msg: "required"}
	}
	if members[p.i].Kind != '[' {
		return nil, &FieldError{Field: "batch", Msg: "want an array of events"}
	}
	items := s.Items(p.i)
	if len(items) > MaxBatchEvents {
		return nil, &TooLargeError{Msg: fmt.Sprintf("batch of %d events; at most %d", len(items), MaxBatchEvents)}
	}
	b.Items = make([]json.RawMessage, len(items))
	for i, sp := range items {
		b.Items[i] = data[sp.Start:sp.End:sp.End]
	}
	b.data, b.spans, b.itemMembers = data, items, s.ItemMembers(p.i)
	outer := 0
	for _, key := range []string{"context", "integrations"} {
		if p, ok := chosen[key]; ok {
			v := members[p.i].Value
			outer += v.End - v.Start
		}
	}
	b.OuterBytes = outer
	if outer > MaxOuterBytes {
		return nil, &TooLargeError{Msg: fmt.Sprintf("batch context and integrations together larger than %d bytes", MaxOuterBytes)}
	}
	for _, key := range []string{"context", "integrations"} {
		p, ok := chosen[key]
		if !ok {
			continue
		}
		m := members[p.i]
		switch m.Kind {
		case 'n':
			continue
		case '{':
		default:
			return nil, &FieldError{Field: key, Msg: "want an object"}
		}
		obj, err := decodeObject(data[m.Value.Start:m.Value.End])
		if err != nil {
			return nil, &FieldError{Field: key, Msg: "want an object"}
		}
		raw := data[m.Value.Start:m.Value.End:m.Value.End]
		if key == "context" {
			b.Context, b.outerRaw[0] = obj, raw
		} else {
			b.Integrations, b.outerRaw[1] = obj, raw
		}
	}
	if n := len(b.Context) + len(b.Integrations); n > MaxOuterKeys {
		return nil, &TooLargeError{Msg: fmt.Sprintf("batch context and integrations together have %d top-level keys; at most %d", n, MaxOuterKeys)}
	}
	if p, ok := chosen["writeKey"]; ok {
		m := members[p.i]
		switch m.Kind {
		case '"':
			b.WriteKey = unquote(data[m.Value.Start:m.Value.End])
		case 'n':
		default:
			return nil, &FieldError{Field: "writeKey", Msg: "want a string"}
		}
	}
	return b, nil
}

// Merge applies the batch's outer context and integrations to one of its
// events: the event's own keys win. It returns how many bytes the merge adds
// to the event's JSON, so that the caller can bound the event as it will be
// published.
func (b *Batch) Merge(e *Event) (added int) {
	if e.view != nil {
		return b.mergeView(e.view)
	}
	var n int
	e.Context, n = b.mergeInto(e.Raw, "context", b.Context)
	added += n
	_, n = b.mergeInto(e.Raw, "integrations", b.Integrations)
	return added + n
}

// mergeInto adds outer's keys missing from raw[key] and returns the result
// with the bytes added.
func (b *Batch) mergeInto(raw map[string]any, key string, outer map[string]any) (map[string]any, int) {
	own, _ := raw[key].(map[string]any)
	if len(outer) == 0 {
		return own, 0
	}
	sizes := b.pairSizes(key, outer)
	added := 0
	if own == nil {
		// Every event without its own gets the outer map itself, not a
		// copy: nothing changes it after the merge.
		raw[key] = outer
		added = len(key) + 4 // ,"key":
		for _, n := range sizes {
			added += n + 1
		}
		return outer, added
	}
	for k, v := range outer {
		if _, ok := own[k]; !ok {
			own[k] = v
			added += sizes[k] + 1
		}
	}
	return own, added
}

// pairSizes returns the encoded size of each "k":v pair of outer, computed
// once per batch.
func (b *Batch) pairSizes(key string, outer map[string]any) map[string]int {
	if b.pairs == nil {
		b.pairs = map[string]map[string]int{}
	}
	if s, ok := b.pairs[key]; ok {
		return s
	}
	s := make(map[string]int, len(outer))
	var buf []byte
	for k, v := range outer {
		buf, _ = json.Append(buf[:0], k, 0)
		n := len(buf) + 1
		buf, _ = json.Append(buf[:0], v, 0)
		s[k] = n + len(buf)
	}
	b.pairs[key] = s
	return s
}

// Event decodes item i as a view (see DecodeView) from the members the
// pre-pass recorded, without scanning its bytes again. Its errors are
// Decode's for the item alone (offsets from the item's start).
func (b *Batch) Event(i int) (*Event, error) {
	if b.data == nil {
		return Decode(b.Items[i]) // a Batch not made by DecodeScannedBatch
	}
	sp := b.spans[i]
	if c := b.data[sp.Start]; c != '{' {
		return nil, &SyntaxError{Offset: 0, Msg: "want a JSON object, got " + kindOf(c)}
	}
	return decodeView(b.data, sp.Start, b.itemMembers[i])
}

// mergeView is Merge for a view: the outer object's members that the
// event's own object lacks are appended to it, as bytes.
func (b *Batch) mergeView(v *view) (added int) {
	for j, f := range []vfield{fContext, fIntegrations} {
		outer := b.outerRaw[j]
		if outer == nil || len(b.outerMap(j)) == 0 {
			continue
		}
		own, kind, ok := v.value(f)
		switch {
		case !ok:
			v.set(f, outer)
			added += len(fieldNames[f]) + 4 + len(outer) // ,"key":outer
		case kind == 'n':
			v.set(f, outer)
			added += len(outer) - len(own)
		default:
			merged := b.mergeObject(j, own)
			if merged != nil {
				v.set(f, merged)
				added += len(merged) - len(own)
			}
		}
	}
	return added
}

func (b *Batch) outerMap(j int) map[string]any {
	if j == 0 {
		return b.Context
	}
	return b.Integrations
}

// mergeObject returns the object own (JSON that passed the pre-pass) with
// the members of outer object j whose keys it lacks appended, or nil when
// it lacks none.
func (b *Batch) mergeObject(j int, own []byte) []byte {
	pairs := b.rawPairs(j)
	s, err := Check(own) // the event's own object: its keys
	if err != nil {
		return nil // cannot happen: own passed the pre-pass as part of the body
	}
	ownKeys := s.Members()
	has := func(k string) bool {
		for _, m := range ownKeys {
			if string(keyText(own[m.Key.Start:m.Key.End])) == k {
				return true
			}
		}
		return false
	}
	if len(ownKeys)*len(pairs) > 256 { // linear in the keys, not their product
		set := make(map[string]struct{}, len(ownKeys))
		for _, m := range ownKeys {
			set[string(keyText(own[m.Key.Start:m.Key.End]))] = struct{}{}
		}
		has = func(k string) bool { _, ok := set[k]; return ok }
	}
	var out []byte
	for _, p := range pairs {
		if has(p.key) {
			continue
		}
		if out == nil {
			inner := bytes.TrimSpace(own[1 : len(own)-1])
			out = make([]byte, 0, len(own)+len(b.outerRaw[j]))
			out = append(out, '{')
			out = append(out, inner...)
			if len(inner) > 0 {
				out = append(out, ',')
			}
		} else {
			out = append(out, ',')
		}
		out = append(out, p.kv...)
	}
	if out == nil {
		return nil
	}
	return append(out, '}')
}

// rawPairs returns the members of outer object j, each key once (the last
// of duplicates, as decoding keeps), computed once per batch.
func (b *Batch) rawPairs(j int) []rawPair {
	if b.outerPairs[j] != nil {
		return b.outerPairs[j]
	}
	raw := b.outerRaw[j]
	s, err := Check(raw)
	if err != nil {
		return nil
	}
	members := s.Members()
	pairs := make([]rawPair, 0, len(members))
	last := make(map[string]int, len(members))
	for _, m := range members {
		k := unquote(raw[m.Key.Start:m.Key.End])
		p := rawPair{k, raw[m.Key.Start:m.Value.End]}
		if i, ok := last[k]; ok {
			pairs[i] = p
			continue
		}
		last[k] = len(pairs)
		pairs = append(pairs, p)
	}
	b.outerPairs[j] = pairs
	return pairs
}
