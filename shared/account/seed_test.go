package account

import (
	"regexp"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

// seedSnippet is the matching and mapping example of the product page
// (seed/startdeliver-destination.txt), copied word for word: a JavaScript
// object literal.
const seedSnippet = `{
  startdeliverMatchingField: {
    field: 'customfieldMatchingId',
    type: 'text'
  },
  externalMatchingField: {
    field: 'userId'
  },
  startdeliverCustomerField: {
    field: 'customfieldCustomId',
    type: 'number'
  },
  externalCustomerField: {
    field: 'traits.customerId'
  },
  userMapping: [
    {
      field: 'name',
      externalField: 'traits.trait2',
      type: 'text'
    },
    {
      field: 'customfieldNumber',
      externalField: 'traits.trait1',
      type: 'number'
    },
    {
      field: 'email',
      externalField: 'email',
      type: 'text'
    }
  ],
  customerMapping: [
    {
      field: 'name',
      externalField: 'traits.customerName',
      type: 'text'
    }
  ]
}`

// TestSeedSnippet turns the seed's object literal into JSON (quoting keys,
// double-quoting strings) and checks that it decodes, as the segmentApp of
// an enabled account, to exactly the seed configuration and validates.
func TestSeedSnippet(t *testing.T) {
	js := regexp.MustCompile(`(?m)^(\s*)(\w+):`).ReplaceAllString(seedSnippet, `$1"$2":`)
	js = strings.ReplaceAll(js, "'", `"`)
	js = strings.Replace(js, "{", `{"enabled": true,`, 1)
	doc := `{"name":"Acme Inc","settings":{"startdeliverUserCustomFieldToMatchOn":"externalId","allowUserIdFallback":true},` +
		`"segmentApp":` + js + `,"startdeliverApiUrl":"https://app.startdeliver.com/api/v1"}`
	a, err := Parse([]byte(doc))
	if err != nil {
		t.Fatalf("Parse(seed snippet) error: %v\n%s", err, doc)
	}
	if diff := cmp.Diff(seedAccount, a); diff != "" {
		t.Errorf("Parse(seed snippet) (-want +got):\n%s", diff)
	}
	if _, err := Compile(a); err != nil {
		t.Errorf("Compile(seed snippet) error: %v", err)
	}
}
