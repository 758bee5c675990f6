package telemetry

import (
	"cmp"
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// samplerFromEnv is the sampler OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG ask for (default parentbased_always_on), and its
// root: the part that decides for a trace that starts here. The SDK reads
// the same variables but keeps the sampler to itself, and the edge needs
// the root; here a misspelt name also fails the start instead of sampling
// everything.
func samplerFromEnv() (sampler, root sdktrace.Sampler, err error) {
	name := cmp.Or(strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER"))), "parentbased_always_on")
	base, parentBased := strings.CutPrefix(name, "parentbased_")
	switch base {
	case "always_on":
		root = sdktrace.AlwaysSample()
	case "always_off":
		root = sdktrace.NeverSample()
	case "traceidratio":
		arg := cmp.Or(strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER_ARG")), "1")
		ratio, err := strconv.ParseFloat(arg, 64)
		if err != nil || ratio < 0 || ratio > 1 {
			return nil, nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: %q is not a ratio between 0 and 1", arg)
		}
		root = sdktrace.TraceIDRatioBased(ratio)
	default:
		return nil, nil, fmt.Errorf("OTEL_TRACES_SAMPLER: unknown sampler %q", name)
	}
	if parentBased {
		return sdktrace.ParentBased(root), root, nil
	}
	return root, root, nil
}

// newEdgeSampler is the sampler at the edge, where a remote parent is a
// caller: its span is sampled as if the trace started here, by root on a
// trace id of its own (ownDraw), so neither the caller's sampled flag nor
// its trace id (which TraceIDRatioBased reads, and a caller can choose)
// decides. With TRACE_HONOR_CALLER_SAMPLED=true a sampled caller raises the
// decision to sampled; an unsampled one never lowers it. Other spans follow
// their parent, as parent-based sampling does, so a request's spans and
// deliver's follow the decision made here. (For a sampler that is not
// parent-based, following the parent is the same decision: always_on and
// always_off decide alike for every span, traceidratio alike for every
// span of a trace.)
func newEdgeSampler(root sdktrace.Sampler) (sdktrace.Sampler, error) {
	v := cmp.Or(strings.TrimSpace(os.Getenv("TRACE_HONOR_CALLER_SAMPLED")), "false")
	honor, err := strconv.ParseBool(v)
	if err != nil {
		return nil, fmt.Errorf("TRACE_HONOR_CALLER_SAMPLED: %q is not true or false", v)
	}
	own, sampled := ownDraw{root}, sdktrace.Sampler(ownDraw{root})
	if honor {
		sampled = sdktrace.AlwaysSample()
	}
	return sdktrace.ParentBased(root, sdktrace.WithRemoteParentSampled(sampled), sdktrace.WithRemoteParentNotSampled(own)), nil
}

// ownDraw decides as root does on a random trace id; a root sampler reads
// the parent only for its tracestate, which is kept.
type ownDraw struct{ root sdktrace.Sampler }

func (s ownDraw) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	for i := range p.TraceID {
		p.TraceID[i] = byte(rand.Uint32())
	}
	return s.root.ShouldSample(p)
}

func (s ownDraw) Description() string { return "OwnDraw{" + s.root.Description() + "}" }
