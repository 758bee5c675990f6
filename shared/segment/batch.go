package segment

import (
	"bytes"
	json "github.com/segmentio/encoding/json"
)

// Limits of the Segment HTTP Tracking API (docs/api.md §1).
const (
	MaxEventBytes   = 32 << 10
	MaxRequestBytes = 500 << 10
	MaxBatchEvents  = 2500
)

// Batch is a /v1/batch body. Items stay undecoded so that each can be
// size-checked and rejected on its own.
type Batch struct {
	Items        []json.RawMessage
	Context      map[string]any
	Integrations map[string]any
	WriteKey     string
}

// DecodeBatch parses a /v1/batch body.
func DecodeBatch(data []byte) (*Batch, error) {
	var top map[string]json.RawMessage
	if err := json.Unmarshal(data, &top); err != nil || top == nil {
		if _, derr := decodeObject(data); derr != nil {
			return nil, derr
		}
		return nil, &SyntaxError{Msg: "want a JSON object"}
	}
	b := &Batch{}
	found := false
	for k, raw := range top {
		switch canonicalKey(k) {
		case "batch":
			found = true
			if err := json.Unmarshal(raw, &b.Items); err != nil {
				return nil, &FieldError{Field: "batch", Msg: "want an array of events"}
			}
		case "context":
			obj, err := rawObject(k, raw)
			if err != nil {
				return nil, err
			}
			b.Context = obj
		case "integrations":
			obj, err := rawObject(k, raw)
			if err != nil {
				return nil, err
			}
			b.Integrations = obj
		case "writeKey":
			if err := json.Unmarshal(raw, &b.WriteKey); err != nil {
				return nil, &FieldError{Field: "writeKey", Msg: "want a string"}
			}
		}
	}
	if !found {
		return nil, &FieldError{Field: "batch", Msg: "required"}
	}
	return b, nil
}

func rawObject(key string, raw json.RawMessage) (map[string]any, error) {
	if bytes.Equal(bytes.TrimSpace(raw), []byte("null")) {
		return nil, nil
	}
	m, err := decodeObject(raw)
	if err != nil {
		return nil, &FieldError{Field: key, Msg: "want an object"}
	}
	return m, nil
}

// Merge applies the batch's outer context and integrations to one of its
// events: the event's own keys win.
func (b *Batch) Merge(e *Event) {
	e.Context = mergeInto(e.Raw, "context", b.Context)
	mergeInto(e.Raw, "integrations", b.Integrations)
}

// mergeInto adds outer's keys missing from raw[key] and returns the result.
func mergeInto(raw map[string]any, key string, outer map[string]any) map[string]any {
	own, _ := raw[key].(map[string]any)
	if len(outer) == 0 {
		return own
	}
	if own == nil {
		own = make(map[string]any, len(outer))
		raw[key] = own
	}
	for k, v := range outer {
		if _, ok := own[k]; !ok {
			own[k] = v
		}
	}
	return own
}
