// Package command is how every program in this repository starts and
// stops: a context that SIGINT and SIGTERM end, one line on standard error
// when it fails, and an exit status that says how (1: it failed; 2: it was
// called wrong, and its usage follows the line).
package command

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"syscall"
)

// UsageError is a command line that cannot run: Main prints the program's
// usage after it and exits with 2.
type UsageError string

func (e UsageError) Error() string { return string(e) }

// Usagef is a UsageError with a formatted message.
func Usagef(format string, args ...any) error { return UsageError(fmt.Sprintf(format, args...)) }

// Main runs run with a context that SIGINT and SIGTERM end, then exits:
// with 0 when it returns nil; else after the line "name: error" on standard
// error (none for flag.ErrHelp, which the flag package has reported), with
// 2 and usage for a UsageError, with 1 for any other error.
func Main(name, usage string, run func(ctx context.Context) error) {
	os.Exit(exit(name, usage, run, os.Stderr))
}

// exit is Main up to os.Exit: the status.
func exit(name, usage string, run func(context.Context) error, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	err := run(ctx)
	if err == nil {
		return 0
	}
	if !errors.Is(err, flag.ErrHelp) {
		fmt.Fprintf(stderr, "%s: %v\n", name, err)
	}
	if ue := UsageError(""); errors.As(err, &ue) {
		fmt.Fprint(stderr, usage)
		return 2
	}
	return 1
}

// Subcommand splits a command line of the form "<subcommand> [flags]" into
// the subcommand, a flag set for it that prints nothing (Main prints the
// error and the usage) and the arguments for Parse.
func Subcommand(args []string) (name string, fs *flag.FlagSet, rest []string, err error) {
	if len(args) == 0 {
		return "", nil, nil, UsageError("no command")
	}
	fs = flag.NewFlagSet(args[0], flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	return args[0], fs, args[1:], nil
}

// Parse parses args with fs; a bad flag is a UsageError.
func Parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		return UsageError(err.Error())
	}
	return nil
}
