package deploycheck

import (
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
	"golang.org/x/mod/modfile"
	"gopkg.in/yaml.v3"
)

// cloudBuild is the part of a Cloud Build config these tests read.
type cloudBuild struct {
	Steps []struct {
		ID         string   `yaml:"id"`
		Name       string   `yaml:"name"`
		Entrypoint string   `yaml:"entrypoint"`
		Args       []string `yaml:"args"`
		WaitFor    []string `yaml:"waitFor"`
	} `yaml:"steps"`
	Images        []string          `yaml:"images"`
	Substitutions map[string]string `yaml:"substitutions"`
	Options       struct {
		DynamicSubstitutions bool `yaml:"dynamicSubstitutions"`
	} `yaml:"options"`
}

const (
	testShortSHA  = "abc1234"
	testCommitSHA = "abc1234def5678abc1234def5678abc1234def56"
)

var substRe = regexp.MustCompile(`\$(\{[A-Z_][A-Z0-9_]*\}|[A-Z_][A-Z0-9_]*)`)

// expand applies Cloud Build's substitutions as a triggered build would, with
// PROJECT_ID standing for Terraform's project_id variable.
func (cb *cloudBuild) expand(t *testing.T, s string) string {
	t.Helper()
	builtin := map[string]string{
		"PROJECT_ID": "{var.project_id}",
		"SHORT_SHA":  testShortSHA,
		"COMMIT_SHA": testCommitSHA,
	}
	const dollar = "\x00"
	s = strings.ReplaceAll(s, "$$", dollar)
	for range 5 { // user substitutions may refer to others
		s = substRe.ReplaceAllStringFunc(s, func(m string) string {
			name := strings.Trim(m[1:], "{}")
			if v, ok := cb.Substitutions[name]; ok {
				return v
			}
			if v, ok := builtin[name]; ok {
				return v
			}
			t.Errorf("cloudbuild.yaml uses $%s, which is neither defined nor built in", name)
			return m
		})
	}
	return strings.ReplaceAll(s, dollar, "$")
}

func loadCloudBuild(t *testing.T) *cloudBuild {
	t.Helper()
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "cloudbuild.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var cb cloudBuild
	dec := yaml.NewDecoder(strings.NewReader(string(raw)))
	if err := dec.Decode(&cb); err != nil {
		t.Fatalf("parse cloudbuild.yaml: %v", err)
	}
	if len(cb.Steps) == 0 {
		t.Fatalf("cloudbuild.yaml has no steps")
	}
	return &cb
}

// deps returns, for every step id, the ids it waits for directly or
// transitively. A step without waitFor waits for every step before it; "-"
// means it starts with the build.
func (cb *cloudBuild) deps(t *testing.T) map[string]map[string]bool {
	t.Helper()
	out := map[string]map[string]bool{}
	var prev []string
	for i, s := range cb.Steps {
		if s.ID == "" {
			t.Fatalf("step %d (%s) has no id", i, s.Name)
		}
		if _, dup := out[s.ID]; dup {
			t.Fatalf("step id %q used twice", s.ID)
		}
		direct := prev
		if s.WaitFor != nil {
			direct = nil
			for _, w := range s.WaitFor {
				if w == "-" {
					continue
				}
				if _, ok := out[w]; !ok {
					t.Fatalf("step %q waits for %q, which is not an earlier step", s.ID, w)
				}
				direct = append(direct, w)
			}
		}
		all := map[string]bool{}
		for _, d := range direct {
			all[d] = true
			for dd := range out[d] {
				all[dd] = true
			}
		}
		out[s.ID] = all
		prev = append(prev, s.ID)
	}
	return out
}

// tfImage is the repository path Terraform gives a Cloud Run service's image,
// without the tag.
func tfImage(t *testing.T, cfg *tfConfig, addr string) string {
	t.Helper()
	container := child(t, child(t, cfg.resource(t, addr), "template"), "containers")
	image := cfg.str(t, container, "image", nil)
	repo, tag, ok := strings.Cut(image, ":")
	if !ok || tag != "{var.image_tag}" {
		t.Fatalf("%s image = %q, want <repository path>:<var.image_tag>", addr, image)
	}
	return repo
}

func TestCloudBuild(t *testing.T) {
	cfg := loadTerraform(t)
	cb := loadCloudBuild(t)
	deps := cb.deps(t)
	vars := cfg.ctx.Variables["var"]

	for sub, tfVar := range map[string]string{"_REGION": "region", "_REPOSITORY": "repository"} {
		got, ok := cb.Substitutions[sub]
		if !ok {
			t.Errorf("substitutions has no %s", sub)
			continue
		}
		if want := vars.GetAttr(tfVar).AsString(); got != want {
			t.Errorf("substitutions.%s = %q, want Terraform's %s default %q", sub, got, tfVar, want)
		}
	}
	if !cb.Options.DynamicSubstitutions {
		t.Errorf("options.dynamicSubstitutions = false, want true (image substitutions refer to others)")
	}

	services := dockerfileServices(t)
	var testStep string
	builds := map[string]string{}  // service -> step id
	pushes := map[string]string{}  // image repository -> step id
	deploys := map[string]string{} // Cloud Run service -> script
	built := map[string]bool{}     // image references built
	for _, s := range cb.Steps {
		script := cb.expand(t, strings.Join(s.Args, "\n"))
		if strings.Contains(script, "go test") {
			testStep = s.ID
		}
		if strings.Contains(s.Name, "docker") && len(s.Args) > 0 && s.Args[0] == "build" {
			m := regexp.MustCompile(`--build-arg[= ]SERVICE=(\w+)`).FindStringSubmatch(script)
			if m == nil {
				t.Errorf("build step %q sets no SERVICE build arg", s.ID)
				continue
			}
			builds[m[1]] = s.ID
			for _, tag := range regexp.MustCompile(`--tag[= ](\S+)`).FindAllStringSubmatch(script, -1) {
				built[tag[1]] = true
			}
		}
		if strings.Contains(s.Name, "docker") && len(s.Args) > 0 && s.Args[0] == "push" {
			pushes[strings.Fields(script)[len(strings.Fields(script))-1]] = s.ID
		}
		for _, m := range regexp.MustCompile(`gcloud run deploy (\S+)`).FindAllStringSubmatch(script, -1) {
			deploys[m[1]] = s.ID + "\n" + script
		}
	}

	if testStep == "" {
		t.Errorf("no step runs go test")
	}
	var buildServices []string
	for svc := range builds {
		buildServices = append(buildServices, svc)
	}
	sort.Strings(buildServices)
	if diff := cmp.Diff(services, buildServices); diff != "" {
		t.Errorf("services built (-Dockerfile's SERVICE values +cloudbuild.yaml):\n%s", diff)
	}
	for _, a := range buildServices {
		if testStep != "" && !deps[builds[a]][testStep] {
			t.Errorf("build of %s does not wait for the tests (%s)", a, testStep)
		}
		for _, b := range buildServices {
			if a != b && deps[builds[a]][builds[b]] {
				t.Errorf("build of %s waits for the build of %s; they must run in parallel", a, b)
			}
		}
	}

	for _, svc := range services {
		addr := "google_cloud_run_v2_service." + svc
		runName := cfg.str(t, cfg.resource(t, addr), "name", nil)
		image := tfImage(t, cfg, addr)
		t.Run(runName, func(t *testing.T) {
			want := image + ":" + testShortSHA
			if !built[want] {
				t.Errorf("no build step tags %s (Terraform's image for %s); built: %v", want, addr, built)
			}
			if !built[image+":"+testCommitSHA] {
				t.Errorf("no build step tags %s:<COMMIT_SHA>", image)
			}
			if !slices.Contains(cb.expandAll(t, cb.Images), want) {
				t.Errorf("images = %v, want it to list %s", cb.expandAll(t, cb.Images), want)
			}
			push, ok := pushes[image]
			if !ok {
				push, ok = pushes[want]
			}
			if !ok {
				t.Fatalf("no step pushes %s", image)
			}
			if !deps[push][builds[svc]] {
				t.Errorf("push %q does not wait for the build %q", push, builds[svc])
			}

			entry, ok := deploys[runName]
			if !ok {
				t.Fatalf("no step runs gcloud run deploy %s", runName)
			}
			id, script, _ := strings.Cut(entry, "\n")
			if !deps[id][push] {
				t.Errorf("deploy %q does not wait for the push %q", id, push)
			}
			for _, want := range []string{
				"--image=" + want,
				"--no-traffic",
				"--tag=c-" + testShortSHA,
				"gcloud run services update-traffic " + runName,
				"--to-latest",
			} {
				if !strings.Contains(script, want) {
					t.Errorf("deploy step %q has no %q:\n%s", id, want, script)
				}
			}
			if i, j := strings.Index(script, "gcloud run deploy"), strings.Index(script, "update-traffic"); i > j {
				t.Errorf("deploy step %q moves traffic before deploying", id)
			}
		})
	}
	for _, img := range cb.expandAll(t, cb.Images) {
		if !built[img] {
			t.Errorf("images lists %s, which no step builds", img)
		}
	}
	for svc := range deploys {
		if !slices.ContainsFunc(services, func(s string) bool { return "segment-"+s == svc }) {
			t.Errorf("cloudbuild.yaml deploys %s, which Terraform does not declare", svc)
		}
	}

	// The test step covers every module of the workspace.
	work := readGoWork(t)
	for _, s := range cb.Steps {
		if s.ID != testStep {
			continue
		}
		script := strings.Join(s.Args, "\n")
		for _, u := range work.Use {
			dir := filepath.Clean(u.Path)
			if !strings.Contains(script, dir) {
				t.Errorf("test step does not mention module %s:\n%s", dir, script)
			}
		}
		if !strings.Contains(script, "go vet") {
			t.Errorf("test step runs no go vet")
		}
	}
}

func (cb *cloudBuild) expandAll(t *testing.T, in []string) []string {
	t.Helper()
	out := make([]string, len(in))
	for i, s := range in {
		out[i] = cb.expand(t, s)
	}
	return out
}

func readGoWork(t *testing.T) *modfile.WorkFile {
	t.Helper()
	path := filepath.Join(repoRoot(t), "go.work")
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	wf, err := modfile.ParseWork(path, raw, nil)
	if err != nil {
		t.Fatalf("parse go.work: %v", err)
	}
	return wf
}
