package dashboards

import (
	"embed"
	"encoding/json"
	"fmt"
	"path"
	"regexp"
	"sort"
	"strings"

	"github.com/prometheus/prometheus/promql/parser"
)

//go:embed *.json
var files embed.FS

// Dashboard is a decoded dashboard file.
type Dashboard struct {
	File string
	JSON map[string]any
}

// Load decodes every bundled dashboard.
func Load() ([]Dashboard, error) {
	entries, err := files.ReadDir(".")
	if err != nil {
		return nil, err
	}
	var out []Dashboard
	for _, e := range entries {
		b, err := files.ReadFile(e.Name())
		if err != nil {
			return nil, err
		}
		var d map[string]any
		if err := json.Unmarshal(b, &d); err != nil {
			return nil, fmt.Errorf("%s: %w", e.Name(), err)
		}
		out = append(out, Dashboard{File: path.Base(e.Name()), JSON: d})
	}
	return out, nil
}

// Query is one PromQL expression of a dashboard, with where it stands.
type Query struct {
	Where string // "panel 3 \"ERROR\" target A", "variable host", "annotation"
	Expr  string
}

// Panels returns every panel, those nested in rows included.
func (d Dashboard) Panels() []map[string]any {
	var out []map[string]any
	var walk func(list any)
	walk = func(list any) {
		items, _ := list.([]any)
		for _, it := range items {
			p, ok := it.(map[string]any)
			if !ok {
				continue
			}
			out = append(out, p)
			walk(p["panels"])
		}
	}
	walk(d.JSON["panels"])
	return out
}

// Queries lists the dashboard's PromQL with Grafana's variables replaced by
// the values given (and built-in intervals by fixed durations), ready to run
// against a Prometheus.
func (d Dashboard) Queries(vars map[string]string) []Query {
	var out []Query
	for _, p := range d.Panels() {
		targets, _ := p["targets"].([]any)
		for _, t := range targets {
			tm, _ := t.(map[string]any)
			if expr, _ := tm["expr"].(string); expr != "" {
				out = append(out, Query{Where: fmt.Sprintf("%s panel %v %q target %v", d.File, p["id"], p["title"], tm["refId"]), Expr: expand(expr, vars)})
			}
		}
	}
	templating, _ := d.JSON["templating"].(map[string]any)
	list, _ := templating["list"].([]any)
	for _, v := range list {
		vm, _ := v.(map[string]any)
		if vm["type"] != "query" {
			continue
		}
		q, _ := vm["query"].(map[string]any)
		if expr := variableQueryExpr(fmt.Sprint(q["query"])); expr != "" {
			out = append(out, Query{Where: fmt.Sprintf("%s variable %v", d.File, vm["name"]), Expr: expand(expr, vars)})
		}
	}
	annotations, _ := d.JSON["annotations"].(map[string]any)
	alist, _ := annotations["list"].([]any)
	for _, a := range alist {
		am, _ := a.(map[string]any)
		if expr, _ := am["expr"].(string); expr != "" {
			out = append(out, Query{Where: fmt.Sprintf("%s annotation %v", d.File, am["name"]), Expr: expand(expr, vars)})
		}
	}
	return out
}

var (
	labelValuesRE = regexp.MustCompile(`^label_values\((.*),\s*[a-zA-Z_][a-zA-Z0-9_]*\)$`)
	queryResultRE = regexp.MustCompile(`^query_result\((.*)\)$`)
	variableRE    = regexp.MustCompile(`\$\{?([a-zA-Z_][a-zA-Z0-9_]*)\}?`)
)

// variableQueryExpr extracts the PromQL of a Grafana variable query.
func variableQueryExpr(q string) string {
	if m := labelValuesRE.FindStringSubmatch(q); m != nil {
		return m[1]
	}
	if m := queryResultRE.FindStringSubmatch(q); m != nil {
		return m[1]
	}
	return ""
}

// expand replaces $var and ${var} by vars[var]; Grafana's interval variables
// get fixed durations. Unknown variables are left as they are, so that a
// parse error shows them.
func expand(expr string, vars map[string]string) string {
	builtin := map[string]string{"__rate_interval": "2m", "__interval": "1m", "__range": "1h", "__range_s": "3600"}
	return variableRE.ReplaceAllStringFunc(expr, func(m string) string {
		name := strings.Trim(m, "${}")
		if v, ok := vars[name]; ok {
			return v
		}
		if v, ok := builtin[name]; ok {
			return v
		}
		return m
	})
}

// Fallback splits a query of the form `expr or on () (0 * base)`, which
// shows 0 rather than nothing when expr finds nothing while base does: a
// test that only asks the whole query for data would learn nothing about
// expr. ok is false for a query of another form.
func Fallback(query string) (expr, base string, ok bool) {
	e, err := parser.NewParser(parser.Options{}).ParseExpr(query)
	if err != nil {
		return "", "", false
	}
	or, isBin := e.(*parser.BinaryExpr)
	if !isBin || or.Op != parser.LOR || or.VectorMatching == nil || !or.VectorMatching.On || len(or.VectorMatching.MatchingLabels) != 0 {
		return "", "", false
	}
	rhs := or.RHS
	for {
		p, isParen := rhs.(*parser.ParenExpr)
		if !isParen {
			break
		}
		rhs = p.Expr
	}
	mul, isBin := rhs.(*parser.BinaryExpr)
	if !isBin || mul.Op != parser.MUL {
		return "", "", false
	}
	if n, isNum := mul.LHS.(*parser.NumberLiteral); !isNum || n.Val != 0 {
		return "", "", false
	}
	return or.LHS.String(), mul.RHS.String(), true
}

// Variables lists the names of a dashboard's template variables.
func (d Dashboard) Variables() []string {
	templating, _ := d.JSON["templating"].(map[string]any)
	list, _ := templating["list"].([]any)
	var names []string
	for _, v := range list {
		vm, _ := v.(map[string]any)
		names = append(names, fmt.Sprint(vm["name"]))
	}
	sort.Strings(names)
	return names
}
