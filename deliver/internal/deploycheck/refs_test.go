package deploycheck

import (
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

// The repository carries its own reference (docs/api.md): code and docs
// point into the repository, never at a file outside it, and every file,
// directory and Markdown anchor they name exists.

// refRoots are the top-level directories a repository path starts with.
var refRoots = map[string]bool{
	".ci": true, "deliver": true, "docs": true, "infra": true,
	"ingest": true, "scripts": true, "shared": true,
}

// refFileExts are the files whose text is checked.
var refFileExts = map[string]bool{
	".go": true, ".md": true, ".sh": true, ".tf": true, ".yaml": true,
	".tftpl": true, ".lua": true, ".example": true,
}

// refSkipDirs hold generated, fetched or fixture files.
var refSkipDirs = map[string]bool{
	".git": true, ".run": true, "bin": true, "node_modules": true,
	".terraform": true, "testdata": true,
}

var (
	// pathToken is a run of path characters with at least one slash.
	pathToken = regexp.MustCompile(`[A-Za-z0-9_.\-/]*[A-Za-z0-9_.\-]/[A-Za-z0-9_.\-/]*`)
	// mdLink is the target of a Markdown link.
	mdLink = regexp.MustCompile(`\]\(([^)\s]+)\)`)
	// outsideRef is a citation of a document that is not in the repository:
	// the external contract the project was built from.
	outsideRef = regexp.MustCompile(`(?i)contract\.md|contract\s*(§|section\s*\d)`)
	// heading is a Markdown heading line.
	heading = regexp.MustCompile(`(?m)^#{1,6}\s+(.+?)\s*$`)
)

func TestReferencesResolve(t *testing.T) {
	root := repoRoot(t)
	self, err := filepath.Abs("refs_test.go")
	if err != nil {
		t.Fatal(err)
	}
	checked := 0
	err = filepath.WalkDir(root, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if d.IsDir() {
			if refSkipDirs[d.Name()] && path != root {
				return filepath.SkipDir
			}
			return nil
		}
		if !refFileExts[filepath.Ext(path)] && d.Name() != "Makefile" && d.Name() != "Dockerfile" && filepath.Base(filepath.Dir(path)) != ".ci" {
			return nil
		}
		if path == self {
			return nil
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(root, path)
		for _, p := range brokenRefs(root, rel, string(data)) {
			t.Errorf("%s: %s", rel, p)
		}
		checked++
		return nil
	})
	if err != nil {
		t.Fatalf("walk %s: %v", root, err)
	}
	if checked < 50 {
		t.Fatalf("checked %d files; the walk missed the repository", checked)
	}
}

// brokenRefs lists the problems with the references in one file, rel being
// its path from root.
func brokenRefs(root, rel, text string) []string {
	var probs []string
	lines := strings.Split(text, "\n")
	for i, line := range lines {
		at := func(format string, args ...any) string {
			return fmt.Sprintf("line %d: ", i+1) + fmt.Sprintf(format, args...)
		}
		if m := outsideRef.FindString(line); m != "" {
			probs = append(probs, at("cites %q, which is not in the repository: cite docs/api.md", m))
		}
		for _, loc := range pathToken.FindAllStringIndex(line, -1) {
			tok := line[loc[0]:loc[1]]
			if loc[0] > 0 && strings.ContainsRune(":~$@{", rune(line[loc[0]-1])) {
				continue // a URL's host, a home path, a variable, a module version
			}
			p, ok := repoPath(tok)
			if !ok {
				continue
			}
			if _, err := os.Stat(filepath.Join(root, filepath.FromSlash(p))); err != nil {
				if strings.Count(p, "/") == 1 && !strings.Contains(filepath.Base(p), ".") {
					continue // "deliver/p" in a sed range: two bare names name a directory only when it exists
				}
				probs = append(probs, at("%s does not exist", p))
			}
		}
		if filepath.Ext(rel) != ".md" {
			continue
		}
		for _, m := range mdLink.FindAllStringSubmatch(line, -1) {
			if msg := checkLink(root, rel, m[1], text); msg != "" {
				probs = append(probs, at("%s", msg))
			}
		}
	}
	return probs
}

// repoPath returns tok as a path from the repository root when it names
// one: its first element is one of refRoots and it is not a pattern.
func repoPath(tok string) (string, bool) {
	tok = strings.TrimPrefix(tok, "./")
	tok = strings.TrimSuffix(tok, "/...")
	tok = strings.TrimRight(tok, ".,;:")
	tok = strings.TrimSuffix(tok, "/")
	first, _, ok := strings.Cut(tok, "/")
	if !ok || !refRoots[first] || strings.Contains(tok, "...") || generated[tok] {
		return "", false
	}
	return tok, true
}

// generated are paths the docs name that a user or a tool creates; they are
// ignored by git.
var generated = map[string]bool{
	"infra/terraform.tfvars":  true,
	"infra/terraform.tfstate": true,
	"infra/.terraform":        true,
	// written by deliver/cmd/keys (infra/README.md#api-key-keyset)
	"infra/api-key-public-keyset.json": true,
}

// checkLink checks a Markdown link target of the file rel, whose text is
// self: a local file must exist and an anchor must name a heading.
func checkLink(root, rel, target, self string) string {
	if strings.Contains(target, "://") || strings.HasPrefix(target, "mailto:") {
		return ""
	}
	file, anchor, _ := strings.Cut(target, "#")
	text := self
	if file != "" {
		p := filepath.Join(root, filepath.Dir(rel), filepath.FromSlash(file))
		if !strings.HasPrefix(p, root+string(filepath.Separator)) {
			return "" // outside the repository, on purpose (../shared/tools)
		}
		data, err := os.ReadFile(p)
		if err != nil {
			if fi, serr := os.Stat(p); serr == nil && fi.IsDir() {
				return ""
			}
			return "link " + target + ": no such file"
		}
		text = string(data)
	}
	if anchor == "" || !strings.HasSuffix(strings.ToLower(file+".md"), ".md") {
		return ""
	}
	for _, h := range heading.FindAllStringSubmatch(text, -1) {
		if slug(h[1]) == anchor {
			return ""
		}
	}
	return "link " + target + ": no such heading"
}

// slug is GitHub's anchor for a heading: lower case, punctuation dropped,
// spaces as hyphens.
func slug(h string) string {
	var b strings.Builder
	for _, r := range strings.ToLower(h) {
		switch {
		case r == ' ':
			b.WriteRune('-')
		case r == '-' || r == '_' || r >= 'a' && r <= 'z' || r >= '0' && r <= '9' || r > 0x7f:
			b.WriteRune(r)
		}
	}
	return b.String()
}

func TestBrokenRefsFindsProblems(t *testing.T) {
	root := repoRoot(t)
	tests := []struct {
		name, rel, text string
		want            int
	}{
		{"existing file", "x.go", "// see deliver/internal/deploycheck/doc.go and ./ingest/cmd/...", 0},
		{"missing file", "x.go", "// see deliver/internal/nosuch/file.go.", 1},
		{"import path", "x.go", `import "github.com/startdeliver/segment-destination/shared/nosuch"`, 0},
		{"outside contract", "x.go", "// as contract §2 says", 1},
		{"outside contract file", "x.md", "see contract.md", 1},
		{"link to a heading", "README.md", "[api](docs/api.md#5-firestore)", 0},
		{"link to no heading", "README.md", "[api](docs/api.md#no-such-heading)", 1},
		{"link to no file", "docs/x.md", "[b](nosuch.md)", 1},
		{"link outside the repository", "README.md", "[v](../shared/tools/x/validate.sh)", 0},
		{"anchor in the same file", "docs/x.md", "# Top\n[t](#top)", 0},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := brokenRefs(root, tt.rel, tt.text); len(got) != tt.want {
				t.Errorf("brokenRefs(%q) = %q, want %d problems", tt.text, got, tt.want)
			}
		})
	}
}
