package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"io"
	"sort"
	"strconv"
	"time"
)

// span is one line of the console exporter's file: the JSON encoding of
// go.opentelemetry.io/otel/sdk/trace/tracetest.SpanStub, which
// go.opentelemetry.io/otel/exporters/stdout/stdouttrace writes per span.
// Only the fields the tree shows are decoded.
type span struct {
	Name        string
	SpanContext struct {
		TraceID string
		SpanID  string
	}
	Parent struct {
		TraceID string
		SpanID  string
		Remote  bool
	}
	SpanKind   int
	StartTime  time.Time
	EndTime    time.Time
	Attributes []keyValue
	Events     []struct {
		Name       string
		Attributes []keyValue
		Time       time.Time
	}
	Status struct {
		Code        string
		Description string
	}
	Resource []keyValue
}

// keyValue is the JSON form of attribute.KeyValue.
type keyValue struct {
	Key   string
	Value struct {
		Type  string
		Value json.RawMessage
	}
}

// String renders the value: strings bare, everything else as JSON.
func (kv keyValue) String() string {
	if kv.Value.Type == "STRING" {
		var s string
		if err := json.Unmarshal(kv.Value.Value, &s); err == nil {
			return s
		}
	}
	return string(kv.Value.Value)
}

// attr returns the value of the attribute named key.
func attr(kvs []keyValue, key string) (string, bool) {
	for _, kv := range kvs {
		if kv.Key == key {
			return kv.String(), true
		}
	}
	return "", false
}

// zeroSpanID is how stdouttrace writes "no parent".
const zeroSpanID = "0000000000000000"

// hasParent reports whether the span has a parent span, local or remote.
func (s *span) hasParent() bool {
	return s.Parent.SpanID != "" && s.Parent.SpanID != zeroSpanID
}

// kindName is the name of an OpenTelemetry span kind.
func (s *span) kindName() string {
	switch s.SpanKind {
	case 1:
		return "internal"
	case 2:
		return "server"
	case 3:
		return "client"
	case 4:
		return "producer"
	case 5:
		return "consumer"
	}
	return "kind" + strconv.Itoa(s.SpanKind)
}

// service is the span's service.name resource attribute.
func (s *span) service() string {
	name, _ := attr(s.Resource, "service.name")
	return name
}

// traceGroup is every span of one trace found in the file.
type traceGroup struct {
	ID    string
	Spans []*span
	Start time.Time
	End   time.Time
}

// Duration is the time from the first span's start to the last span's end.
func (t *traceGroup) Duration() time.Duration { return t.End.Sub(t.Start) }

// readSpans reads a JSON-lines span file. Lines that do not parse (a line
// being written while the file is read) are counted and skipped.
func readSpans(r io.Reader) (spans []*span, skipped int, err error) {
	br := bufio.NewReader(r)
	for {
		line, rerr := br.ReadBytes('\n')
		if len(line) > 0 {
			s := new(span)
			if err := json.Unmarshal(line, s); err != nil || s.SpanContext.TraceID == "" {
				skipped++
			} else {
				spans = append(spans, s)
			}
		}
		if rerr == io.EOF {
			return spans, skipped, nil
		}
		if rerr != nil {
			return nil, 0, fmt.Errorf("read spans: %w", rerr)
		}
	}
}

// groupTraces collects spans by trace, ordered by start time, oldest first.
func groupTraces(spans []*span) []*traceGroup {
	byID := map[string]*traceGroup{}
	var out []*traceGroup
	for _, s := range spans {
		t, ok := byID[s.SpanContext.TraceID]
		if !ok {
			t = &traceGroup{ID: s.SpanContext.TraceID, Start: s.StartTime, End: s.EndTime}
			byID[t.ID] = t
			out = append(out, t)
		}
		t.Spans = append(t.Spans, s)
		if s.StartTime.Before(t.Start) {
			t.Start = s.StartTime
		}
		if s.EndTime.After(t.End) {
			t.End = s.EndTime
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return out[i].Start.Before(out[j].Start) })
	return out
}

// roots returns the spans of t whose parent is not in t, earliest first:
// the trace's root, or spans whose parent ran in a process that exported
// elsewhere (a caller's span from its traceparent).
func (t *traceGroup) roots() []*span {
	ids := map[string]bool{}
	for _, s := range t.Spans {
		ids[s.SpanContext.SpanID] = true
	}
	var out []*span
	for _, s := range t.Spans {
		if !s.hasParent() || !ids[s.Parent.SpanID] {
			out = append(out, s)
		}
	}
	sortByStart(out)
	return out
}

// children maps a span id to its child spans, earliest first.
func (t *traceGroup) children() map[string][]*span {
	out := map[string][]*span{}
	for _, s := range t.Spans {
		if s.hasParent() {
			out[s.Parent.SpanID] = append(out[s.Parent.SpanID], s)
		}
	}
	for _, c := range out {
		sortByStart(c)
	}
	return out
}

func sortByStart(spans []*span) {
	sort.SliceStable(spans, func(i, j int) bool { return spans[i].StartTime.Before(spans[j].StartTime) })
}
