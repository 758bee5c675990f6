package telemetry

import (
	"fmt"
	"math/rand/v2"
	"os"
	"strconv"
	"strings"

	sdktrace "go.opentelemetry.io/otel/sdk/trace"
	"go.opentelemetry.io/otel/trace"
)

// samplerFromEnv is the sampler OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG ask for (default parentbased_always_on), and its
// root: the part that decides for a trace that starts here. The SDK reads
// the same variables but keeps the sampler to itself, and the edge needs
// the root; here a misspelt name also fails the start instead of sampling
// everything.
func samplerFromEnv() (sampler, root sdktrace.Sampler, err error) {
	name := strings.ToLower(strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER")))
	if name == "" {
		name = "parentbased_always_on"
	}
	base, parentBased := strings.CutPrefix(name, "parentbased_")
	switch base {
	case "always_on":
		root = sdktrace.AlwaysSample()
	case "always_off":
		root = sdktrace.NeverSample()
	case "traceidratio":
		ratio := 1.0
		if arg := strings.TrimSpace(os.Getenv("OTEL_TRACES_SAMPLER_ARG")); arg != "" {
			if ratio, err = strconv.ParseFloat(arg, 64); err != nil || ratio < 0 || ratio > 1 {
				return nil, nil, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: %q is not a ratio between 0 and 1", arg)
			}
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

// edgeSampler samples a span whose parent is a caller's (a remote parent,
// at the edge) as if the trace started here: neither the caller's sampled
// flag nor its trace id (which TraceIDRatioBased reads, and a caller can
// choose) decides. With honorCaller (TRACE_HONOR_CALLER_SAMPLED=true) a
// sampled caller raises the decision to sampled; an unsampled one never
// lowers it. Other spans follow the configured sampler, so a request's
// spans and deliver's (parent-based) follow the decision made here.
type edgeSampler struct {
	sdktrace.Sampler
	root        sdktrace.Sampler
	honorCaller bool
}

func newEdgeSampler(configured, root sdktrace.Sampler) (sdktrace.Sampler, error) {
	v := strings.TrimSpace(os.Getenv("TRACE_HONOR_CALLER_SAMPLED"))
	honor := false
	if v != "" {
		var err error
		if honor, err = strconv.ParseBool(v); err != nil {
			return nil, fmt.Errorf("TRACE_HONOR_CALLER_SAMPLED: %q is not true or false", v)
		}
	}
	return edgeSampler{Sampler: configured, root: root, honorCaller: honor}, nil
}

func (s edgeSampler) ShouldSample(p sdktrace.SamplingParameters) sdktrace.SamplingResult {
	caller := trace.SpanContextFromContext(p.ParentContext)
	if !caller.IsRemote() {
		return s.Sampler.ShouldSample(p)
	}
	if s.honorCaller && caller.IsSampled() {
		return sdktrace.SamplingResult{Decision: sdktrace.RecordAndSample, Tracestate: caller.TraceState()}
	}
	// A root sampler reads the parent only for its tracestate, kept.
	own := p
	for i := range own.TraceID {
		own.TraceID[i] = byte(rand.Uint32())
	}
	return s.root.ShouldSample(own)
}

func (s edgeSampler) Description() string {
	return fmt.Sprintf("Edge{%s,honorCaller:%t}", s.Sampler.Description(), s.honorCaller)
}
