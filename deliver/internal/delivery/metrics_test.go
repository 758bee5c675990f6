package delivery

import (
	"context"
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/startdeliver/segment-destination/shared/telemetry/telemetrytest"
)

// TestOutcomeMetrics counts deliver.events by outcome, and config lookups
// by source and result.
func TestOutcomeMetrics(t *testing.T) {
	m := telemetrytest.Metrics(t)

	f := newFixture(t, simple)
	ctx := context.Background()
	f.p.Process(ctx, message(t, `{"type":"track","userId":"u1","event":"e","messageId":"a"}`))
	f.p.Process(ctx, message(t, `{"type":"track","userId":"u1","event":"e","messageId":"a"}`))
	f.p.Process(ctx, message(t, `{"type":"alias","userId":"u1","previousId":"p","messageId":"b"}`))
	f.p.Process(ctx, message(t, `{"type":"track","anonymousId":"x","event":"e","messageId":"c"}`))
	f.acc.entries = nil
	f.p.Process(ctx, message(t, `{"type":"track","userId":"u1","event":"e","messageId":"d"}`))

	got := m.Sums("deliver.events", "outcome")
	lookups := m.Sums("deliver.config.lookups", "source", "result")
	e2e := m.HistogramCount("deliver.end_to_end.duration")
	// The anonymous track is skipped (class anonymous), not dead-lettered.
	want := map[string]int64{OutcomeDelivered: 1, OutcomeDuplicate: 1, OutcomeSkipped: 2, OutcomeDeadLettered: 1}
	for k, v := range want {
		if got[k] != v {
			t.Errorf("deliver.events{outcome=%s} = %d, want %d (all: %v)", k, got[k], v, got)
		}
	}
	// The duplicate is caught before the lookup; the fake store answers
	// found entries from its cache and reads unknown ones.
	if diff := cmp.Diff(map[string]int64{"cache/found": 3, "firestore/unknown": 1}, lookups); diff != "" {
		t.Errorf("deliver.config.lookups by source/result (-want +got):\n%s", diff)
	}
	if e2e != 1 {
		t.Errorf("end-to-end latency recorded %d times, want 1 (the delivered event)", e2e)
	}
}
