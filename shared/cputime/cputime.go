// Package cputime reads this process's CPU time and compares two variants
// of the same work by it, for the benchmarks that report CPU per event
// against a baseline measured in the same run.
package cputime

import (
	"fmt"
	"syscall"
	"testing"
	"time"
)

// Process is the CPU time this process has used so far, user and system,
// garbage collection included (getrusage RUSAGE_SELF). It panics when the
// kernel does not answer, which on Linux and macOS happens only for a bad
// argument.
func Process() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		panic(fmt.Sprintf("getrusage: %v", err))
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// Alternate compares the CPU cost of two variants of the same work in one
// run, as the baseline rule asks: block(i) runs n events of variant i (0 or
// 1) and returns the CPU time they took (from Process, around the part
// that counts). After one warming block of each, blocks alternate which
// variant goes first until each has run b.N events; Alternate then reports
// each one's CPU per event as "<name>-cpu-ns/event" and the ratio
// variant 1 / variant 0 as "<name1>/<name0>".
func Alternate(b *testing.B, n int, names [2]string, block func(i int) time.Duration) {
	block(0)
	block(1)
	var cpu [2]time.Duration
	events := 0
	b.ResetTimer()
	for round := 0; events < b.N; round++ {
		first := round % 2
		cpu[first] += block(first)
		cpu[1-first] += block(1 - first)
		events += n
	}
	for i, name := range names {
		b.ReportMetric(float64(cpu[i].Nanoseconds())/float64(events), name+"-cpu-ns/event")
	}
	b.ReportMetric(float64(cpu[1])/float64(cpu[0]), names[1]+"/"+names[0])
}
