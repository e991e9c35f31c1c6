// Command vulndb writes a govulncheck database (the v1 layout: index/db.json,
// index/modules.json, ID/<id>.json) from the OSV entries of Go's
// vulnerability database module (golang.org/x/vulndb, data/osv), for
// machines that reach the Go module proxy but not vuln.go.dev.
//
//	go run ./scripts/vulndb -osv <module dir>/data/osv -out <dir>
package main

import (
	"compress/gzip"
	"encoding/json"
	"flag"
	"fmt"
	"os"
	"path/filepath"
	"sort"
)

type osv struct {
	ID       string `json:"id"`
	Modified string `json:"modified"`
	Affected []struct {
		Package struct {
			Name string `json:"name"`
		} `json:"package"`
		Ranges []struct {
			Events []map[string]string `json:"events"`
		} `json:"ranges"`
	} `json:"affected"`
}

type moduleVuln struct {
	ID       string `json:"id"`
	Modified string `json:"modified"`
	Fixed    string `json:"fixed,omitempty"`
}

func main() {
	src := flag.String("osv", "", "directory of OSV JSON files")
	out := flag.String("out", "", "database directory to write")
	flag.Parse()
	files, err := filepath.Glob(filepath.Join(*src, "*.json"))
	if err != nil || len(files) == 0 {
		fail(fmt.Errorf("no OSV files in %q: %v", *src, err))
	}
	must(os.MkdirAll(filepath.Join(*out, "index"), 0o755))
	must(os.MkdirAll(filepath.Join(*out, "ID"), 0o755))
	modules := map[string][]moduleVuln{}
	latest := ""
	for _, f := range files {
		b, err := os.ReadFile(f)
		must(err)
		var e osv
		must(json.Unmarshal(b, &e))
		for _, a := range e.Affected {
			fixed := ""
			for _, r := range a.Ranges {
				for _, ev := range r.Events {
					if v, ok := ev["fixed"]; ok {
						fixed = v
					}
				}
			}
			modules[a.Package.Name] = append(modules[a.Package.Name], moduleVuln{ID: e.ID, Modified: e.Modified, Fixed: fixed})
		}
		latest = max(latest, e.Modified)
		write(filepath.Join(*out, "ID", e.ID+".json"), b)
	}
	var index []map[string]any
	paths := make([]string, 0, len(modules))
	for p := range modules {
		paths = append(paths, p)
	}
	sort.Strings(paths)
	for _, p := range paths {
		index = append(index, map[string]any{"path": p, "vulns": modules[p]})
	}
	b, _ := json.Marshal(index)
	write(filepath.Join(*out, "index", "modules.json"), b)
	b, _ = json.Marshal(map[string]string{"modified": latest})
	write(filepath.Join(*out, "index", "db.json"), b)
}

// write writes the file and its .gz beside it, as the database serves both.
func write(path string, b []byte) {
	must(os.WriteFile(path, b, 0o644))
	f, err := os.Create(path + ".gz")
	must(err)
	gz := gzip.NewWriter(f)
	_, err = gz.Write(b)
	must(err)
	must(gz.Close())
	must(f.Close())
}

func must(err error) {
	if err != nil {
		fail(err)
	}
}

func fail(err error) {
	fmt.Fprintln(os.Stderr, "vulndb:", err)
	os.Exit(1)
}
