package account

import (
	"strings"
	"sync"

	"github.com/startdeliver/segment-destination/shared/fieldpath"
)

// Compiled is an account ready to run: validated, with every field path
// parsed. It is immutable (callers must not modify its slices) and safe for
// concurrent use.
type Compiled struct {
	// Account is the validated document.
	Account Account
	// SegmentApp is the compiled identify and group configuration.
	SegmentApp CompiledApp

	override fieldpath.Path // parsed Account.Settings.SegmentOverrideMatchingField
	paths    *pathCache     // override paths from X-Segment-Settings headers
}

// CompiledApp is SegmentApp with its paths parsed and types defaulted.
type CompiledApp struct {
	// Enabled mirrors SegmentApp.Enabled.
	Enabled bool
	// User matches the user; always set when Enabled.
	User MatchRule
	// Customer matches the customer; nil when no customer field is
	// configured. Its Source is the zero Path when externalCustomerField is
	// not set (group calls then use groupId, identify calls no customer).
	Customer *MatchRule
	// UserMapping and CustomerMapping are the compiled mappings, in order.
	UserMapping     []FieldRule
	CustomerMapping []FieldRule
}

// MatchRule matches an entity's Field against the value at Source,
// converted to Type.
type MatchRule struct {
	Field  string
	Type   Type
	Source fieldpath.Path
}

// FieldRule sets Field to the value at Source, converted to Type.
type FieldRule struct {
	Field  string
	Type   Type
	Source fieldpath.Path
}

// Compile validates a and parses its paths once. A document that does not
// validate returns the *ValidationError.
func Compile(a *Account) (*Compiled, error) {
	if err := a.Validate(); err != nil {
		return nil, err
	}
	c := &Compiled{Account: *a, paths: newPathCache(pathCacheSize)}
	c.Account.SegmentApp.UserMapping = append([]Mapping(nil), a.SegmentApp.UserMapping...)
	c.Account.SegmentApp.CustomerMapping = append([]Mapping(nil), a.SegmentApp.CustomerMapping...)
	// Validate has checked every path, so the parses below cannot fail.
	if p := a.Settings.SegmentOverrideMatchingField; p != "" {
		c.override = fieldpath.MustParse(p)
	}
	sa := a.SegmentApp
	c.SegmentApp.Enabled = sa.Enabled
	if sa.StartdeliverMatchingField.Field != "" {
		c.SegmentApp.User = MatchRule{
			Field: strings.TrimSpace(sa.StartdeliverMatchingField.Field),
			Type:  typeOrText(sa.StartdeliverMatchingField.Type),
		}
	}
	if sa.ExternalMatchingField.Field != "" {
		c.SegmentApp.User.Source = fieldpath.MustParse(sa.ExternalMatchingField.Field)
	}
	if f := strings.TrimSpace(sa.StartdeliverCustomerField.Field); f != "" {
		r := &MatchRule{Field: f, Type: typeOrText(sa.StartdeliverCustomerField.Type)}
		if sa.ExternalCustomerField.Field != "" {
			r.Source = fieldpath.MustParse(sa.ExternalCustomerField.Field)
		}
		c.SegmentApp.Customer = r
	}
	c.SegmentApp.UserMapping = compileMappings(sa.UserMapping)
	c.SegmentApp.CustomerMapping = compileMappings(sa.CustomerMapping)
	return c, nil
}

func compileMappings(ms []Mapping) []FieldRule {
	if len(ms) == 0 {
		return nil
	}
	out := make([]FieldRule, len(ms))
	for i, m := range ms {
		out[i] = FieldRule{
			Field:  strings.TrimSpace(m.Field),
			Type:   typeOrText(m.Type),
			Source: fieldpath.MustParse(m.ExternalField),
		}
	}
	return out
}

func typeOrText(t Type) Type {
	if t == "" {
		return TypeText
	}
	return t
}

// OverridePath returns the parsed form of an override matching path, as
// found in settings after an X-Segment-Settings header was applied. The
// stored path is parsed already; others are parsed once and kept in a small
// bounded cache. A malformed path returns a *fieldpath.SyntaxError.
func (c *Compiled) OverridePath(path string) (fieldpath.Path, error) {
	if path == c.Account.Settings.SegmentOverrideMatchingField && path != "" {
		return c.override, nil
	}
	if c.paths == nil { // a Compiled not made by Compile
		return fieldpath.Parse(path)
	}
	return c.paths.get(path)
}

// pathCacheSize bounds the header override paths kept per account: Segment
// sends one value per destination, so a few suffice.
const pathCacheSize = 32

// pathCache memoises Parse, including its errors. When full it starts
// over, which keeps it bounded without bookkeeping.
type pathCache struct {
	mu  sync.Mutex
	max int
	m   map[string]parsed
}

type parsed struct {
	p   fieldpath.Path
	err error
}

func newPathCache(max int) *pathCache {
	return &pathCache{max: max, m: make(map[string]parsed)}
}

func (pc *pathCache) get(path string) (fieldpath.Path, error) {
	pc.mu.Lock()
	defer pc.mu.Unlock()
	if r, ok := pc.m[path]; ok {
		return r.p, r.err
	}
	p, err := fieldpath.Parse(path)
	if len(pc.m) >= pc.max {
		clear(pc.m)
	}
	pc.m[path] = parsed{p, err}
	return p, err
}
