package receive

import (
	"testing"

	"github.com/google/go-cmp/cmp"

	"github.com/startdeliver/segment-destination/shared/telemetry/telemetrytest"
)

// TestMetrics counts events received (by type), published and rejected by
// reason.
func TestMetrics(t *testing.T) {
	m := telemetrytest.Metrics(t)

	h := newTestHandler(&fakePublisher{})
	auth := map[string]string{"Authorization": basic(goodKey)}
	req{path: "/", body: track, header: auth}.do(t, h)
	req{path: "/", body: track, header: auth}.do(t, h)
	req{path: "/", body: `{"type":"track","userId":"u"}`, header: auth}.do(t, h)
	req{path: "/", body: track, header: map[string]string{"Authorization": basic("nope")}}.do(t, h)
	req{path: "/", body: `{"type":"made-up-1","userId":"u","messageId":"x"}`, header: auth}.do(t, h)

	for _, c := range []struct {
		name string
		by   []string
		want map[string]int64
	}{
		{"ingest.events.received", []string{"type"}, map[string]int64{"track": 3, "unknown": 1}}, // a made-up type is not a new series
		{"ingest.events.published", nil, map[string]int64{"": 2}},
		{"ingest.events.rejected", []string{"reason"}, map[string]int64{"invalid": 2, "unauthenticated": 1}},
	} {
		if diff := cmp.Diff(c.want, m.Sums(c.name, c.by...)); diff != "" {
			t.Errorf("%s by %q (-want +got):\n%s", c.name, c.by, diff)
		}
	}
}
