package report

import (
	"bytes"
	"context"
	"fmt"
	"sort"
	"strings"
	"testing"
	"testing/fstest"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"golang.org/x/net/html"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
)

const (
	reachNet     = "5a1b2c3d-4e5f-4a6b-8c7d-0e1f2a3b4c5d"
	reachVantage = "ovnmeta-" + reachNet
)

// reachExposition is an exporter's exposition for one host whose ports and
// security groups Neutron gave: vm-new (created on a broken path: never
// answered, its groups admit ICMP, its port ACTIVE), vm-down (its port
// DOWN, not answering, groups admit ICMP), vm-closed (groups that do not
// admit ICMP), vm-unknown (groups not known), vm-ok (answers).
func reachExposition(now time.Time) string {
	var b strings.Builder
	for _, name := range []string{"openstack_vm_exporter_time_seconds", "openstack_vm_api_last_success_timestamp_seconds",
		"openstack_vm_api_ports_last_success_timestamp_seconds", "openstack_vm_api_refresh_interval_seconds",
		"openstack_vm_inventory_servers", "openstack_vm_probe_targets", "openstack_vm_status", "openstack_vm_status_since_timestamp_seconds",
		"openstack_vm_icmp_up", "openstack_vm_icmp_expected", "openstack_vm_port_status", "openstack_vm_port_fixed_ips"} {
		fmt.Fprintf(&b, "# TYPE %s gauge\n", name)
	}
	ts := float64(now.Unix())
	fmt.Fprintf(&b, "openstack_vm_exporter_time_seconds %g\n", ts)
	fmt.Fprintf(&b, "openstack_vm_api_last_success_timestamp_seconds %g\n", ts-10)
	fmt.Fprintf(&b, "openstack_vm_api_ports_last_success_timestamp_seconds %g\n", ts-10)
	fmt.Fprintf(&b, "openstack_vm_api_refresh_interval_seconds 60\n")
	fmt.Fprintf(&b, "openstack_vm_inventory_servers 5\nopenstack_vm_probe_targets 5\n")
	vm := func(id, addr, port, status string, up int, expected string) {
		srv := fmt.Sprintf(`id=%q,name=%q,project_id="p1",host="cmp-1"`, id, strings.TrimPrefix(id, "vm-"))
		fmt.Fprintf(&b, "openstack_vm_status{%s,status=\"ACTIVE\",vm_state=\"active\",task_state=\"\",power_state=\"running\"} 1\n", srv)
		fmt.Fprintf(&b, "openstack_vm_status_since_timestamp_seconds{%s} %g\n", srv, ts-3600)
		target := fmt.Sprintf(`%s,network="tenant",address=%q,network_id=%q,vantage=%q`, srv, addr, reachNet, reachVantage)
		fmt.Fprintf(&b, "openstack_vm_icmp_up{%s} %d\n", target, up)
		if expected != "" {
			fmt.Fprintf(&b, "openstack_vm_icmp_expected{%s} %s\n", target, expected)
		}
		fmt.Fprintf(&b, "openstack_vm_port_status{%s,port_id=%q,network_id=%q,status=%q,vif_type=\"ovs\"} 1\n", srv, port, reachNet, status)
		fmt.Fprintf(&b, "openstack_vm_port_fixed_ips{%s,port_id=%q,network_id=%q} 1\n", srv, port, reachNet)
	}
	vm("vm-new", "198.18.9.1", "port-new", "ACTIVE", 0, "1")
	vm("vm-down", "198.18.9.2", "port-down", "DOWN", 0, "1")
	vm("vm-closed", "198.18.9.3", "port-closed", "ACTIVE", 0, "0")
	vm("vm-unknown", "198.18.9.4", "port-unknown", "ACTIVE", 0, "")
	vm("vm-ok", "198.18.9.5", "port-ok", "ACTIVE", 1, "1")
	return b.String()
}

// findingsByAlert lists each alert's findings as id[@address] (or host).
func findingsByAlert(fs []Finding) map[string][]string {
	out := map[string][]string{}
	for _, f := range fs {
		key := f.Labels["id"]
		if key == "" {
			key = f.Labels["host"]
		}
		if a := f.Labels["address"]; a != "" {
			key += "@" + a
		}
		out[f.Alert] = append(out[f.Alert], key)
	}
	for _, v := range out {
		sort.Strings(v)
	}
	return out
}

func parseExposition(t *testing.T, text string) []*dto.MetricFamily {
	t.Helper()
	parser := expfmt.NewTextParser(model.UTF8Validation)
	fams, err := parser.TextToMetricFamilies(strings.NewReader(text))
	if err != nil {
		t.Fatal(err)
	}
	var out []*dto.MetricFamily
	for _, f := range fams {
		out = append(out, f)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].GetName() < out[j].GetName() })
	return out
}

// For a server that does not answer, the report says its port's state and
// whether its security groups admit ICMP, and its mitigation starts from
// them; an expectation confirms the finding without history, and closed
// groups make no finding at all.
func TestReportPortStateAndICMPExpected(t *testing.T) {
	now := time.Now().Truncate(time.Second)
	fams := parseExposition(t, reachExposition(now))
	snap := Snapshot{Before: fams, After: fams, BeforeAt: now.Add(-time.Second), AfterAt: now}
	runbooks := fstest.MapFS{
		"OpenStackVMUnreachable.md":         {Data: []byte("# OpenStackVMUnreachable\n## Mitigation\nHard reboot:\n```\nopenstack server reboot --hard <id>\n```\n")},
		"OpenStackVMPortDownUnreachable.md": {Data: []byte("# OpenStackVMPortDownUnreachable\n## Mitigation\nRestart ovn-controller.\n")},
	}
	r, err := Build(context.Background(), snap, alerts.DefaultParams(), runbooks)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string][]string{
		"OpenStackVMPortDownUnreachable": {"vm-down"},
		"OpenStackVMUnreachable":         {"vm-down@198.18.9.2", "vm-new@198.18.9.1"},
	}
	if got := findingsByAlert(r.Findings); fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("findings\n got %v\nwant %v", got, want)
	}
	// The host-wide alert stays unconfirmed: it counts vm-unknown, which
	// only history could tell.
	wantUnconfirmed := map[string][]string{"OpenStackHostVMsUnreachable": {"cmp-1"}, "OpenStackVMUnreachable": {"vm-unknown@198.18.9.4"}}
	if got := findingsByAlert(r.Unconfirmed); fmt.Sprint(got) != fmt.Sprint(wantUnconfirmed) {
		t.Errorf("unconfirmed %v", got)
	}
	if len(r.PolicySilent) != 1 || r.PolicySilent[0].Labels["id"] != "vm-closed" || r.PolicySilent[0].ICMPExpected != ExpectedNo ||
		!strings.Contains(r.PolicySilent[0].Description, "Its security groups do not admit ICMP from namespace "+reachVantage+": not a fault of the VM.") {
		t.Errorf("policy silent %+v", r.PolicySilent)
	}
	if r.Critical != 1 || r.ExitStatus() != 2 {
		t.Errorf("critical %d, exit status %d", r.Critical, r.ExitStatus())
	}
	for _, f := range r.Findings {
		if f.ICMPExpected != ExpectedYes || f.Vantage != reachVantage || f.Port == nil || f.Port.FixedIPs == nil || *f.Port.FixedIPs != 1 {
			t.Errorf("%s %s: expected %q from %q, port %+v", f.Alert, f.Labels["id"], f.ICMPExpected, f.Vantage, f.Port)
			continue
		}
		switch f.Labels["id"] {
		case "vm-new":
			if f.Port.ID != "port-new" || f.Port.Status != "ACTIVE" ||
				!strings.HasPrefix(f.Mitigation, "Its port is ACTIVE and its security groups admit ICMP from namespace "+reachVantage) ||
				!strings.Contains(f.Mitigation, "openstack server reboot --hard") {
				t.Errorf("vm-new: port %+v, mitigation %q", f.Port, f.Mitigation)
			}
			if f.Notes[len(f.Notes)-1] != ConfirmedNote {
				t.Errorf("vm-new notes %v", f.Notes)
			}
		case "vm-down":
			if f.Port.ID != "port-down" || f.Port.Status != "DOWN" || !strings.HasPrefix(f.Mitigation, "Its port `port-down` is DOWN in Neutron: the port's data path on host cmp-1") {
				t.Errorf("vm-down %s: port %+v, mitigation %q", f.Alert, f.Port, f.Mitigation)
			}
		}
	}
	u := r.Unconfirmed[1]
	if u.ICMPExpected != ExpectedUnknown || u.Port == nil || u.Port.ID != "port-unknown" ||
		!strings.HasPrefix(u.Mitigation, "Whether its security groups admit ICMP from namespace "+reachVantage+" is unknown") {
		t.Errorf("unconfirmed: %+v", u)
	}

	var table bytes.Buffer
	if err := r.WriteTable(&table); err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{
		"new 198.18.9.1: port port-new ACTIVE (ovs); ICMP expected yes from " + reachVantage,
		"port port-unknown ACTIVE (ovs); ICMP expected unknown from " + reachVantage,
		"== Not expected to answer (1)",
	} {
		if !strings.Contains(table.String(), s) {
			t.Errorf("table lacks %q:\n%s", s, table.String())
		}
	}
	var page bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(page.String(), "not a fault of the VM") || !strings.Contains(page.String(), "<code>port-down</code>") {
		t.Errorf("html lacks the port and the expectation:\n%s", page.String())
	}
}

// The runbooks' Markdown is rendered as HTML: a code fence becomes a code
// block, not text with backticks; raw HTML in a runbook is never rendered.
func TestRunbookMarkdownInHTML(t *testing.T) {
	mitigation := "Restart the agent:\n```\nsystemctl restart ovn-controller\n```\n- a **list** item with `code`\n\n<script>alert(\"runbook\")</script>\n\nInline <img src=x onerror=alert(1)> too, and [a link](javascript:alert(1))."
	r := &Report{Generated: time.Now(), Findings: []Finding{
		{Alert: "OpenStackVMPortDown", Severity: "info", Labels: map[string]string{"id": "s1", "name": "n"}, Summary: "s", RunbookURL: "https://example.invalid/rb.md", Mitigation: mitigation},
	}}
	var page bytes.Buffer
	if err := r.WriteHTML(&page); err != nil {
		t.Fatal(err)
	}
	doc, err := html.Parse(bytes.NewReader(page.Bytes()))
	if err != nil {
		t.Fatal(err)
	}
	elems := map[string]int{}
	var codeInPre string
	var walk func(*html.Node, bool)
	walk = func(n *html.Node, inPre bool) {
		if n.Type == html.ElementNode {
			elems[n.Data]++
			for _, a := range n.Attr {
				if strings.HasPrefix(a.Key, "on") || strings.Contains(a.Val, "javascript:") {
					t.Errorf("<%s %s=%q> rendered", n.Data, a.Key, a.Val)
				}
			}
			inPre = inPre || n.Data == "pre"
		}
		if n.Type == html.TextNode && inPre {
			codeInPre += n.Data
		}
		for c := n.FirstChild; c != nil; c = c.NextSibling {
			walk(c, inPre)
		}
	}
	walk(doc, false)
	if elems["script"] != 0 || elems["img"] != 0 {
		t.Errorf("raw HTML of a runbook rendered: %v", elems)
	}
	if elems["pre"] != 1 || !strings.Contains(codeInPre, "systemctl restart ovn-controller") || strings.Contains(page.String(), "```") {
		t.Errorf("code fence not rendered as a code block (%d pre, %q)", elems["pre"], codeInPre)
	}
	if elems["li"] != 1 || elems["strong"] != 1 {
		t.Errorf("Markdown not rendered: %v", elems)
	}
}
