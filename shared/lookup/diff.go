package lookup

import (
	"bytes"
	"encoding/json"
)

// Diff returns the desired fields whose value differs from the found
// entity's, so that an update PATCHes only what changed; it returns nil when
// nothing changed. Values compare by their JSON form, so 5, 5.0 and
// json.Number("5") are equal; a found value that is an object with an "id"
// (an expanded reference, such as a user's customer) equals a scalar id.
func Diff(found, desired map[string]any) map[string]any {
	var changed map[string]any
	for k, want := range desired {
		have, ok := found[k]
		if ok && sameValue(have, want) {
			continue
		}
		if changed == nil {
			changed = map[string]any{}
		}
		changed[k] = want
	}
	return changed
}

func sameValue(have, want any) bool {
	if ref, ok := have.(map[string]any); ok {
		if _, isMap := want.(map[string]any); !isMap {
			if id, ok := ref["id"]; ok {
				have = id
			}
		}
	}
	a, err1 := canonicalJSON(have)
	b, err2 := canonicalJSON(want)
	return err1 == nil && err2 == nil && bytes.Equal(a, b)
}

// canonicalJSON encodes v with numbers normalised, so equal values encode equally.
func canonicalJSON(v any) ([]byte, error) {
	raw, err := json.Marshal(v)
	if err != nil {
		return nil, err
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	var generic any
	if err := dec.Decode(&generic); err != nil {
		return nil, err
	}
	return json.Marshal(normaliseNumbers(generic))
}

func normaliseNumbers(v any) any {
	switch t := v.(type) {
	case json.Number:
		if i, err := t.Int64(); err == nil {
			return i
		}
		if f, err := t.Float64(); err == nil {
			if f == float64(int64(f)) && f < 1<<53 && f > -(1<<53) {
				return int64(f)
			}
			return f
		}
		return string(t)
	case map[string]any:
		for k, e := range t {
			t[k] = normaliseNumbers(e)
		}
		return t
	case []any:
		for i, e := range t {
			t[i] = normaliseNumbers(e)
		}
		return t
	default:
		return v
	}
}
