package deploycheck

import (
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"testing"
)

// dockerfileServices returns the values the Dockerfile accepts for its
// SERVICE build argument, sorted.
func dockerfileServices(t *testing.T) []string {
	t.Helper()
	df := readDockerfile(t)
	if !regexp.MustCompile(`(?m)^ARG SERVICE\s*$`).MatchString(df) {
		t.Fatalf("Dockerfile declares no ARG SERVICE")
	}
	m := regexp.MustCompile(`(?m)^\s*([a-z|]+)\)\s*;;`).FindStringSubmatch(df)
	if m == nil {
		t.Fatalf("Dockerfile does not check SERVICE against the allowed values")
	}
	services := strings.Split(m[1], "|")
	sort.Strings(services)
	return services
}

func readDockerfile(t *testing.T) string {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	return string(raw)
}

func TestDockerfile(t *testing.T) {
	df := readDockerfile(t)
	services := dockerfileServices(t)

	// Every SERVICE value is a module of the workspace and a Cloud Run
	// service in Terraform.
	work := readGoWork(t)
	cfg := loadTerraform(t)
	for _, svc := range services {
		found := false
		for _, u := range work.Use {
			found = found || filepath.Clean(u.Path) == svc
		}
		if !found {
			t.Errorf("SERVICE=%s is not a module in go.work", svc)
		}
		addr := "google_cloud_run_v2_service." + svc
		if got := cfg.str(t, cfg.resource(t, addr), "name", nil); got != "segment-"+svc {
			t.Errorf("%s.name = %q, want segment-%s", addr, got, svc)
		}
	}

	froms := regexp.MustCompile(`(?m)^FROM\s+(\S+)`).FindAllStringSubmatch(df, -1)
	if len(froms) < 2 {
		t.Fatalf("Dockerfile has %d stages, want a build stage and a final one", len(froms))
	}
	final := froms[len(froms)-1][1]
	if !regexp.MustCompile(`^gcr\.io/distroless/static[-\w]*:nonroot$`).MatchString(final) {
		t.Errorf("final image = %q, want distroless static :nonroot (no shell, non-root)", final)
	}

	// The builder's Go line is the workspace's.
	goLine := work.Go.Version
	if parts := strings.SplitN(goLine, ".", 3); len(parts) >= 2 {
		goLine = parts[0] + "." + parts[1]
	}
	if !strings.Contains(df, "golang:"+goLine) {
		t.Errorf("Dockerfile builds with no golang:%s image (go.work says go %s)", goLine, work.Go.Version)
	}

	for _, want := range []string{"CGO_ENABLED=0", "GOWORK=off", "-trimpath", "USER nonroot", `ENTRYPOINT ["/service"]`} {
		if !strings.Contains(df, want) {
			t.Errorf("Dockerfile has no %s", want)
		}
	}
}

func TestDockerignore(t *testing.T) {
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Fields(string(raw))
	// Everything is excluded, then the modules the images need come back.
	if len(lines) == 0 || lines[0] == "" {
		t.Fatalf(".dockerignore is empty")
	}
	work := readGoWork(t)
	for _, u := range work.Use {
		want := "!" + filepath.Clean(u.Path) + "/"
		found := false
		for _, l := range lines {
			found = found || l == want
		}
		if !found {
			t.Errorf(".dockerignore does not include %s back into the build context", want)
		}
	}
}
