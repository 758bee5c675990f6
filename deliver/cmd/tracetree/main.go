// Command tracetree prints the traces that the console trace exporter of
// shared/telemetry wrote to a JSON-lines file (OTEL_TRACES_EXPORTER=console
// with OTEL_CONSOLE_FILE=path), so a person can follow one event through
// ingest and deliver without a cloud account.
//
// Usage:
//
//	tracetree [-file .run/traces.jsonl] [-n 20]      list the latest traces
//	tracetree -last                                  the latest trace as a tree
//	tracetree -trace <trace id or prefix>            one trace as a tree
//	tracetree -message <Segment messageId>           the trace(s) of one event
//
// A tree line shows the span's start offset from the trace start, its
// duration, name, service and kind, status and attributes (-v adds the
// transport details otelhttp records); recorded errors follow with "!".
// -message matches the segment.message_id or messaging.message.id span
// attribute. -file defaults to $OTEL_CONSOLE_FILE, else .run/traces.jsonl.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"strings"

	"github.com/startdeliver/segment-destination/shared/command"
)

func main() {
	command.Main("tracetree", "", func(context.Context) error { return run(os.Args[1:], os.Getenv, os.Stdout, os.Stderr) })
}

// run parses args, reads the span file and prints to stdout; warnings go to
// stderr.
func run(args []string, getenv func(string) string, stdout, stderr io.Writer) error {
	defaultFile := getenv("OTEL_CONSOLE_FILE")
	if defaultFile == "" {
		defaultFile = ".run/traces.jsonl"
	}
	fs := flag.NewFlagSet("tracetree", flag.ContinueOnError)
	fs.SetOutput(stderr)
	file := fs.String("file", defaultFile, "JSON-lines span file written by the console exporter")
	traceID := fs.String("trace", "", "print the trace with this id (or unique id prefix)")
	last := fs.Bool("last", false, "print the latest trace")
	message := fs.String("message", "", "print the traces whose spans carry this Segment messageId (segment.message_id) or Pub/Sub message id")
	n := fs.Int("n", 20, "how many traces to list")
	verbose := fs.Bool("v", false, "show every attribute, transport details included")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	modes := 0
	for _, set := range []bool{*traceID != "", *last, *message != ""} {
		if set {
			modes++
		}
	}
	if modes > 1 {
		return errors.New("use at most one of -trace, -last and -message")
	}

	f, err := os.Open(*file)
	if err != nil {
		return fmt.Errorf("open span file: %w", err)
	}
	defer f.Close()
	spans, skipped, err := readSpans(f)
	if err != nil {
		return fmt.Errorf("%s: %w", *file, err)
	}
	if skipped > 0 {
		fmt.Fprintf(stderr, "tracetree: skipped %d line(s) that are not spans\n", skipped)
	}
	traces := groupTraces(spans)
	if len(traces) == 0 {
		return fmt.Errorf("%s: no spans yet", *file)
	}

	switch {
	case *last:
		printTree(stdout, traces[len(traces)-1], *verbose)
	case *traceID != "":
		t, err := findTrace(traces, *traceID)
		if err != nil {
			return err
		}
		printTree(stdout, t, *verbose)
	case *message != "":
		found := findMessage(traces, *message)
		if len(found) == 0 {
			return fmt.Errorf("no span with segment.message_id or messaging.message.id %q in %s", *message, *file)
		}
		for i, t := range found {
			if i > 0 {
				fmt.Fprintln(stdout)
			}
			printTree(stdout, t, *verbose)
		}
	default:
		if *n > 0 && len(traces) > *n {
			traces = traces[len(traces)-*n:]
		}
		printList(stdout, traces)
	}
	return nil
}

// findTrace returns the trace whose id is id or starts with it.
func findTrace(traces []*traceGroup, id string) (*traceGroup, error) {
	id = strings.ToLower(id)
	var match []*traceGroup
	for _, t := range traces {
		if t.ID == id {
			return t, nil
		}
		if strings.HasPrefix(t.ID, id) {
			match = append(match, t)
		}
	}
	switch len(match) {
	case 0:
		return nil, fmt.Errorf("no trace %s in the file", id)
	case 1:
		return match[0], nil
	}
	return nil, fmt.Errorf("trace prefix %s matches %d traces; give more digits", id, len(match))
}

// findMessage returns the traces, oldest first, with a span whose
// segment.message_id or messaging.message.id attribute is id. A Segment
// retry of the same event is a new trace, so there may be several.
func findMessage(traces []*traceGroup, id string) []*traceGroup {
	var out []*traceGroup
	for _, t := range traces {
		for _, s := range t.Spans {
			v1, _ := attr(s.Attributes, "segment.message_id")
			v2, _ := attr(s.Attributes, "messaging.message.id")
			if v1 == id || v2 == id {
				out = append(out, t)
				break
			}
		}
	}
	return out
}
