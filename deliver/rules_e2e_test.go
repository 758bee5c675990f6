package main

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/startdeliver/segment-destination/deliver/internal/startdeliver/startdelivertest"
	"github.com/startdeliver/segment-destination/shared/envelope"
	"github.com/startdeliver/segment-destination/shared/waitfor"
)

// simpleAccount is the seed's Getting Started setup: match track and page
// events on the user custom field externalId.
const simpleAccount = `{"name":"Seed Inc","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId"}}`

// seedAppAccount enables identify and group with the seed's full matching
// and mapping configuration.
const seedAppAccount = `{
  "name": "Seed App Inc",
  "settings": {"startdeliverUserCustomFieldToMatchOn": "externalId"},
  "segmentApp": {
    "enabled": true,
    "startdeliverMatchingField": {"field": "customfieldMatchingId", "type": "text"},
    "externalMatchingField": {"field": "userId"},
    "startdeliverCustomerField": {"field": "customfieldCustomId", "type": "number"},
    "externalCustomerField": {"field": "traits.customerId"},
    "userMapping": [
      {"field": "name", "externalField": "traits.trait2", "type": "text"},
      {"field": "customfieldNumber", "externalField": "traits.trait1", "type": "number"},
      {"field": "email", "externalField": "email", "type": "text"}
    ],
    "customerMapping": [
      {"field": "name", "externalField": "traits.customerName", "type": "text"}
    ]
  }
}`

// TestSeedExample is the seed document's example, word for word: a user
// with externalId 97980cfea0067 exists in Startdeliver; the app identifies
// them and tracks 'Login Button Clicked'; the event lands on that user.
func TestSeedExample(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	key := "sd-seed-key"
	p.addAccount(key, simpleAccount)
	existing := p.sd.AddUser(key, map[string]any{"name": "Ada", "externalId": "97980cfea0067"})

	p.send(key, `{"type":"identify","userId":"97980cfea0067","messageId":"seed-identify"}`, "")
	p.send(key, `{"type":"track","userId":"97980cfea0067","event":"Login Button Clicked","messageId":"seed-track","timestamp":"2024-08-07T10:00:00.123456789Z"}`, "")

	waitfor.Within(t, 30*time.Second, "the track usage record", func() bool { return len(p.sd.Usage(key)) >= 1 })
	u := p.sd.Usage(key)
	if len(u) != 1 {
		t.Fatalf("usage records = %d, want 1 (identify is not usage): %v", len(u), u)
	}
	if got := num(u[0]["user"]); got != fmt.Sprint(existing) {
		t.Errorf("usage user = %s, want the existing user %d", got, existing)
	}
	if u[0]["type"] != "track" || u[0]["name"] != "Login Button Clicked" || u[0]["externalId"] != "seed-track" {
		t.Errorf("usage = %v, want track 'Login Button Clicked' with externalId seed-track", u[0])
	}
	if ts, _ := u[0]["timestamp"].(string); !strings.HasPrefix(ts, "2024-08-07T10:00:00") {
		t.Errorf("usage timestamp = %v, want the event's", u[0]["timestamp"])
	}
	if n := len(p.sd.Users(key)); n != 1 {
		t.Errorf("users = %d, want still 1 (the event matched the existing user)", n)
	}
}

func TestTrackPageScreenCreateAndMatch(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	key := "sd-usage-key"
	p.addAccount(key, simpleAccount)
	p.send(key, `{"type":"track","userId":"new-1","event":"Signed Up","messageId":"t-1","properties":{"plan":"pro","seats":3},"traits":{"email":"new1@example.com"}}`, "")
	p.send(key, `{"type":"page","userId":"new-1","name":"Pricing","messageId":"p-1","properties":{"path":"/pricing"}}`, "")
	p.send(key, `{"type":"screen","userId":"new-1","name":"Home","messageId":"s-1"}`, "")
	p.send(key, `{"type":"page","userId":"new-1","messageId":"p-2","properties":{"url":"https://app.example.com/settings/billing?x=1"}}`, "")
	waitfor.Within(t, 30*time.Second, "four usage records", func() bool { return len(p.sd.Usage(key)) >= 4 })

	users := p.sd.Users(key)
	if len(users) != 1 {
		t.Fatalf("users = %v, want one created user", users)
	}
	if users[0]["externalId"] != "new-1" {
		t.Errorf("created user externalId = %v, want new-1", users[0]["externalId"])
	}
	byID := p.usageByExternalID(key)
	want := map[string][2]string{
		"t-1": {"track", "Signed Up"},
		"p-1": {"page", "Pricing"},
		"s-1": {"page", "Home"},
		"p-2": {"page", "/settings/billing"},
	}
	for id, tn := range want {
		recs := byID[id]
		if len(recs) != 1 {
			t.Errorf("usage %s: %d records, want 1", id, len(recs))
			continue
		}
		if recs[0]["type"] != tn[0] || recs[0]["name"] != tn[1] {
			t.Errorf("usage %s = %s %q, want %s %q", id, recs[0]["type"], recs[0]["name"], tn[0], tn[1])
		}
		if num(recs[0]["user"]) != fmt.Sprint(users[0].ID()) {
			t.Errorf("usage %s user = %v, want %d", id, recs[0]["user"], users[0].ID())
		}
	}
	props, _ := byID["t-1"][0]["properties"].(map[string]any)
	if props["plan"] != "pro" || num(props["seats"]) != "3" {
		t.Errorf("track properties = %v, want plan=pro seats=3", props)
	}
	// Known user: later events cost one Startdeliver call each (the usage
	// record), since the lookup is cached.
	p.sd.ResetCounters()
	for i := range 5 {
		p.send(key, fmt.Sprintf(`{"type":"track","userId":"new-1","event":"Clicked","messageId":"k-%d"}`, i), "")
	}
	waitfor.Within(t, 30*time.Second, "nine usage records", func() bool { return len(p.sd.Usage(key)) >= 9 })
	if calls := p.sd.TotalCalls(); calls != 5 {
		t.Errorf("5 events of a known user made %d Startdeliver calls, want 5 (%v)", calls, p.sd.CallCounts())
	}
}

func TestSettingsHeaderEmailAndOverride(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	key := "sd-settings-key"
	p.addAccount(key, simpleAccount)
	byEmail := p.sd.AddUser(key, map[string]any{"email": "grace@example.com"})
	byField := p.sd.AddUser(key, map[string]any{"externalId": "acct-77"})

	email := `{"startdeliverUserCustomFieldToMatchOn":"externalId","syncUsingEmailInsteadOfCustomField":true}`
	p.send(key, `{"type":"track","userId":"u-grace","event":"Opened","messageId":"e-1","context":{"traits":{"email":"grace@example.com"}}}`, email)
	// No email anywhere: falls back to the custom field with userId.
	p.send(key, `{"type":"track","userId":"acct-77","event":"Opened","messageId":"e-2"}`, email)
	override := `{"startdeliverUserCustomFieldToMatchOn":"externalId","segmentOverrideMatchingField":"properties['Field With Space']"}`
	p.send(key, `{"type":"track","userId":"ignored","event":"Opened","messageId":"o-1","properties":{"Field With Space":"acct-77"}}`, override)
	fallback := `{"startdeliverUserCustomFieldToMatchOn":"externalId","segmentOverrideMatchingField":"properties.missing","allowUserIdFallback":true}`
	p.send(key, `{"type":"track","userId":"acct-77","event":"Opened","messageId":"o-2"}`, fallback)

	waitfor.Within(t, 30*time.Second, "four usage records", func() bool { return len(p.sd.Usage(key)) >= 4 })
	byID := p.usageByExternalID(key)
	for id, want := range map[string]int64{"e-1": byEmail, "e-2": byField, "o-1": byField, "o-2": byField} {
		if got := num(byID[id][0]["user"]); got != fmt.Sprint(want) {
			t.Errorf("usage %s user = %s, want %d", id, got, want)
		}
	}
	if n := len(p.sd.Users(key)); n != 2 {
		t.Errorf("users = %d, want 2 (nothing created)", n)
	}
}

func TestIdentifyGroupWithSegmentApp(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	key := "sd-app-key"
	p.addAccount(key, seedAppAccount)

	p.send(key, `{"type":"identify","userId":"u-100","messageId":"i-1","traits":{"trait1":"42","trait2":"Ada Lovelace","customerId":"7001","customerName":"Analytical Engines","email":"ada@example.com"}}`, "")
	waitfor.Within(t, 30*time.Second, "user and customer", func() bool {
		return len(p.sd.Users(key)) == 1 && len(p.sd.Customers(key)) == 1
	})
	users, customers := p.sd.Users(key), p.sd.Customers(key)
	u, c := users[0], customers[0]
	if u["customfieldMatchingId"] != "u-100" || u["name"] != "Ada Lovelace" || num(u["customfieldNumber"]) != "42" || u["email"] != "ada@example.com" {
		t.Errorf("user = %v, want the seed mapping applied", u)
	}
	if num(c["customfieldCustomId"]) != "7001" || c["name"] != "Analytical Engines" {
		t.Errorf("customer = %v, want customfieldCustomId 7001 and its name", c)
	}
	if num(u["customer"]) != fmt.Sprint(c.ID()) {
		t.Errorf("user.customer = %v, want the customer %d", u["customer"], c.ID())
	}

	// Engage audience identify: the trait reaches the user when mapped; an
	// update changes only what differs.
	p.sd.ResetCounters()
	p.send(key, `{"type":"identify","userId":"u-100","messageId":"i-2","traits":{"trait2":"Ada King","order_completed_last_30days":true},"context":{"personas":{"computation_class":"audience","computation_key":"order_completed_last_30days"}},"sentAt":null}`, "")
	waitfor.Within(t, 30*time.Second, "user renamed", func() bool { return p.sd.Users(key)[0]["name"] == "Ada King" })
	if n := len(p.sd.Users(key)); n != 1 {
		t.Errorf("users = %d, want 1 (updated, not created)", n)
	}

	// Group: the customer comes from groupId, the user is linked to it.
	p.send(key, `{"type":"group","userId":"u-100","groupId":"8002","messageId":"g-1","traits":{"customerName":"Difference Engines"}}`, "")
	waitfor.Within(t, 30*time.Second, "second customer and link", func() bool {
		cs := p.sd.Customers(key)
		return len(cs) == 2 && num(p.sd.Users(key)[0]["customer"]) == fmt.Sprint(cs[1].ID())
	})
	if got := num(p.sd.Customers(key)[1]["customfieldCustomId"]); got != "8002" {
		t.Errorf("group customer customfieldCustomId = %s, want 8002", got)
	}
}

func TestSkipsWithoutSegmentAppAndAlias(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	key := "sd-skip-key"
	p.addAccount(key, simpleAccount)
	p.send(key, `{"type":"identify","userId":"u-1","messageId":"sk-1","traits":{"name":"x"}}`, "")
	p.send(key, `{"type":"group","userId":"u-1","groupId":"g","messageId":"sk-2"}`, "")
	p.send(key, `{"type":"alias","userId":"u-1","previousId":"anon","messageId":"sk-3"}`, "")
	p.send(key, `{"type":"track","userId":"u-1","event":"after","messageId":"sk-4"}`, "")
	waitfor.Within(t, 30*time.Second, "the track", func() bool { return len(p.sd.Usage(key)) == 1 })
	if calls := p.sd.Calls("PATCH /user/{id}") + p.sd.Calls("POST /customer"); calls != 0 {
		t.Errorf("skipped events made %d user/customer writes, want 0", calls)
	}
	if n := len(p.sd.Users(key)); n != 1 {
		t.Errorf("users = %d, want 1 (only the track's)", n)
	}
}

func TestDuplicatesHaveOneEffect(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	key := "sd-dup-key"
	p.addAccount(key, simpleAccount)
	ev := `{"type":"track","userId":"dup-user","event":"Paid","messageId":"dup-1"}`
	p.send(key, ev, "")
	waitfor.Within(t, 30*time.Second, "first usage", func() bool { return len(p.sd.Usage(key)) == 1 })
	// Segment retries the same event, twice.
	p.send(key, ev, "")
	p.send(key, ev, "")
	p.send(key, `{"type":"track","userId":"dup-user","event":"Paid","messageId":"dup-2"}`, "")
	waitfor.Within(t, 30*time.Second, "the marker event", func() bool { return len(p.usageByExternalID(key)["dup-2"]) == 1 })
	if n := len(p.usageByExternalID(key)["dup-1"]); n != 1 {
		t.Errorf("dup-1 usage records = %d, want 1", n)
	}
}

// TestRedeliveryToAnotherInstance: a message redelivered to a fresh deliver
// (its in-process cache empty) is still recognised as done.
func TestRedeliveryToAnotherInstance(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	key := "sd-redeliver-key"
	p.addAccount(key, simpleAccount)
	ev := `{"type":"track","userId":"r-user","event":"Paid","messageId":"re-1"}`
	p.send(key, ev, "")
	waitfor.Within(t, 30*time.Second, "first usage", func() bool { return len(p.sd.Usage(key)) == 1 })
	p.stopDeliver()
	p.startDeliver()
	p.send(key, ev, "")
	p.send(key, `{"type":"track","userId":"r-user","event":"Paid","messageId":"re-2"}`, "")
	waitfor.Within(t, 30*time.Second, "marker", func() bool { return len(p.usageByExternalID(key)["re-2"]) == 1 })
	if n := len(p.usageByExternalID(key)["re-1"]); n != 1 {
		t.Errorf("re-1 usage records = %d, want 1", n)
	}
}

func TestRetryableFailuresRetryThenSucceed(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	key := "sd-retry-key"
	p.addAccount(key, simpleAccount)
	// More failures than one delivery's quick retries absorb (3 runs): the
	// message is nacked, Pub/Sub redelivers it, and it succeeds.
	p.sd.FailNext(4, startdelivertest.Fault{Status: 503, Route: "POST /usage"})
	p.send(key, `{"type":"track","userId":"retry-user","event":"Paid","messageId":"rt-1"}`, "")
	waitfor.Within(t, 60*time.Second, "usage after retries", func() bool { return len(p.sd.Usage(key)) == 1 })
	if n := p.sd.Calls("POST /usage"); n != 5 {
		t.Errorf("POST /usage calls = %d, want 5 (4 failures, then success)", n)
	}
	if n := len(p.sd.Users(key)); n != 1 {
		t.Errorf("users = %d, want 1", n)
	}
}

func TestPermanentFailuresAreDeadLettered(t *testing.T) {
	p := newPipeline(t, pipelineOptions{})
	key := "sd-perm-key"
	p.addAccount(key, simpleAccount)
	// No value to match on: the override field is absent, and the event
	// has a userId (a config fix and a replay can deliver it).
	p.send(key, `{"type":"track","userId":"anon-9","event":"Viewed","messageId":"pf-1"}`, `{"segmentOverrideMatchingField":"properties.missing"}`)
	// Anonymous only: skipped, never a dead letter (the count of 2 below
	// would see it).
	p.send(key, `{"type":"track","anonymousId":"anon-9","event":"Viewed","messageId":"pf-anon"}`, "")
	// Startdeliver rejects the usage record as invalid.
	p.sd.FailNext(1, startdelivertest.Fault{Status: 422, Route: "POST /usage"})
	p.send(key, `{"type":"track","userId":"pf-user","event":"Viewed","messageId":"pf-2"}`, "")
	dead := p.deadLetters(2, 60*time.Second)
	if len(dead) != 2 {
		t.Fatalf("dead letters = %d, want 2", len(dead))
	}
	classes := map[string]string{}
	for _, m := range dead {
		id := m.Attributes[envelope.AttrMessageID]
		classes[id] = m.Attributes["errorClass"]
		if m.Attributes["error"] == "" {
			t.Errorf("dead letter %s has no error attribute", id)
		}
		for k, v := range m.Attributes {
			if strings.Contains(v, key) {
				t.Errorf("dead letter attribute %s holds the API key", k)
			}
		}
		if _, err := envelope.Decode(m.Data); err != nil {
			t.Errorf("dead letter %s body is not the original envelope: %v", id, err)
		}
	}
	if classes["pf-1"] != "no-match-value" || classes["pf-2"] != "startdeliver-rejected" {
		t.Errorf("error classes = %v, want pf-1 no-match-value, pf-2 startdeliver-rejected", classes)
	}
	if more := p.deadLetters(1, 3*time.Second); len(more) != 0 {
		t.Errorf("a third dead letter %v: the anonymous event must be skipped", more[0].Attributes)
	}
	if n := len(p.sd.Usage(key)); n != 0 {
		t.Errorf("usage records = %d, want 0", n)
	}
}

// TestConcurrentNewPersonCreatesOneUser sends 50 events for one new person
// at once, on four streams of a subscription without ordering (so that they
// really run at once), and wants one user.
func TestConcurrentNewPersonCreatesOneUser(t *testing.T) {
	p := newPipeline(t, pipelineOptions{noOrdering: true})
	key := "sd-conc-key"
	p.addAccount(key, simpleAccount)
	p.sd.SetLatency(20 * time.Millisecond)
	var wg sync.WaitGroup
	for i := range 50 {
		wg.Go(func() {
			p.send(key, fmt.Sprintf(`{"type":"track","userId":"crowd","anonymousId":"a-%d","event":"Hit","messageId":"c-%d"}`, i, i), "")
		})
	}
	wg.Wait()
	waitfor.Within(t, 60*time.Second, "50 usage records", func() bool { return len(p.sd.Usage(key)) >= 50 })
	if n := len(p.sd.Users(key)); n != 1 {
		t.Errorf("users = %d, want 1", n)
	}
	if n := len(p.sd.Usage(key)); n != 50 {
		t.Errorf("usage records = %d, want 50", n)
	}
}
