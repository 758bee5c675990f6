package segment

import (
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
		if key == "context" {
			b.Context = obj
		} else {
			b.Integrations = obj
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
