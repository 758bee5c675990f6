package waitfor

import (
	"sync/atomic"
	"testing"
	"time"
)

func TestWithinReturnsOnceTrue(t *testing.T) {
	var n atomic.Int32
	Within(t, time.Minute, "the third poll", func() bool { return n.Add(1) == 3 })
	if got := n.Load(); got != 3 {
		t.Errorf("polled %d times, want 3", got)
	}
}

// fatalRecorder records Fatalf instead of ending the test.
type fatalRecorder struct {
	testing.TB
	msg string
}

func (f *fatalRecorder) Helper() {}
func (f *fatalRecorder) Fatalf(format string, args ...any) {
	f.msg = format
	panic(f)
}

func TestWithinFailsAfterTimeout(t *testing.T) {
	f := &fatalRecorder{TB: t}
	func() {
		defer func() {
			if r := recover(); r != f {
				t.Fatalf("recovered %v, want the recorder", r)
			}
		}()
		Within(f, 5*time.Millisecond, "never", func() bool { return false })
	}()
	if f.msg == "" {
		t.Error("Within did not fail after its timeout")
	}
}
