package command

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"testing"
)

func TestExit(t *testing.T) {
	tests := []struct {
		name       string
		err        error
		wantStatus int
		wantStderr string
	}{
		{"success", nil, 0, ""},
		{"failure", errors.New("boom"), 1, "prog: boom\n"},
		{"usage", fmt.Errorf("parse: %w", Usagef("unknown command %q", "x")), 2, "prog: parse: unknown command \"x\"\nusage: prog <command>\n"},
		{"help", flag.ErrHelp, 1, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stderr bytes.Buffer
			var ran bool
			got := exit("prog", "usage: prog <command>\n", func(ctx context.Context) error {
				ran = ctx.Err() == nil
				return tt.err
			}, &stderr)
			if !ran {
				t.Errorf("run did not get a live context")
			}
			if got != tt.wantStatus || stderr.String() != tt.wantStderr {
				t.Errorf("exit(%v) = %d, stderr %q; want %d, %q", tt.err, got, stderr.String(), tt.wantStatus, tt.wantStderr)
			}
		})
	}
}

func TestSubcommand(t *testing.T) {
	if _, _, _, err := Subcommand(nil); !errors.As(err, new(UsageError)) {
		t.Errorf("Subcommand(nil) error = %v, want a UsageError", err)
	}
	name, fs, rest, err := Subcommand([]string{"put", "-file", "a.json"})
	if err != nil || name != "put" {
		t.Fatalf("Subcommand(put …) = %q, %v", name, err)
	}
	file := fs.String("file", "", "")
	if err := Parse(fs, rest); err != nil || *file != "a.json" {
		t.Errorf("Parse(%q) = %v, -file %q; want a.json", rest, err, *file)
	}
	if err := Parse(fs, []string{"-nope"}); !errors.As(err, new(UsageError)) {
		t.Errorf("Parse(-nope) error = %v, want a UsageError", err)
	}
}
