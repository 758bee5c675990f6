package journey

import (
	"github.com/startdeliver/segment-destination/shared/account"
	"github.com/startdeliver/segment-destination/shared/plan"
	"github.com/startdeliver/segment-destination/shared/segment"
)

// Matches describes the rules and values a plan matches its user and
// customer on, for a person reading the journey (deliver's record and
// explain show the same words).
func Matches(ev *segment.Event, s account.Settings, pl *plan.Plan) (user, customer *Match) {
	if pl == nil {
		return nil, nil
	}
	app := ev.Type == segment.TypeIdentify || ev.Type == segment.TypeGroup
	if pl.User != nil {
		rule := "segmentApp.externalMatchingField"
		if !app {
			rule = usageRule(ev, s, pl.User.Match)
		}
		user = &Match{Rule: rule, Field: pl.User.Match.Field, Value: pl.User.Match.Value}
	}
	if pl.Customer != nil {
		rule := "segmentApp.externalCustomerField"
		if ev.Type == segment.TypeGroup {
			rule = "segmentApp.externalCustomerField, else groupId"
		}
		customer = &Match{Rule: rule, Field: pl.Customer.Match.Field, Value: pl.Customer.Match.Value}
	}
	return user, customer
}

// usageRule names the matching rule (docs/api.md § Matching and types) behind a track, page or
// screen event's match.
func usageRule(ev *segment.Event, s account.Settings, m plan.Match) string {
	switch {
	case m.Field == "email":
		return "email (syncUsingEmailInsteadOfCustomField)"
	case s.SegmentOverrideMatchingField != "":
		if s.AllowUserIDFallback && ev.UserID != "" && m.Value == ev.UserID {
			return "segmentOverrideMatchingField " + s.SegmentOverrideMatchingField + ", else userId (allowUserIdFallback)"
		}
		return "segmentOverrideMatchingField " + s.SegmentOverrideMatchingField
	case s.SyncUsingEmailInsteadOfCustomField:
		return "userId (no email on the event)"
	}
	return "userId"
}
