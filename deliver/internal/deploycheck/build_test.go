package deploycheck

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestServicesBuildAlone builds each service module the way the Dockerfile
// does: from its own directory, with GOWORK=off, so its go.mod and go.sum
// must be complete without the workspace.
func TestServicesBuildAlone(t *testing.T) {
	goBin, err := exec.LookPath("go")
	if err != nil {
		t.Skip("skipped: no go command on PATH")
	}
	root := repoRoot(t)
	for _, svc := range dockerfileServices(t) {
		t.Run(svc, func(t *testing.T) {
			dir := filepath.Join(root, svc)
			env := append(os.Environ(), "GOWORK=off", "CGO_ENABLED=0")

			list := exec.Command(goBin, "list", "-f", "{{.Name}}", ".")
			list.Dir, list.Env = dir, env
			out, err := list.CombinedOutput()
			switch {
			case err != nil && strings.Contains(string(out), "no Go files"):
				t.Skipf("skipped: %s has no Go files at its module root yet", svc)
			case err != nil:
				t.Fatalf("GOWORK=off go list in %s: %v\n%s", svc, err, out)
			case strings.TrimSpace(string(out)) != "main":
				t.Skipf("skipped: %s's root package is %q, not main yet", svc, strings.TrimSpace(string(out)))
			}

			build := exec.Command(goBin, "build", "-trimpath", "-o", filepath.Join(t.TempDir(), svc), ".")
			build.Dir, build.Env = dir, env
			if out, err := build.CombinedOutput(); err != nil {
				t.Errorf("GOWORK=off go build in %s: %v (its go.mod/go.sum must be complete without go.work: GOWORK=off go mod tidy there)\n%s", svc, err, out)
			}
		})
	}
}
