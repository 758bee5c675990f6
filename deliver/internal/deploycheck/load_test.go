package deploycheck

import (
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"

	"github.com/hashicorp/hcl/v2"
	"github.com/hashicorp/hcl/v2/hclparse"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
	"github.com/zclconf/go-cty/cty/function"
	"github.com/zclconf/go-cty/cty/function/stdlib"
)

// repoRoot is the directory holding go.work, found upwards from the test's
// working directory.
func repoRoot(t *testing.T) string {
	t.Helper()
	dir, err := os.Getwd()
	if err != nil {
		t.Fatalf("getwd: %v", err)
	}
	for {
		if _, err := os.Stat(filepath.Join(dir, "go.work")); err == nil {
			return dir
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			t.Fatalf("no go.work above the test's directory")
		}
		dir = parent
	}
}

// placeholderAttrs are the attributes a resource or data source answers with
// a placeholder such as "{google_service_account.ingest.email}".
var placeholderAttrs = []string{"email", "name", "id", "uri", "member", "number", "project"}

// tfConfig is the Terraform in infra/, parsed, with an evaluation context of
// variable defaults, locals and placeholders for resource attributes.
type tfConfig struct {
	resources map[string]*hclsyntax.Block // by "type.name"
	ctx       *hcl.EvalContext
}

func loadTerraform(t *testing.T) *tfConfig {
	t.Helper()
	dir := filepath.Join(repoRoot(t), "infra")
	paths, err := filepath.Glob(filepath.Join(dir, "*.tf"))
	if err != nil || len(paths) == 0 {
		t.Fatalf("no .tf files in %s (err %v)", dir, err)
	}
	parser := hclparse.NewParser()
	cfg := &tfConfig{resources: map[string]*hclsyntax.Block{}}
	vars := map[string]cty.Value{}
	locals := map[string]hcl.Expression{}
	resourceTypes := map[string]map[string]cty.Value{}
	dataTypes := map[string]map[string]cty.Value{}

	for _, p := range paths {
		f, diags := parser.ParseHCLFile(p)
		if diags.HasErrors() {
			t.Fatalf("parse %s: %v", p, diags)
		}
		body := f.Body.(*hclsyntax.Body)
		for _, b := range body.Blocks {
			switch b.Type {
			case "resource", "data":
				typ, name := b.Labels[0], b.Labels[1]
				prefix := typ + "." + name
				target := resourceTypes
				if b.Type == "data" {
					prefix = "data." + prefix
					target = dataTypes
				} else {
					if _, dup := cfg.resources[prefix]; dup {
						t.Fatalf("resource %s declared twice", prefix)
					}
					cfg.resources[prefix] = b
				}
				if target[typ] == nil {
					target[typ] = map[string]cty.Value{}
				}
				target[typ][name] = placeholderObject(prefix)
			case "variable":
				name := b.Labels[0]
				if def, ok := b.Body.Attributes["default"]; ok {
					v, diags := def.Expr.Value(nil)
					if diags.HasErrors() {
						t.Fatalf("variable %s default: %v", name, diags)
					}
					vars[name] = v
				} else {
					vars[name] = cty.StringVal("{var." + name + "}")
				}
			case "locals":
				for name, attr := range b.Body.Attributes {
					locals[name] = attr.Expr
				}
			}
		}
	}

	ctx := &hcl.EvalContext{
		Variables: map[string]cty.Value{
			"var":  cty.ObjectVal(vars),
			"path": cty.ObjectVal(map[string]cty.Value{"module": cty.StringVal(dir)}),
		},
		Functions: terraformFunctions(),
	}
	for typ, byName := range resourceTypes {
		ctx.Variables[typ] = cty.ObjectVal(byName)
	}
	data := map[string]cty.Value{}
	for typ, byName := range dataTypes {
		data[typ] = cty.ObjectVal(byName)
	}
	ctx.Variables["data"] = cty.ObjectVal(data)

	// Locals may refer to each other: evaluate in rounds until none is left
	// that can be evaluated; the rest stay unknown.
	resolved := map[string]cty.Value{}
	for round := 0; round <= len(locals); round++ {
		progress := false
		ctx.Variables["local"] = localsObject(locals, resolved)
		for name, expr := range locals {
			if _, ok := resolved[name]; ok {
				continue
			}
			v, diags := expr.Value(ctx)
			if diags.HasErrors() || !v.IsWhollyKnown() {
				continue
			}
			resolved[name] = v
			progress = true
		}
		if !progress {
			break
		}
	}
	ctx.Variables["local"] = localsObject(locals, resolved)
	cfg.ctx = ctx
	return cfg
}

func placeholderObject(prefix string) cty.Value {
	attrs := map[string]cty.Value{}
	for _, a := range placeholderAttrs {
		attrs[a] = cty.StringVal("{" + prefix + "." + a + "}")
	}
	return cty.ObjectVal(attrs)
}

func localsObject(all map[string]hcl.Expression, resolved map[string]cty.Value) cty.Value {
	obj := map[string]cty.Value{}
	for name := range all {
		if v, ok := resolved[name]; ok {
			obj[name] = v
		} else {
			obj[name] = cty.DynamicVal
		}
	}
	return cty.ObjectVal(obj)
}

// terraformFunctions are the Terraform functions infra/ uses, where cty has
// them; templatefile is left out (the dashboard template has its own test).
func terraformFunctions() map[string]function.Function {
	return map[string]function.Function{
		"max":        stdlib.MaxFunc,
		"merge":      stdlib.MergeFunc,
		"contains":   stdlib.ContainsFunc,
		"setproduct": stdlib.SetProductFunc,
		"toset": function.New(&function.Spec{
			Params: []function.Parameter{{Name: "v", Type: cty.DynamicPseudoType}},
			Type:   function.StaticReturnType(cty.Set(cty.String)),
			Impl: func(args []cty.Value, _ cty.Type) (cty.Value, error) {
				var elems []cty.Value
				for it := args[0].ElementIterator(); it.Next(); {
					_, v := it.Element()
					elems = append(elems, v)
				}
				if len(elems) == 0 {
					return cty.SetValEmpty(cty.String), nil
				}
				return cty.SetVal(elems), nil
			},
		}),
	}
}

// resource returns the resource block "type.name" or fails the test.
func (c *tfConfig) resource(t *testing.T, addr string) *hclsyntax.Block {
	t.Helper()
	b, ok := c.resources[addr]
	if !ok {
		t.Fatalf("infra declares no resource %s", addr)
	}
	return b
}

// ofType returns the addresses of every resource of one type, sorted.
func (c *tfConfig) ofType(typ string) []string {
	var out []string
	for addr := range c.resources {
		if strings.HasPrefix(addr, typ+".") {
			out = append(out, addr)
		}
	}
	sort.Strings(out)
	return out
}

// eval evaluates an expression with the config's context, plus extra
// variables such as each or an iterator.
func (c *tfConfig) eval(expr hcl.Expression, extra map[string]cty.Value) (cty.Value, error) {
	ctx := c.ctx
	if len(extra) > 0 {
		ctx = c.ctx.NewChild()
		ctx.Variables = extra
	}
	v, diags := expr.Value(ctx)
	if diags.HasErrors() {
		return cty.NilVal, diags
	}
	return v, nil
}

// attr evaluates attribute name of a block body.
func (c *tfConfig) attr(t *testing.T, b *hclsyntax.Block, name string, extra map[string]cty.Value) cty.Value {
	t.Helper()
	a, ok := b.Body.Attributes[name]
	if !ok {
		t.Fatalf("%s: no attribute %q", blockName(b), name)
	}
	v, err := c.eval(a.Expr, extra)
	if err != nil {
		t.Fatalf("%s.%s: %v", blockName(b), name, err)
	}
	return v
}

// str evaluates attribute name to a known string.
func (c *tfConfig) str(t *testing.T, b *hclsyntax.Block, name string, extra map[string]cty.Value) string {
	t.Helper()
	v := c.attr(t, b, name, extra)
	if !v.IsWhollyKnown() || v.IsNull() || v.Type() != cty.String {
		t.Fatalf("%s.%s = %#v, want a known string", blockName(b), name, v)
	}
	return v.AsString()
}

// num evaluates attribute name to a known number.
func (c *tfConfig) num(t *testing.T, b *hclsyntax.Block, name string) int64 {
	t.Helper()
	v := c.attr(t, b, name, nil)
	if !v.IsWhollyKnown() || v.IsNull() || v.Type() != cty.Number {
		t.Fatalf("%s.%s = %#v, want a known number", blockName(b), name, v)
	}
	n, _ := v.AsBigFloat().Int64()
	return n
}

// child returns the only nested block of a type, or fails.
func child(t *testing.T, b *hclsyntax.Block, typ string) *hclsyntax.Block {
	t.Helper()
	var found []*hclsyntax.Block
	for _, c := range b.Body.Blocks {
		if c.Type == typ {
			found = append(found, c)
		}
	}
	if len(found) != 1 {
		t.Fatalf("%s: %d %q blocks, want 1", blockName(b), len(found), typ)
	}
	return found[0]
}

// dynamicBlock returns the dynamic block generating blocks of type typ.
func dynamicBlock(t *testing.T, b *hclsyntax.Block, typ string) *hclsyntax.Block {
	t.Helper()
	for _, c := range b.Body.Blocks {
		if c.Type == "dynamic" && len(c.Labels) == 1 && c.Labels[0] == typ {
			return c
		}
	}
	t.Fatalf("%s: no dynamic %q block", blockName(b), typ)
	return nil
}

func blockName(b *hclsyntax.Block) string {
	return strings.Join(append([]string{b.Type}, b.Labels...), ".")
}

// traversals renders each element of a list expression of references, such
// as ignore_changes, as written: "template[0].containers[0].image".
func traversals(t *testing.T, expr hcl.Expression) []string {
	t.Helper()
	elems, diags := hcl.ExprList(expr)
	if diags.HasErrors() {
		t.Fatalf("not a list: %v", diags)
	}
	var out []string
	for _, e := range elems {
		tr, diags := hcl.AbsTraversalForExpr(e)
		if diags.HasErrors() {
			t.Fatalf("not a reference: %v", diags)
		}
		var sb strings.Builder
		for i, step := range tr {
			switch s := step.(type) {
			case hcl.TraverseRoot:
				sb.WriteString(s.Name)
			case hcl.TraverseAttr:
				sb.WriteString("." + s.Name)
			case hcl.TraverseIndex:
				sb.WriteString("[" + s.Key.AsBigFloat().String() + "]")
			default:
				sb.WriteString(fmt.Sprintf("<step %d>", i))
			}
		}
		out = append(out, sb.String())
	}
	return out
}

// instances expands a resource's count or for_each into the extra variables
// (each) of every instance; a resource without either has one instance.
func (c *tfConfig) instances(t *testing.T, b *hclsyntax.Block) []map[string]cty.Value {
	t.Helper()
	fe, ok := b.Body.Attributes["for_each"]
	if !ok {
		return []map[string]cty.Value{nil}
	}
	v, err := c.eval(fe.Expr, nil)
	if err != nil || !v.IsWhollyKnown() {
		t.Fatalf("%s: for_each cannot be evaluated: %v", blockName(b), err)
	}
	var out []map[string]cty.Value
	for it := v.ElementIterator(); it.Next(); {
		k, val := it.Element()
		if v.Type().IsSetType() {
			k = val
		}
		out = append(out, map[string]cty.Value{
			"each": cty.ObjectVal(map[string]cty.Value{"key": k, "value": val}),
		})
	}
	return out
}

// variableBlocks returns every variable block in infra/*.tf.
func (c *tfConfig) variableBlocks(t *testing.T) []*hclsyntax.Block {
	t.Helper()
	paths, _ := filepath.Glob(filepath.Join(repoRoot(t), "infra", "*.tf"))
	var out []*hclsyntax.Block
	for _, p := range paths {
		f, diags := hclparse.NewParser().ParseHCLFile(p)
		if diags.HasErrors() {
			t.Fatalf("parse %s: %v", p, diags)
		}
		for _, b := range f.Body.(*hclsyntax.Body).Blocks {
			if b.Type == "variable" {
				out = append(out, b)
			}
		}
	}
	return out
}
