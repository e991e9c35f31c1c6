package report

import (
	"bytes"
	"encoding/json"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	"golang.org/x/net/html"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
)

// hostileName is a server name that would break every output format.
const hostileName = `<script>alert("x")</script> & "quotes" \ {braces}`

func TestFormats(t *testing.T) {
	r := &Report{Generated: time.Now(), Servers: 3, Probed: 2, Critical: 1, Findings: []Finding{
		{Alert: "OpenStackHostVMsUnreachable", Severity: "critical", Labels: map[string]string{"host": "cmp-1"}, Summary: "Most servers of host cmp-1 stopped answering ping.", RunbookURL: "https://example.invalid/rb.md", Mitigation: "systemctl restart x"},
		{Alert: "OpenStackVMInError", Severity: "warning", Labels: map[string]string{"id": "s1", "name": hostileName + "\nsecond line", "host": "cmp-1"},
			Summary: "Server " + hostileName + " is in ERROR.", Description: "desc " + hostileName, RunbookURL: "https://example.invalid/e.md", Notes: []string{"a note"}},
	}}
	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(table.String(), "\n")
	rows := 0
	for _, l := range lines {
		if strings.HasPrefix(l, "critical ") || strings.HasPrefix(l, "warning ") {
			rows++
		}
	}
	if rows != 2 || !strings.Contains(table.String(), "Mitigation:\n  systemctl restart x") {
		t.Errorf("table:\n%s", table.String())
	}

	var js bytes.Buffer
	if err := r.WriteJSON(&js); err != nil {
		t.Fatal(err)
	}
	var back Report
	if err := json.Unmarshal(js.Bytes(), &back); err != nil || len(back.Findings) != 2 || back.Findings[1].Labels["name"] != hostileName+"\nsecond line" {
		t.Errorf("json round trip: %v %+v", err, back)
	}

	var page bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(page.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	var scripts, rowsHTML int
	var walk func(*html.Node)
	walk = func(n *html.Node) {
		if n.Type == html.ElementNode {
			switch n.Data {
			case "script":
				scripts++
			case "tr":
				rowsHTML++
			}
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c)
		}
	}
	walk(doc)
	if scripts != 0 {
		t.Error("a server name became a <script> element")
	}
	if rowsHTML != 3 { // header and two findings
		t.Errorf("%d table rows", rowsHTML)
	}
	if !strings.Contains(page.String(), "&lt;script&gt;") {
		t.Error("hostile name not escaped")
	}
}

func TestCatalogue(t *testing.T) {
	rb := fstest.MapFS{"README.md": {Data: []byte("| [OpenStackVMInError](OpenStackVMInError.md) | warning | A server in ERROR. |\n")}}
	checks, err := Catalogue(alerts.DefaultParams(), rb)
	if err != nil {
		t.Fatal(err)
	}
	if len(checks) < 16 || checks[0].Severity != "critical" {
		t.Errorf("catalogue %+v", checks)
	}
	for _, c := range checks {
		if c.Alert == "OpenStackVMInError" && c.Detects != "A server in ERROR." {
			t.Errorf("detects %q", c.Detects)
		}
	}
}
