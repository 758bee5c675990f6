package main

import (
	"os/exec"
	"syscall"
)

// dieWithTest makes a service process started by a test die with the test
// process: a test binary killed by its timeout (or by hand) otherwise leaves
// its deliver and ingest children running, reparented to init, holding the
// emulators' subscriptions and any file locks the test inherited.
func dieWithTest(cmd *exec.Cmd) {
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGKILL}
}
