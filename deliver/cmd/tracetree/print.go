package main

import (
	"fmt"
	"io"
	"strings"
	"time"
)

// noisy are attribute prefixes hidden unless -v: transport details that
// otelhttp adds to every HTTP span and that rarely explain an outcome.
var noisy = []string{
	"network.", "net.", "user_agent.", "client.", "server.port", "url.scheme",
	"http.request.body.size", "http.response.body.size",
}

func isNoisy(key string) bool {
	for _, p := range noisy {
		if strings.HasPrefix(key, p) {
			return true
		}
	}
	return false
}

// fmtDuration rounds a duration to what a person reads at that size.
func fmtDuration(d time.Duration) string {
	switch {
	case d >= time.Second:
		return d.Round(time.Millisecond).String()
	case d >= time.Millisecond:
		return d.Round(10 * time.Microsecond).String()
	default:
		return d.Round(time.Microsecond).String()
	}
}

// printList writes one line per trace: id, start, span count, duration and
// root span.
func printList(w io.Writer, traces []*traceGroup) {
	for _, t := range traces {
		root := "?"
		if r := t.roots(); len(r) > 0 {
			root = fmt.Sprintf("%s (%s)", r[0].Name, r[0].service())
		}
		fmt.Fprintf(w, "%s  %s  %3d spans  %9s  %s\n",
			t.ID, t.Start.UTC().Format("2006-01-02T15:04:05.000Z"), len(t.Spans), fmtDuration(t.Duration()), root)
	}
}

// printTree writes one trace as an indented tree: each line has the span's
// start offset from the trace start, its duration, name, service and kind,
// status and attributes; span events (recorded errors) follow their span.
func printTree(w io.Writer, t *traceGroup, verbose bool) {
	fmt.Fprintf(w, "trace %s  %s  %d spans  %s\n",
		t.ID, t.Start.UTC().Format(time.RFC3339Nano), len(t.Spans), fmtDuration(t.Duration()))
	children := t.children()
	var walk func(s *span, prefix, branch, cont string)
	walk = func(s *span, prefix, branch, cont string) {
		fmt.Fprintf(w, "%9s %9s  %s%s%s\n",
			"+"+fmtDuration(s.StartTime.Sub(t.Start)), fmtDuration(s.EndTime.Sub(s.StartTime)),
			prefix, branch, describe(s, prefix == "" && branch == "", verbose))
		for _, e := range s.Events {
			fmt.Fprintf(w, "%9s %9s  %s%s  ! %s\n", "", "", prefix, cont, describeEvent(e.Name, e.Attributes))
		}
		kids := children[s.SpanContext.SpanID]
		for i, c := range kids {
			if i == len(kids)-1 {
				walk(c, prefix+cont, "└─ ", "   ")
			} else {
				walk(c, prefix+cont, "├─ ", "│  ")
			}
		}
	}
	for _, r := range t.roots() {
		walk(r, "", "", "")
	}
}

// describe is the text of one span's line after the tree glyphs. A root
// with a parent names it: the parent ran where it was not exported to this
// file (the caller whose traceparent ingest honoured).
func describe(s *span, root, verbose bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  (%s %s)", s.Name, s.service(), s.kindName())
	switch s.Status.Code {
	case "Error":
		b.WriteString("  ERROR")
		if s.Status.Description != "" {
			b.WriteString(": " + s.Status.Description)
		}
	case "Ok":
		b.WriteString("  OK")
	}
	if root && s.hasParent() {
		fmt.Fprintf(&b, "  [parent %s not in file]", s.Parent.SpanID)
	}
	for _, kv := range s.Attributes {
		if !verbose && isNoisy(kv.Key) {
			continue
		}
		fmt.Fprintf(&b, "  %s=%s", kv.Key, kv.String())
	}
	return b.String()
}

// describeEvent is the text of a span event: an exception shows its
// message, other events their attributes.
func describeEvent(name string, attrs []keyValue) string {
	if name == "exception" {
		msg, _ := attr(attrs, "exception.message")
		return "exception: " + msg
	}
	var b strings.Builder
	b.WriteString(name)
	for _, kv := range attrs {
		fmt.Fprintf(&b, "  %s=%s", kv.Key, kv.String())
	}
	return b.String()
}
