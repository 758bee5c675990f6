package telemetry

import (
	"context"

	"go.opentelemetry.io/otel"
	"go.opentelemetry.io/otel/propagation"
)

// Inject returns the trace context of ctx (traceparent, tracestate) as a
// map, for carrying it inside a Pub/Sub message body. With no span in ctx
// the map is empty.
func Inject(ctx context.Context) map[string]string {
	carrier := propagation.MapCarrier{}
	otel.GetTextMapPropagator().Inject(ctx, carrier)
	return carrier
}

// Extract returns ctx carrying the remote trace context in carrier, as
// written by Inject, so that spans started from it continue that trace. A
// nil or empty carrier returns ctx unchanged.
func Extract(ctx context.Context, carrier map[string]string) context.Context {
	if len(carrier) == 0 {
		return ctx
	}
	return otel.GetTextMapPropagator().Extract(ctx, propagation.MapCarrier(carrier))
}
