package segment

import (
	"cmp"
	"fmt"
	"unicode/utf8"
)

// Bounds every JSON body meets before anything decodes it (docs/api.md §1).
const (
	// MaxDepth is the deepest nesting of objects and arrays accepted
	// anywhere in a body.
	MaxDepth = 64
	// MaxNumberLen bounds one number literal, in bytes: no Segment
	// library writes more than 25, and nothing downstream can use more.
	MaxNumberLen = 128
)

// Span is a range [Start, End) of a scanned body.
type Span struct{ Start, End int }

// Member is one key of the top-level object, with the spans of its key
// (quotes included) and of its value.
type Member struct {
	Key, Value Span
	// Kind is the first byte of the value: '{', '[', '"', 't', 'f', 'n',
	// or '0' for a number.
	Kind byte
}

type scanState uint8

const (
	stValue        scanState = iota // a value is expected
	stValueOrClose                  // first element of an array, or ']'
	stKeyOrClose                    // first key of an object, or '}'
	stKey                           // a key after ','
	stColon
	stAfterValue
	stString
	stStringEsc
	stStringHex
	stNumMinus // after '-'
	stNumZero  // a leading 0
	stNumInt
	stNumDot
	stNumFrac
	stNumE
	stNumESign
	stNumExp
	stLiteral
	stDone
)

// Scanner is the linear pre-pass over a JSON body: it checks the syntax,
// the nesting depth, UTF-8 and number lengths in one pass over the bytes,
// keeping only a bit per open container, and records where the top-level
// object's members are (and the elements of arrays that are their values,
// a batch's events) so that callers can find a key without decoding the
// body into a tree. It looks at each byte once, so its cost is linear in
// the input whatever the input is.
//
// Feed it a growing buffer (data[:n] unchanged between calls) as bytes
// arrive, and End at the end of input. The first error is final.
type Scanner struct {
	// Depth, when not zero, replaces MaxDepth: a body that wraps an event
	// one level down (deliver's envelope) allows one more.
	Depth int

	off   int    // next byte to look at
	depth int    // open containers
	stack uint64 // bit d-1 set: the container at depth d is an object
	state scanState
	err   *SyntaxError

	strStart int  // opening quote of the string being read
	strKey   bool // that string is a key
	strHigh  bool // that string has a byte >= 0x80 (so UTF-8 is checked)
	hexLeft  int
	numStart int
	lit      string // the literal being matched
	litPos   int

	// MaxDepthSeen is the deepest nesting reached, for callers' counters.
	MaxDepthSeen int

	members   []Member
	items     []Span
	itemsOf   []int // members index of each item
	itemStart int
	// The members of items that are objects (a batch's events), in
	// order: those of items[i] are itemMembers[itemMem[i]:itemMem[i+1]]
	// (to the end for the last item).
	itemMembers  []Member
	itemMem      []int
	itemMemStart int
}

// Members returns the top-level object's members in order (empty when the
// top-level value is not an object).
func (s *Scanner) Members() []Member { return s.members }

// Items returns the elements of the array that is the value of
// members[m], in order.
func (s *Scanner) Items(m int) []Span {
	var out []Span
	for i, of := range s.itemsOf {
		if of == m {
			out = append(out, s.items[i])
		}
	}
	return out
}

// ItemMembers returns, for each element of the array that is the value of
// members[m], the members of that element when it is an object (none
// otherwise), with spans into the scanned body: what Members is for the
// top-level object, for each event of a batch.
func (s *Scanner) ItemMembers(m int) [][]Member {
	var out [][]Member
	for i, of := range s.itemsOf {
		if of != m {
			continue
		}
		end := len(s.itemMembers)
		if i+1 < len(s.itemMem) {
			end = s.itemMem[i+1]
		}
		out = append(out, s.itemMembers[s.itemMem[i]:end:end])
	}
	return out
}

// inItem is the stack (bit d-1 for depth d, set for an object) of a
// position directly inside an object that is an element of an array that
// is a top-level member's value.
const inItem = 0b101

// RecordBytes is about how much memory the scanner's records of members
// and items hold, for callers that bound the memory of requests.
func (s *Scanner) RecordBytes() int {
	const member, span, index = 5 * 8, 2 * 8, 8 // unsafe.Sizeof on 64-bit
	return (cap(s.members)+cap(s.itemMembers))*member + cap(s.items)*span + (cap(s.itemsOf)+cap(s.itemMem))*index
}

// Scanned is how many bytes the scanner has looked at.
func (s *Scanner) Scanned() int { return s.off }

func (s *Scanner) fail(off int, msg string) error {
	s.err = &SyntaxError{Offset: int64(off), Msg: msg}
	return s.err
}

// strClass classifies the bytes of a string for Feed's hot loop: 0 for
// the bytes it passes over, strStop for what ends it ('"', '\\', control
// characters), strHigh for the bytes of non-ASCII characters, whose UTF-8
// is checked when the string ends.
var strClass = func() (t [256]uint8) {
	for c := range 0x20 {
		t[c] = strStop
	}
	t['"'], t['\\'] = strStop, strStop
	for c := 0x80; c < 0x100; c++ {
		t[c] = strHigh
	}
	return t
}()

const (
	strStop = 1
	strHigh = 2
)

func isSpace(c byte) bool { return c == ' ' || c == '\t' || c == '\n' || c == '\r' }

// Feed scans data[s.Scanned():]. It returns the first error found, here or
// before.
func (s *Scanner) Feed(data []byte) error {
	if s.err != nil {
		return s.err
	}
	for i := s.off; i < len(data); i++ {
		c := data[i]
		switch s.state {
		case stString:
			// The hot loop: most bytes of an event are in strings.
			for ; i < len(data); i++ {
				c = data[i]
				if k := strClass[c]; k != 0 {
					if k == strHigh {
						s.strHigh = true
						continue
					}
					break
				}
			}
			if i == len(data) {
				s.off = i
				return nil
			}
			switch {
			case c == '"':
				if s.strHigh && !utf8.Valid(data[s.strStart+1:i]) {
					return s.fail(s.strStart+1+invalidUTF8At(data[s.strStart+1:i]), "invalid UTF-8 in a string")
				}
				if s.strKey {
					switch {
					case s.depth == 1:
						if s.members == nil {
							// An event has a dozen or so: one allocation, not five.
							s.members = make([]Member, 0, 16)
						}
						s.members = append(s.members, Member{Key: Span{s.strStart, i + 1}})
					case s.depth == 3 && s.stack&7 == inItem:
						s.itemMembers = append(s.itemMembers, Member{Key: Span{s.strStart, i + 1}})
					}
					s.state = stColon
				} else {
					s.endValue(i + 1)
				}
			case c == '\\':
				s.state = stStringEsc
			default:
				return s.fail(i, "control character in a string (escape it)")
			}
		case stStringEsc:
			switch c {
			case '"', '\\', '/', 'b', 'f', 'n', 'r', 't':
				s.state = stString
			case 'u':
				s.state, s.hexLeft = stStringHex, 4
			default:
				return s.fail(i, "invalid escape in a string")
			}
		case stStringHex:
			if !isHex(c) {
				return s.fail(i, "invalid \\u escape in a string")
			}
			if s.hexLeft--; s.hexLeft == 0 {
				s.state = stString
			}
		case stValue, stValueOrClose, stKeyOrClose, stKey, stColon, stAfterValue, stDone:
			if isSpace(c) {
				continue
			}
			if err := s.structural(data, i, c); err != nil {
				return err
			}
		case stLiteral:
			if c != s.lit[s.litPos] {
				return s.fail(i, "invalid literal (want true, false or null)")
			}
			if s.litPos++; s.litPos == len(s.lit) {
				s.endValue(i + 1)
			}
		default: // numbers
			if !s.number(c) {
				if err := s.endNumber(i); err != nil {
					return err
				}
				i-- // c belongs to what follows the number
				continue
			}
			if i-s.numStart >= MaxNumberLen {
				return s.fail(s.numStart, fmt.Sprintf("number longer than %d characters", MaxNumberLen))
			}
		}
	}
	s.off = len(data)
	return nil
}

// End reports whether the input scanned so far is one complete JSON value.
func (s *Scanner) End(data []byte) error {
	if err := s.Feed(data); err != nil {
		return err
	}
	switch s.state {
	case stDone:
		return nil
	case stNumZero, stNumInt, stNumFrac, stNumExp:
		if s.depth == 0 {
			return s.endNumber(len(data))
		}
	case stValue:
		if s.depth == 0 && s.off == len(data) && allSpace(data) {
			return s.fail(len(data), "empty body")
		}
	}
	return s.fail(len(data), "unexpected end of input")
}

func allSpace(b []byte) bool {
	for _, c := range b {
		if !isSpace(c) {
			return false
		}
	}
	return true
}

// structural handles a non-space byte outside strings, numbers and
// literals.
func (s *Scanner) structural(data []byte, i int, c byte) error {
	switch s.state {
	case stDone:
		return s.fail(i, "data after the top-level value")
	case stColon:
		if c != ':' {
			return s.fail(i, "want ':' after an object key")
		}
		s.state = stValue
		return nil
	case stKeyOrClose, stKey:
		if c == '}' && s.state == stKeyOrClose {
			s.pop(i)
			return nil
		}
		if c != '"' {
			return s.fail(i, "want a string as object key")
		}
		s.state, s.strStart, s.strKey, s.strHigh = stString, i, true, false
		return nil
	case stAfterValue:
		inObject := s.stack&(1<<(s.depth-1)) != 0
		switch {
		case c == ',' && inObject:
			s.state = stKey
		case c == ',':
			s.state = stValue
		case c == '}' && inObject, c == ']' && !inObject:
			s.pop(i)
		case inObject:
			return s.fail(i, "want ',' or '}' after an object value")
		default:
			return s.fail(i, "want ',' or ']' after an array element")
		}
		return nil
	}
	// stValue or stValueOrClose: a value starts here.
	if c == ']' && s.state == stValueOrClose {
		s.pop(i)
		return nil
	}
	s.beginValue(i, c)
	switch {
	case c == '{' || c == '[':
		if limit := cmp.Or(s.Depth, MaxDepth); s.depth == limit {
			s.MaxDepthSeen = limit + 1
			return s.fail(i, fmt.Sprintf("nesting deeper than %d levels", limit))
		}
		s.depth++
		s.MaxDepthSeen = max(s.MaxDepthSeen, s.depth)
		if c == '{' {
			s.stack |= 1 << (s.depth - 1)
			s.state = stKeyOrClose
		} else {
			s.stack &^= 1 << (s.depth - 1)
			s.state = stValueOrClose
		}
	case c == '"':
		s.state, s.strStart, s.strKey, s.strHigh = stString, i, false, false
	case c == '-':
		s.state, s.numStart = stNumMinus, i
	case c == '0':
		s.state, s.numStart = stNumZero, i
	case c >= '1' && c <= '9':
		s.state, s.numStart = stNumInt, i
	case c == 't':
		s.state, s.lit, s.litPos = stLiteral, "true", 1
	case c == 'f':
		s.state, s.lit, s.litPos = stLiteral, "false", 1
	case c == 'n':
		s.state, s.lit, s.litPos = stLiteral, "null", 1
	default:
		return s.fail(i, "want a JSON value")
	}
	return nil
}

// beginValue records where a value that interests callers starts: a
// top-level member's value (depth 1) or an element of an array that is one
// (depth 2).
func (s *Scanner) beginValue(i int, c byte) {
	switch {
	case s.depth == 1 && s.stack&1 != 0 && len(s.members) > 0:
		m := &s.members[len(s.members)-1]
		m.Value.Start, m.Kind = i, c
		if c == '-' || (c >= '0' && c <= '9') {
			m.Kind = '0'
		}
	case s.depth == 2 && s.stack&1 != 0 && s.stack&2 == 0:
		s.itemStart = i
		s.itemMemStart = len(s.itemMembers)
	case s.depth == 3 && s.stack&7 == inItem && len(s.itemMembers) > s.itemMemStart:
		m := &s.itemMembers[len(s.itemMembers)-1]
		m.Value.Start, m.Kind = i, c
		if c == '-' || (c >= '0' && c <= '9') {
			m.Kind = '0'
		}
	}
}

// endValue closes a value that ended just before end.
func (s *Scanner) endValue(end int) {
	switch {
	case s.depth == 0:
		s.state = stDone
		return
	case s.depth == 1 && s.stack&1 != 0 && len(s.members) > 0:
		s.members[len(s.members)-1].Value.End = end
	case s.depth == 2 && s.stack&1 != 0 && s.stack&2 == 0:
		s.items = append(s.items, Span{s.itemStart, end})
		s.itemsOf = append(s.itemsOf, len(s.members)-1)
		s.itemMem = append(s.itemMem, s.itemMemStart)
	case s.depth == 3 && s.stack&7 == inItem && len(s.itemMembers) > s.itemMemStart:
		s.itemMembers[len(s.itemMembers)-1].Value.End = end
	}
	s.state = stAfterValue
}

func (s *Scanner) pop(i int) {
	s.depth--
	s.endValue(i + 1)
}

// number advances the number state machine by c; false means c is not part
// of the number.
func (s *Scanner) number(c byte) bool {
	digit := c >= '0' && c <= '9'
	switch s.state {
	case stNumMinus:
		switch {
		case c == '0':
			s.state = stNumZero
		case digit:
			s.state = stNumInt
		default:
			s.state = stNumMinus // endNumber reports it
			return false
		}
	case stNumZero, stNumInt:
		switch {
		case digit && s.state == stNumInt:
		case c == '.':
			s.state = stNumDot
		case c == 'e' || c == 'E':
			s.state = stNumE
		default:
			return false
		}
	case stNumDot, stNumFrac:
		switch {
		case digit:
			s.state = stNumFrac
		case c == 'e' || c == 'E':
			if s.state == stNumDot {
				return false
			}
			s.state = stNumE
		default:
			return false
		}
	case stNumE:
		switch {
		case c == '+' || c == '-':
			s.state = stNumESign
		case digit:
			s.state = stNumExp
		default:
			return false
		}
	case stNumESign, stNumExp:
		if !digit {
			return false
		}
		s.state = stNumExp
	}
	return true
}

// endNumber ends the number before i, failing when it is incomplete.
func (s *Scanner) endNumber(i int) error {
	switch s.state {
	case stNumZero, stNumInt, stNumFrac, stNumExp:
		s.endValue(i)
		return nil
	}
	return s.fail(i, "invalid number")
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// invalidUTF8At returns the offset of the first invalid UTF-8 sequence in b.
func invalidUTF8At(b []byte) int {
	for i := 0; i < len(b); {
		r, n := utf8.DecodeRune(b[i:])
		if r == utf8.RuneError && n <= 1 {
			return i
		}
		i += n
	}
	return len(b)
}

// Check runs the pre-pass over a whole body.
func Check(data []byte) (*Scanner, error) {
	s := &Scanner{}
	if err := s.End(data); err != nil {
		return s, err
	}
	return s, nil
}
