package account

import (
	"errors"
	"fmt"
	"net"
	"net/url"
	"strconv"
	"strings"

	"github.com/startdeliver/segment-destination/shared/abbrev"
	"github.com/startdeliver/segment-destination/shared/fieldpath"
)

// reservedUserFields are set by the pipeline itself, not by a mapping.
var reservedUserFields = map[string]string{
	"id":       "the user's id is assigned by Startdeliver",
	"customer": "the user's customer is set by linking to the matched customer",
}

// Validate checks the document against docs/api.md §4 and returns a
// *ValidationError listing every problem, or nil. The segmentApp keys are
// required only when segmentApp.enabled is true, but whatever is present is
// checked either way.
func (a *Account) Validate() error {
	var ps problems
	a.validate(&ps)
	return ps.err()
}

func (a *Account) validate(ps *problems) {
	s := a.Settings
	checkSettings(ps, "settings.", &s.StartdeliverUserCustomFieldToMatchOn, &s.SegmentOverrideMatchingField, true)
	if a.StartdeliverAPIURL != "" {
		if err := checkAPIURL(a.StartdeliverAPIURL); err != nil {
			ps.add("startdeliverApiUrl", "%v", err)
		}
	}

	sa := a.SegmentApp
	const app = "segmentApp."
	checkTarget(ps, app+"startdeliverMatchingField", sa.StartdeliverMatchingField, sa.Enabled)
	checkSource(ps, app+"externalMatchingField", sa.ExternalMatchingField, sa.Enabled)
	checkTarget(ps, app+"startdeliverCustomerField", sa.StartdeliverCustomerField, false)
	checkSource(ps, app+"externalCustomerField", sa.ExternalCustomerField, false)
	hasCustomer := strings.TrimSpace(sa.StartdeliverCustomerField.Field) != ""
	if !hasCustomer && sa.ExternalCustomerField.Field != "" {
		ps.add(app+"startdeliverCustomerField.field", "required when externalCustomerField is set")
	}
	if !hasCustomer && len(sa.CustomerMapping) > 0 {
		ps.add(app+"startdeliverCustomerField.field", "required when customerMapping is set")
	}
	checkMappings(ps, app+"userMapping", sa.UserMapping, reservedUserFields)
	checkMappings(ps, app+"customerMapping", sa.CustomerMapping, map[string]string{"id": "the customer's id is assigned by Startdeliver"})
}

// checkSettings applies the settings rules to the match field and the
// override path; nil means absent (a header that leaves the stored setting
// as it is). quote shows a bad path in the message: an operator's own file
// may be quoted back, a request's header may not.
func checkSettings(ps *problems, prefix string, match, override *string, quote bool) {
	if match != nil && strings.TrimSpace(*match) == "" {
		ps.add(prefix+keyCustomField, "required")
	}
	if override != nil && *override != "" {
		checkPathQuoted(ps, prefix+keyOverride, *override, quote)
	}
}

// Validate checks the settings an X-Segment-Settings header carries with
// the rules Account.Validate applies to stored settings (docs/api.md §1: a
// header that would make every event fail is refused), for the keys
// present. Its *HeaderError names each setting at fault and never quotes
// the header.
func (o SettingsOverride) Validate() error {
	var ps problems
	checkSettings(&ps, "", o.StartdeliverUserCustomFieldToMatchOn, o.SegmentOverrideMatchingField, false)
	if len(ps) == 0 {
		return nil
	}
	msgs := make([]string, len(ps))
	for i, p := range ps {
		msgs[i] = p.String()
	}
	return &HeaderError{Msg: strings.Join(msgs, "; ")}
}

func checkPath(ps *problems, key, path string) { checkPathQuoted(ps, key, path, true) }

func checkPathQuoted(ps *problems, key, path string, quote bool) {
	if _, err := fieldpath.Parse(path); err != nil {
		var se *fieldpath.SyntaxError
		switch {
		case errors.As(err, &se) && quote:
			ps.add(key, "bad field path %q at offset %d: %s", abbrev.String(path, 80), se.Pos, se.Msg)
		case errors.As(err, &se):
			ps.add(key, "bad field path at offset %d: %s", se.Pos, se.Msg)
		case quote:
			ps.add(key, "%v", err)
		default:
			ps.add(key, "bad field path")
		}
	}
}

func checkType(ps *problems, key string, t Type) {
	if t != "" && !t.Known() {
		ps.add(key, "unknown type %q (want text, number, boolean or date)", abbrev.String(string(t), 40))
	}
}

func checkTarget(ps *problems, key string, t Target, required bool) {
	if strings.TrimSpace(t.Field) == "" {
		if required {
			ps.add(key+".field", "required")
		} else if t.Type != "" {
			ps.add(key+".field", "required when type is set")
		}
	}
	checkType(ps, key+".type", t.Type)
}

func checkSource(ps *problems, key string, s Source, required bool) {
	if s.Field == "" {
		if required {
			ps.add(key+".field", "required")
		}
		return
	}
	checkPath(ps, key+".field", s.Field)
}

func checkMappings(ps *problems, key string, ms []Mapping, reserved map[string]string) {
	seen := make(map[string]int, len(ms))
	for i, m := range ms {
		k := key + "[" + strconv.Itoa(i) + "]"
		switch f := strings.TrimSpace(m.Field); {
		case f == "":
			ps.add(k+".field", "required")
		case reserved[f] != "":
			ps.add(k+".field", "%q cannot be mapped: %s", f, reserved[f])
		default:
			if j, dup := seen[f]; dup {
				ps.add(k+".field", "%q is already mapped by %s[%d]", abbrev.String(f, 40), key, j)
			} else {
				seen[f] = i
			}
		}
		if m.ExternalField == "" {
			ps.add(k+".externalField", "required")
		} else {
			checkPath(ps, k+".externalField", m.ExternalField)
		}
		checkType(ps, k+".type", m.Type)
	}
}

// checkAPIURL accepts an absolute https URL, or http to a loopback host for
// local testing.
func checkAPIURL(raw string) error {
	u, err := url.Parse(raw)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // without the URL, which may hold credentials
		}
		return fmt.Errorf("not a URL: %v", err)
	}
	if !u.IsAbs() || u.Host == "" {
		return errors.New("want an absolute URL such as https://app.startdeliver.com/api/v1")
	}
	if u.User != nil {
		return errors.New("must not contain credentials")
	}
	switch u.Scheme {
	case "https":
		return nil
	case "http":
		if isLoopback(u.Hostname()) {
			return nil
		}
		return errors.New("http is allowed only for loopback hosts; use https")
	}
	return fmt.Errorf("scheme %q not supported; use https", abbrev.String(u.Scheme, 20))
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}
