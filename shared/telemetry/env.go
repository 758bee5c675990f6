package telemetry

import (
	"fmt"
	"net/url"
	"strconv"
	"strings"

	"go.opentelemetry.io/otel/attribute"
	sdktrace "go.opentelemetry.io/otel/sdk/trace"
)

// Exporter names accepted in OTEL_TRACES_EXPORTER and OTEL_METRICS_EXPORTER.
const (
	ExporterOTLP    = "otlp"
	ExporterGCP     = "gcp"
	ExporterConsole = "console"
	ExporterNone    = "none"
)

// OTLP protocols accepted in OTEL_EXPORTER_OTLP_PROTOCOL.
const (
	ProtocolGRPC         = "grpc"
	ProtocolHTTPProtobuf = "http/protobuf"
)

// signal is one kind of telemetry: "TRACES" or "METRICS", as it appears in
// the per-signal OTEL_* variable names.
type signal string

const (
	signalTraces  signal = "TRACES"
	signalMetrics signal = "METRICS"
)

// exporterChoice is what the environment asks for one signal.
type exporterChoice struct {
	// Exporters lists the exporters to run; empty means none.
	Exporters []string
	// Protocol is the OTLP protocol, set only when Exporters has otlp.
	Protocol string
	// File is where the console exporter appends; empty means stdout.
	File string
}

// chooseExporters decides from the environment which exporters a signal
// uses. It returns an error for a name it does not know, so a typo fails the
// start instead of silently dropping telemetry.
func chooseExporters(getenv func(string) string, s signal) (exporterChoice, error) {
	if strings.EqualFold(strings.TrimSpace(getenv("OTEL_SDK_DISABLED")), "true") {
		return exporterChoice{}, nil
	}
	name := "OTEL_" + string(s) + "_EXPORTER"
	var kinds []string
	if v := strings.TrimSpace(getenv(name)); v != "" {
		seen := map[string]bool{}
		for _, k := range strings.Split(v, ",") {
			k = strings.ToLower(strings.TrimSpace(k))
			switch k {
			case ExporterOTLP, ExporterGCP, ExporterConsole:
				if !seen[k] {
					seen[k] = true
					kinds = append(kinds, k)
				}
			case ExporterNone, "":
			default:
				return exporterChoice{}, fmt.Errorf("%s: unknown exporter %q (want otlp, gcp, console or none)", name, k)
			}
		}
	} else {
		switch {
		case getenv("OTEL_EXPORTER_OTLP_ENDPOINT") != "" || getenv("OTEL_EXPORTER_OTLP_"+string(s)+"_ENDPOINT") != "":
			kinds = []string{ExporterOTLP}
		case getenv("K_SERVICE") != "":
			kinds = []string{ExporterGCP}
		}
	}

	c := exporterChoice{Exporters: kinds}
	for _, k := range kinds {
		switch k {
		case ExporterOTLP:
			p, err := otlpProtocol(getenv, s)
			if err != nil {
				return exporterChoice{}, err
			}
			c.Protocol = p
		case ExporterConsole:
			if s == signalTraces {
				c.File = getenv("OTEL_CONSOLE_FILE")
			} else {
				c.File = getenv("OTEL_CONSOLE_METRICS_FILE")
			}
		}
	}
	return c, nil
}

// otlpProtocol reads the OTLP protocol for a signal; the per-signal variable
// wins over the general one.
func otlpProtocol(getenv func(string) string, s signal) (string, error) {
	name := "OTEL_EXPORTER_OTLP_" + string(s) + "_PROTOCOL"
	p := strings.TrimSpace(getenv(name))
	if p == "" {
		name = "OTEL_EXPORTER_OTLP_PROTOCOL"
		p = strings.TrimSpace(getenv(name))
	}
	switch p {
	case "":
		return ProtocolHTTPProtobuf, nil
	case ProtocolGRPC, ProtocolHTTPProtobuf:
		return p, nil
	default:
		return "", fmt.Errorf("%s: unsupported protocol %q (want grpc or http/protobuf)", name, p)
	}
}

// samplerFromEnv builds the sampler OTEL_TRACES_SAMPLER and
// OTEL_TRACES_SAMPLER_ARG ask for. Parent-based sampling is the default so
// that a caller's sampling decision carries through both services.
func samplerFromEnv(getenv func(string) string) (sdktrace.Sampler, error) {
	name := strings.ToLower(strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER")))
	ratio := func() (float64, error) {
		arg := strings.TrimSpace(getenv("OTEL_TRACES_SAMPLER_ARG"))
		if arg == "" {
			return 1, nil
		}
		r, err := strconv.ParseFloat(arg, 64)
		if err != nil || r < 0 || r > 1 {
			return 0, fmt.Errorf("OTEL_TRACES_SAMPLER_ARG: %q is not a ratio between 0 and 1", arg)
		}
		return r, nil
	}
	switch name {
	case "", "parentbased_always_on":
		return sdktrace.ParentBased(sdktrace.AlwaysSample()), nil
	case "parentbased_always_off":
		return sdktrace.ParentBased(sdktrace.NeverSample()), nil
	case "always_on":
		return sdktrace.AlwaysSample(), nil
	case "always_off":
		return sdktrace.NeverSample(), nil
	case "traceidratio", "parentbased_traceidratio":
		r, err := ratio()
		if err != nil {
			return nil, err
		}
		if name == "traceidratio" {
			return sdktrace.TraceIDRatioBased(r), nil
		}
		return sdktrace.ParentBased(sdktrace.TraceIDRatioBased(r)), nil
	default:
		return nil, fmt.Errorf("OTEL_TRACES_SAMPLER: unknown sampler %q", name)
	}
}

// resourceAttributesFromEnv parses OTEL_RESOURCE_ATTRIBUTES:
// key=value pairs separated by commas, values percent-encoded.
func resourceAttributesFromEnv(getenv func(string) string) ([]attribute.KeyValue, error) {
	v := strings.TrimSpace(getenv("OTEL_RESOURCE_ATTRIBUTES"))
	if v == "" {
		return nil, nil
	}
	var attrs []attribute.KeyValue
	for _, pair := range strings.Split(v, ",") {
		if strings.TrimSpace(pair) == "" {
			continue
		}
		k, val, ok := strings.Cut(pair, "=")
		k = strings.TrimSpace(k)
		if !ok || k == "" {
			return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: %q is not key=value", pair)
		}
		dec, err := url.PathUnescape(strings.TrimSpace(val))
		if err != nil {
			return nil, fmt.Errorf("OTEL_RESOURCE_ATTRIBUTES: value of %q: %w", k, err)
		}
		attrs = append(attrs, attribute.String(k, dec))
	}
	return attrs, nil
}
