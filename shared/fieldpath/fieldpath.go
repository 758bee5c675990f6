// Package fieldpath parses and evaluates the field paths that account
// settings use to pick a value out of a Segment event: `userId`,
// `traits.customerId`, `properties['Field With Space']`,
// `context.traits["plan"]`, `properties.items[0].sku`.
//
// Grammar, resolved from the event root:
//
//	path    = first { "." name | "[" quoted "]" | "[" index "]" }
//	first   = name | "[" quoted "]"
//	name    = one or more bytes other than . [ ] ' " and white space
//	quoted  = '...' or "..." (a backslash escapes the next character)
//	index   = decimal digits (an array element, counted from 0)
//
// White space around the whole path is ignored. Paths are parsed once, when
// a configuration is loaded; Lookup does not allocate.
package fieldpath

import (
	"strconv"
	"strings"

	"github.com/startdeliver/segment-destination/shared/abbrev"
)

// Path is a parsed field path. The zero Path is empty and finds nothing.
// A Path is immutable and safe for concurrent use.
type Path struct {
	segs []seg
}

// seg is one step of a path: a map key, or an array index when index >= 0.
type seg struct {
	name  string
	index int
}

// SyntaxError reports a malformed path. Pos is the byte offset in Path at
// which the problem was found.
type SyntaxError struct {
	Path string
	Pos  int
	Msg  string
}

func (e *SyntaxError) Error() string {
	return "invalid field path " + strconv.Quote(abbrev.String(e.Path, 80)) + " at offset " + strconv.Itoa(e.Pos) + ": " + e.Msg
}

// maxIndex bounds array indices so that parsing never overflows.
const maxIndex = 1 << 30

// Parse parses a field path. A malformed path returns a *SyntaxError.
func Parse(s string) (Path, error) {
	trimmed := strings.TrimSpace(s)
	off := strings.Index(s, trimmed) // offset of trimmed within s, for positions
	if trimmed == "" {
		return Path{}, &SyntaxError{Path: s, Pos: len(s), Msg: "empty path"}
	}
	p := parser{s: trimmed}
	segs, err := p.parse()
	if err != nil {
		err.Path = s
		err.Pos += off
		return Path{}, err
	}
	return Path{segs: segs}, nil
}

// MustParse is Parse for paths known to be valid; it panics otherwise.
func MustParse(s string) Path {
	p, err := Parse(s)
	if err != nil {
		panic(err)
	}
	return p
}

type parser struct {
	s   string
	pos int
}

func (p *parser) fail(msg string) *SyntaxError {
	return &SyntaxError{Pos: p.pos, Msg: msg}
}

func (p *parser) parse() ([]seg, *SyntaxError) {
	segs := make([]seg, 0, 1+strings.Count(p.s, ".")+strings.Count(p.s, "["))
	// The first step is a bare name or a bracketed quoted name.
	if p.s[0] == '[' {
		sg, err := p.bracket()
		if err != nil {
			return nil, err
		}
		if sg.index >= 0 {
			return nil, &SyntaxError{Pos: 1, Msg: "a path cannot start with an array index"}
		}
		segs = append(segs, sg)
	} else {
		name, err := p.name()
		if err != nil {
			return nil, err
		}
		segs = append(segs, seg{name: name, index: -1})
	}
	for p.pos < len(p.s) {
		switch c := p.s[p.pos]; c {
		case '.':
			p.pos++
			name, err := p.name()
			if err != nil {
				return nil, err
			}
			segs = append(segs, seg{name: name, index: -1})
		case '[':
			sg, err := p.bracket()
			if err != nil {
				return nil, err
			}
			segs = append(segs, sg)
		default:
			return nil, p.fail("unexpected " + describe(c) + ` (want "." or "[")`)
		}
	}
	return segs, nil
}

// name reads a bare name at p.pos.
func (p *parser) name() (string, *SyntaxError) {
	start := p.pos
	for p.pos < len(p.s) && isNameByte(p.s[p.pos]) {
		p.pos++
	}
	if p.pos == start {
		if p.pos == len(p.s) {
			return "", p.fail("missing name at end of path")
		}
		return "", p.fail("unexpected " + describe(p.s[p.pos]) + " (want a name)")
	}
	return p.s[start:p.pos], nil
}

// bracket reads "[...]" at p.pos: a quoted name or an index.
func (p *parser) bracket() (seg, *SyntaxError) {
	p.pos++ // '['
	if p.pos == len(p.s) {
		return seg{}, p.fail(`unclosed "["`)
	}
	var sg seg
	switch c := p.s[p.pos]; {
	case c == '\'' || c == '"':
		name, err := p.quoted(c)
		if err != nil {
			return seg{}, err
		}
		sg = seg{name: name, index: -1}
	case c >= '0' && c <= '9':
		start := p.pos
		n := 0
		for p.pos < len(p.s) && p.s[p.pos] >= '0' && p.s[p.pos] <= '9' {
			n = n*10 + int(p.s[p.pos]-'0')
			if n > maxIndex {
				p.pos = start
				return seg{}, p.fail("array index too large")
			}
			p.pos++
		}
		sg = seg{index: n}
	default:
		return seg{}, p.fail("unexpected " + describe(c) + " after \"[\" (want a quoted name or an index)")
	}
	if p.pos == len(p.s) {
		return seg{}, p.fail(`missing "]"`)
	}
	if p.s[p.pos] != ']' {
		return seg{}, p.fail("unexpected " + describe(p.s[p.pos]) + ` (want "]")`)
	}
	p.pos++
	return sg, nil
}

// quoted reads a string quoted with q at p.pos.
func (p *parser) quoted(q byte) (string, *SyntaxError) {
	start := p.pos
	p.pos++
	var b strings.Builder
	plain := true // no escapes seen: the name is a substring of s
	for p.pos < len(p.s) {
		c := p.s[p.pos]
		switch {
		case c == q:
			p.pos++
			if plain {
				return p.s[start+1 : p.pos-1], nil
			}
			return b.String(), nil
		case c == '\\':
			if plain {
				b.WriteString(p.s[start+1 : p.pos])
				plain = false
			}
			p.pos++
			if p.pos == len(p.s) {
				return "", p.fail("backslash at end of path")
			}
			b.WriteByte(p.s[p.pos])
			p.pos++
		default:
			if !plain {
				b.WriteByte(c)
			}
			p.pos++
		}
	}
	p.pos = start
	return "", p.fail("unterminated quoted name")
}

func isNameByte(c byte) bool {
	switch c {
	case '.', '[', ']', '\'', '"', ' ', '\t', '\n', '\r', '\v', '\f':
		return false
	}
	return c >= 0x20 && c != 0x7f
}

func describe(c byte) string {
	switch {
	case c == ' ':
		return "space"
	case c < 0x20 || c >= 0x7f:
		return "byte " + strconv.QuoteRune(rune(c))
	}
	return strconv.Quote(string(c))
}

// IsZero reports whether p is the empty Path.
func (p Path) IsZero() bool { return len(p.segs) == 0 }

// String returns the canonical form of p: bare names joined by dots where
// the name allows it, ['quoted'] names otherwise, [n] for indices. Parsing
// the result gives the same Path.
func (p Path) String() string {
	var b strings.Builder
	for i, sg := range p.segs {
		switch {
		case sg.index >= 0:
			b.WriteByte('[')
			b.WriteString(strconv.Itoa(sg.index))
			b.WriteByte(']')
		case isBare(sg.name):
			if i > 0 {
				b.WriteByte('.')
			}
			b.WriteString(sg.name)
		default:
			b.WriteString("['")
			for j := 0; j < len(sg.name); j++ {
				if c := sg.name[j]; c == '\'' || c == '\\' {
					b.WriteByte('\\')
				}
				b.WriteByte(sg.name[j])
			}
			b.WriteString("']")
		}
	}
	return b.String()
}

func isBare(name string) bool {
	if name == "" {
		return false
	}
	for i := 0; i < len(name); i++ {
		if !isNameByte(name[i]) {
			return false
		}
	}
	return true
}

// MarshalText encodes p in its canonical form.
func (p Path) MarshalText() ([]byte, error) { return []byte(p.String()), nil }

// UnmarshalText parses a path, as Parse does.
func (p *Path) UnmarshalText(b []byte) error {
	q, err := Parse(string(b))
	if err != nil {
		return err
	}
	*p = q
	return nil
}

// Lookup finds the value at p in root, a decoded JSON object (maps of
// map[string]any, arrays of []any).
//
// When the first name of p is absent at the root, it is also looked up
// under root's "traits" object, then under "context"."traits", so that
// `email` finds `traits.email`. An absent path, a null value, a step into a
// value that is not an object or array, or an index out of range all mean
// no value: Lookup returns (nil, false) and never fails.
func (p Path) Lookup(root map[string]any) (any, bool) {
	if len(p.segs) == 0 || root == nil {
		return nil, false
	}
	first := p.segs[0].name
	if v, ok := root[first]; ok && v != nil {
		return walk(v, p.segs[1:])
	}
	if traits, ok := root["traits"].(map[string]any); ok {
		if v, ok := traits[first]; ok && v != nil {
			return walk(v, p.segs[1:])
		}
	}
	if ctx, ok := root["context"].(map[string]any); ok {
		if traits, ok := ctx["traits"].(map[string]any); ok {
			if v, ok := traits[first]; ok && v != nil {
				return walk(v, p.segs[1:])
			}
		}
	}
	return nil, false
}

func walk(v any, segs []seg) (any, bool) {
	for _, sg := range segs {
		if sg.index >= 0 {
			arr, ok := v.([]any)
			if !ok || sg.index >= len(arr) {
				return nil, false
			}
			v = arr[sg.index]
		} else {
			m, ok := v.(map[string]any)
			if !ok {
				return nil, false
			}
			v = m[sg.name]
		}
		if v == nil {
			return nil, false
		}
	}
	return v, true
}
