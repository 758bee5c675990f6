package failure

import (
	"errors"
	"fmt"
	"testing"
)

func TestPermanent(t *testing.T) {
	base := errors.New("bad answer")
	inner := Permanent("inner", base)
	tests := []struct {
		name      string
		err       error
		permanent bool
		class     string
	}{
		{"nil", nil, false, ""},
		{"plain", base, false, ""},
		{"marked", inner, true, "inner"},
		{"wrapped", fmt.Errorf("user: %w", inner), true, "inner"},
		{"joined", errors.Join(errors.New("other"), inner), true, "inner"},
		{"outer class wins", Permanent("outer", fmt.Errorf("ctx: %w", inner)), true, "outer"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := IsPermanent(tt.err); got != tt.permanent {
				t.Errorf("IsPermanent(%v) = %v, want %v", tt.err, got, tt.permanent)
			}
			if got := Class(tt.err); got != tt.class {
				t.Errorf("Class(%v) = %q, want %q", tt.err, got, tt.class)
			}
		})
	}
}

func TestPermanentKeepsChainAndMessage(t *testing.T) {
	base := errors.New("bad answer")
	err := Permanent("c", base)
	if !errors.Is(err, base) {
		t.Errorf("errors.Is(Permanent(c, base), base) = false, want true")
	}
	if err.Error() != base.Error() {
		t.Errorf("Permanent(c, base).Error() = %q, want %q", err.Error(), base.Error())
	}
	if Permanent("c", nil) != nil {
		t.Error("Permanent(c, nil) != nil")
	}
}
