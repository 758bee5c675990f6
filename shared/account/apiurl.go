package account

import (
	"errors"
	"fmt"
	"net/url"
	"strings"

	"github.com/startdeliver/segment-destination/shared/abbrev"
)

// DefaultAPIHost is Startdeliver's own API host, the one host a per-account
// startdeliverApiUrl may name unless STARTDELIVER_API_HOSTS says otherwise.
const DefaultAPIHost = "app.startdeliver.com"

// APIURLPolicy is the allow-list of a per-account startdeliverApiUrl:
// deliver sends the account's API key to that URL, so an account document
// (which anyone with Firestore write could change) must not be able to send
// it anywhere else. It is checked when the account is saved (the accounts
// command) and again by the Startdeliver client before every call.
type APIURLPolicy struct {
	// Hosts are the allowed host names, exact ("app.startdeliver.com") or
	// a wildcard for the subdomains of one ("*.startdeliver.com"). Empty
	// means DefaultAPIHost only.
	Hosts []string
	// Loopback allows loopback hosts (127.0.0.0/8, ::1, localhost) over
	// http or https: on the emulators only.
	Loopback bool
}

// APIURLPolicyFromEnv reads STARTDELIVER_API_HOSTS (comma-separated; default
// DefaultAPIHost); loopback hosts are allowed when emulator is true.
func APIURLPolicyFromEnv(getenv func(string) string, emulator bool) (APIURLPolicy, error) {
	p := APIURLPolicy{Loopback: emulator}
	for h := range strings.SplitSeq(getenv("STARTDELIVER_API_HOSTS"), ",") {
		h = strings.ToLower(strings.TrimSpace(h))
		if h == "" {
			continue
		}
		name := strings.TrimPrefix(h, "*.")
		if name == "" || strings.ContainsAny(name, "*/:@?#[] ") || !strings.Contains(name, ".") && name != "localhost" {
			return p, fmt.Errorf("STARTDELIVER_API_HOSTS: %q is not a host name (want app.startdeliver.com or *.startdeliver.com)", abbrev.String(h, 60))
		}
		p.Hosts = append(p.Hosts, h)
	}
	return p, nil
}

// Check returns nil when raw is an allowed base URL: https on an allowed
// host, or (with Loopback) http or https on a loopback host; no
// credentials. The error names the host but never the rest of the URL.
func (p APIURLPolicy) Check(raw string) error {
	if err := checkAPIURL(raw); err != nil {
		return err
	}
	u, _ := url.Parse(raw) // checkAPIURL parsed it
	host := strings.ToLower(u.Hostname())
	if isLoopback(host) {
		if p.Loopback {
			return nil
		}
		return errors.New("loopback hosts are allowed only on the emulators")
	}
	if u.Scheme != "https" {
		return errors.New("want https")
	}
	if !p.allows(host) {
		return fmt.Errorf("host %q is not an allowed Startdeliver API host (allowed: %s; set STARTDELIVER_API_HOSTS)", abbrev.String(host, 80), strings.Join(p.hosts(), ", "))
	}
	return nil
}

func (p APIURLPolicy) hosts() []string {
	if len(p.Hosts) == 0 {
		return []string{DefaultAPIHost}
	}
	return p.Hosts
}

func (p APIURLPolicy) allows(host string) bool {
	host = strings.TrimSuffix(host, ".")
	for _, h := range p.hosts() {
		if suffix, ok := strings.CutPrefix(h, "*."); ok {
			if strings.HasSuffix(host, "."+suffix) {
				return true
			}
		} else if host == h {
			return true
		}
	}
	return false
}

// CheckAPIURL checks the account's startdeliverApiUrl, when it has one,
// against p, as a *ValidationError naming the key.
func (a *Account) CheckAPIURL(p APIURLPolicy) error {
	if a.StartdeliverAPIURL == "" {
		return nil
	}
	var ps problems
	if err := p.Check(a.StartdeliverAPIURL); err != nil {
		ps.add("startdeliverApiUrl", "%v", err)
	}
	return ps.err()
}
