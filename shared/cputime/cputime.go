// Package cputime reads this process's CPU time, for the benchmarks that
// report CPU per event against a baseline measured in the same run.
package cputime

import (
	"fmt"
	"syscall"
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
