package report

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"html/template"
	"io"
	"io/fs"
	"regexp"
	"sort"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/yuin/goldmark"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/exporter"
)

// Report is what one run found.
type Report struct {
	Generated time.Time `json:"generated"`
	Servers   int       `json:"servers"`
	Probed    int       `json:"probed_addresses"`
	// Findings are the known issues the snapshot shows.
	Findings []Finding `json:"findings"`
	// Unconfirmed are findings of alerts that need Prometheus's history:
	// addresses that do not answer ping now, which may never have (a
	// security group that drops ICMP, as OpenStack's default one does).
	// They carry no severity and never count as critical.
	Unconfirmed []Finding `json:"unconfirmed"`
	// PolicySilent are addresses of ACTIVE servers that do not answer ping
	// because their security groups do not admit ICMP from the exporter
	// (openstack_vm_icmp_expected 0): never an issue, never alerted on.
	PolicySilent []Finding `json:"policy_silent"`
	// Critical counts the findings of severity critical.
	Critical int `json:"critical"`
}

// PolicySilentNote says what the policy-silent addresses are.
const PolicySilentNote = "Their security groups do not admit ICMP from the exporter: they are not expected to answer, " +
	"and no alert fires for them."

// UnconfirmedNote says why the unconfirmed findings are apart.
const UnconfirmedNote = "Not answering ping now; whether they answered before cannot be told from one snapshot. " +
	"Security groups often drop ICMP (OpenStack's default group does): where the exporter could not read them, " +
	"Prometheus alerts only on addresses that answered before, and the report counts none of these as an issue."

// ExitStatus is the exit status of the report command: 2 when a critical
// issue was found, else 0. Unconfirmed findings never make it 2.
func (r *Report) ExitStatus() int {
	if r.Critical > 0 {
		return 2
	}
	return 0
}

// Collect refreshes the inventory once, runs one probe cycle, and gathers
// the exporter's metrics before and after the cycle.
func Collect(ctx context.Context, svc *exporter.Service) (Snapshot, error) {
	if err := svc.Inventory().Refresh(ctx); err != nil {
		return Snapshot{}, fmt.Errorf("reading the inventory: %w", err)
	}
	before, err := svc.Gatherer().Gather()
	if err != nil {
		return Snapshot{}, err
	}
	beforeAt := time.Now()
	svc.ProbeLoop().Cycle(ctx)
	// The counters need two distinct instants, whatever the cycle took.
	time.Sleep(time.Until(beforeAt.Add(time.Second)))
	after, err := svc.Gatherer().Gather()
	if err != nil {
		return Snapshot{}, err
	}
	return Snapshot{Before: before, After: after, BeforeAt: beforeAt, AfterAt: time.Now()}, nil
}

// Build evaluates the snapshot and attaches each finding's runbook
// mitigation from runbooks (a folder of <AlertName>.md).
func Build(ctx context.Context, snap Snapshot, params alerts.Params, runbooks fs.FS) (*Report, error) {
	findings, err := Evaluate(ctx, snap, params)
	if err != nil {
		return nil, err
	}
	r := &Report{Generated: snap.AfterAt.UTC(), Findings: []Finding{}, Unconfirmed: []Finding{}, PolicySilent: []Finding{}}
	for _, f := range findings {
		switch {
		case f.policySilent:
			r.PolicySilent = append(r.PolicySilent, f)
		case f.Unconfirmed:
			u := unconfirmed(f)
			u.Mitigation = withAdvice(f, section(runbooks, f.Alert, "Mitigation"))
			r.Unconfirmed = append(r.Unconfirmed, u)
		default:
			r.Findings = append(r.Findings, f)
		}
	}
	for _, fam := range snap.After {
		switch fam.GetName() {
		case "openstack_vm_inventory_servers":
			r.Servers = int(fam.GetMetric()[0].GetGauge().GetValue())
		case "openstack_vm_probe_targets":
			r.Probed = int(fam.GetMetric()[0].GetGauge().GetValue())
		}
	}
	for i := range r.Findings {
		f := &r.Findings[i]
		f.Mitigation = withAdvice(*f, section(runbooks, f.Alert, "Mitigation"))
		if f.Severity == "critical" {
			r.Critical++
		}
	}
	return r, nil
}

// withAdvice puts what the port's state and the ICMP expectation say of
// the finding before its runbook's mitigation.
func withAdvice(f Finding, mitigation string) string {
	advice := reachAdvice(f)
	switch {
	case advice == "":
		return mitigation
	case mitigation == "":
		return advice
	}
	return advice + "\n\n" + mitigation
}

// unconfirmed rewrites a finding that needs history: its rule's texts
// assert that the address answered before, which the snapshot cannot show,
// and its severity would count it as a known issue.
func unconfirmed(f Finding) Finding {
	f.Severity = ""
	labels := map[string]string{}
	for k, v := range f.Labels {
		if k != "severity" {
			labels[k] = v
		}
	}
	f.Labels = labels
	switch {
	case labels["address"] != "":
		f.Summary = fmt.Sprintf("Server %s does not answer ping at %s now.", labels["name"], labels["address"])
	case labels["host"] != "":
		f.Summary = fmt.Sprintf("%.0f%% of the probed servers of host %s do not answer ping now.", 100*f.Value, labels["host"])
	}
	f.Description = f.Summary
	f.Notes = []string{UnconfirmedNote}
	return f
}

// section returns the text of a runbook's "## <name>" section.
func section(runbooks fs.FS, alert, name string) string {
	if runbooks == nil {
		return ""
	}
	b, err := fs.ReadFile(runbooks, alert+".md")
	if err != nil {
		return ""
	}
	var out strings.Builder
	in := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "## ") {
			in = strings.TrimSpace(strings.TrimPrefix(line, "## ")) == name
			continue
		}
		if in {
			out.WriteString(line + "\n")
		}
	}
	return strings.TrimSpace(out.String())
}

// Check is one known issue of the catalogue.
type Check struct {
	Alert      string `json:"alert"`
	Severity   string `json:"severity"`
	Detects    string `json:"detects"`
	RunbookURL string `json:"runbook_url"`
}

var catalogueRow = regexp.MustCompile(`^\| \[(\w+)\]\(\w+\.md\) \| [\w/]+ \| (.+) \|$`)

// Catalogue lists the known issues checked, as detek's plan did: the alert
// rules, with the one-line description of the runbooks' index.
func Catalogue(params alerts.Params, runbooks fs.FS) ([]Check, error) {
	groups, err := alerts.Rules(params)
	if err != nil {
		return nil, err
	}
	detects := map[string]string{}
	if runbooks != nil {
		if b, err := fs.ReadFile(runbooks, "README.md"); err == nil {
			for _, line := range strings.Split(string(b), "\n") {
				if m := catalogueRow.FindStringSubmatch(line); m != nil {
					detects[m[1]] = m[2]
				}
			}
		}
	}
	var out []Check
	for _, g := range groups {
		for _, r := range g.Rules {
			if r.Alert == "" || r.Labels["severity"] == "none" {
				continue
			}
			out = append(out, Check{Alert: r.Alert, Severity: r.Labels["severity"], Detects: detects[r.Alert], RunbookURL: r.Annotations["runbook_url"]})
		}
	}
	sort.SliceStable(out, func(i, j int) bool { return severityRank(out[i].Severity) < severityRank(out[j].Severity) })
	return out, nil
}

// WriteTable writes the report for a terminal.
func (r *Report) WriteTable(w io.Writer) error {
	fmt.Fprintf(w, "openstack-vm-exporter report, %s: %d servers, %d probed addresses, %d known issues (%d critical), %d unconfirmed\n\n",
		r.Generated.Format(time.RFC3339), r.Servers, r.Probed, len(r.Findings), r.Critical, len(r.Unconfirmed))
	if len(r.Findings) == 0 {
		fmt.Fprintln(w, "No known issue found.")
		return r.writeUnconfirmed(w)
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SEVERITY\tISSUE\tSERVER\tID\tPROJECT\tHOST\tADDRESS\tSUMMARY")
	for _, f := range r.Findings {
		l := f.Labels
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Severity, f.Alert, oneLine(l["name"]), l["id"], l["project_id"],
			orDash(l["host"]), orDash(l["address"]), oneLine(f.Summary))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, f := range r.Findings {
		if seen[f.Alert] {
			continue
		}
		seen[f.Alert] = true
		fmt.Fprintf(w, "\n== %s (%s)\nRunbook: %s\n", f.Alert, f.Severity, f.RunbookURL)
		for _, n := range f.Notes {
			fmt.Fprintf(w, "Note: %s\n", n)
		}
		// What Neutron says of each server's port and ICMP, per finding.
		for _, g := range r.Findings {
			if g.Alert == f.Alert && (g.Port != nil || g.ICMPExpected != "") {
				fmt.Fprintf(w, "%s %s: %s\n", oneLine(g.Labels["name"]), orDash(addressOf(g)), reachText(g))
			}
		}
		if f.Mitigation != "" {
			fmt.Fprintf(w, "Mitigation:\n%s\n", indent(f.Mitigation))
		}
	}
	return r.writeUnconfirmed(w)
}

// addressOf is the finding's address, from its labels or its reach.
func addressOf(f Finding) string {
	if a := f.Labels["address"]; a != "" {
		return a
	}
	return f.Address
}

// reachText is the port's state and the ICMP expectation on one line.
func reachText(f Finding) string {
	var parts []string
	if p := f.Port; p != nil {
		s := fmt.Sprintf("port %s %s", p.ID, orDash(p.Status))
		if p.VIFType != "" {
			s += " (" + p.VIFType + ")"
		}
		if p.FixedIPs != nil && *p.FixedIPs == 0 {
			s += ", no fixed IP"
		}
		parts = append(parts, s)
	} else if f.ICMPExpected != "" {
		parts = append(parts, "port unknown")
	}
	if f.ICMPExpected != "" {
		parts = append(parts, "ICMP expected "+f.ICMPExpected+" from "+orDash(f.Vantage))
	}
	if len(parts) == 0 {
		return "-"
	}
	return clean(strings.Join(parts, "; "))
}

// writeUnconfirmed writes the unconfirmed findings apart, without severity.
func (r *Report) writeUnconfirmed(w io.Writer) error {
	if len(r.Unconfirmed) == 0 {
		return r.writePolicySilent(w)
	}
	fmt.Fprintf(w, "\n== Unconfirmed (%d): not answering ping now\n%s\n\n", len(r.Unconfirmed), UnconfirmedNote)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "CHECK\tSERVER\tID\tPROJECT\tHOST\tADDRESS\tPORT AND ICMP\tSUMMARY")
	for _, f := range r.Unconfirmed {
		l := f.Labels
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n", f.Alert, orDash(oneLine(l["name"])), orDash(l["id"]), orDash(l["project_id"]),
			orDash(l["host"]), orDash(addressOf(f)), reachText(f), oneLine(f.Summary))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	for _, f := range r.Unconfirmed {
		if a := reachAdvice(f); a != "" {
			fmt.Fprintf(w, "%s %s:\n%s\n", oneLine(f.Labels["name"]), orDash(addressOf(f)), indent(a))
		}
	}
	return r.writePolicySilent(w)
}

// writePolicySilent lists the addresses whose security groups close ICMP.
func (r *Report) writePolicySilent(w io.Writer) error {
	if len(r.PolicySilent) == 0 {
		return nil
	}
	fmt.Fprintf(w, "\n== Not expected to answer (%d)\n%s\n\n", len(r.PolicySilent), PolicySilentNote)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "SERVER\tID\tPROJECT\tHOST\tADDRESS\tPORT AND ICMP\tWHY")
	for _, f := range r.PolicySilent {
		l := f.Labels
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(oneLine(l["name"])), orDash(l["id"]), orDash(l["project_id"]),
			orDash(l["host"]), orDash(l["address"]), reachText(f), oneLine(f.Description))
	}
	return tw.Flush()
}

// WriteJSON writes the report as JSON.
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}

// WriteHTML writes the report as one self-contained HTML page; every value
// is escaped by html/template.
func (r *Report) WriteHTML(w io.Writer) error {
	return htmlPage.Execute(w, struct {
		*Report
		UnconfirmedNote, PolicySilentNote string
	}{r, UnconfirmedNote, PolicySilentNote})
}

// markdown renders a runbook's Markdown as HTML with goldmark's defaults,
// which leave raw HTML out (a runbook's <script> is never rendered: it
// becomes a comment saying so); every text is escaped.
func markdown(src string) template.HTML {
	var b bytes.Buffer
	if err := goldmark.Convert([]byte(src), &b); err != nil {
		return template.HTML("<pre>" + template.HTMLEscapeString(src) + "</pre>")
	}
	return template.HTML(b.String()) // goldmark escaped it; raw HTML is omitted
}

// WriteCatalogue writes the list of checks as a table.
func WriteCatalogue(w io.Writer, checks []Check) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "ISSUE\tSEVERITY\tDETECTS\tRUNBOOK")
	for _, c := range checks {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.Alert, c.Severity, c.Detects, c.RunbookURL)
	}
	return tw.Flush()
}

// oneLine keeps a table row on one line whatever a server's name holds,
// and short.
func oneLine(s string) string {
	s = clean(s)
	if len(s) > 80 {
		s = s[:77] + "..."
	}
	return s
}

// clean keeps s on one line, with no control character.
func clean(s string) string {
	return strings.Map(func(r rune) rune {
		if r == '\n' || r == '\r' || r == '\t' {
			return ' '
		}
		if r < 0x20 || r == 0x7f {
			return '?'
		}
		return r
	}, s)
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func indent(s string) string {
	return "  " + strings.ReplaceAll(s, "\n", "\n  ")
}

var htmlPage = template.Must(template.New("report").Funcs(template.FuncMap{
	"sevclass": func(s string) string { return "sev-" + s },
	"markdown": markdown,
	"advice":   func(f Finding) template.HTML { return markdown(reachAdvice(f)) },
	"reach":    reachText,
	"address":  addressOf,
}).Parse(`<!DOCTYPE html>
<html lang="en">
<head>
<meta charset="utf-8">
<meta name="viewport" content="width=device-width, initial-scale=1">
<title>OpenStack VM known issues — {{.Generated.Format "2006-01-02 15:04 MST"}}</title>
<style>
body { font-family: system-ui, -apple-system, "Segoe UI", sans-serif; margin: 2rem; color: #1d1d1f; background: #fafafa; }
h1 { font-size: 1.5rem; margin-bottom: .2rem; }
.meta { color: #555; margin-bottom: 1.5rem; }
.summary { display: flex; gap: 1rem; margin-bottom: 1.5rem; }
.card { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .8rem 1.2rem; min-width: 8rem; }
.card b { display: block; font-size: 1.6rem; }
table { border-collapse: collapse; width: 100%; background: #fff; margin-bottom: 2rem; }
th, td { text-align: left; padding: .45rem .6rem; border-bottom: 1px solid #eee; vertical-align: top; font-size: .9rem; }
th { background: #f0f0f3; }
.sev-critical { color: #fff; background: #c62828; }
.sev-warning { color: #1d1d1f; background: #ffca28; }
.sev-info { color: #fff; background: #1e88e5; }
.badge { border-radius: 4px; padding: .1rem .4rem; font-size: .8rem; white-space: nowrap; }
details { background: #fff; border: 1px solid #ddd; border-radius: 8px; padding: .6rem 1rem; margin-bottom: .8rem; }
summary { cursor: pointer; font-weight: 600; }
pre { white-space: pre-wrap; background: #f5f5f7; padding: .8rem; border-radius: 6px; font-size: .85rem; }
.md p, .md li { font-size: .9rem; }
.reach { color: #333; font-size: .85rem; }
.note { color: #6a4f00; font-size: .85rem; }
code { font-size: .85rem; }
</style>
</head>
<body>
<h1>OpenStack VM known issues</h1>
<div class="meta">Generated {{.Generated.Format "2006-01-02 15:04:05 MST"}} by openstack-vm-exporter report</div>
<div class="summary">
  <div class="card"><b>{{.Servers}}</b>servers</div>
  <div class="card"><b>{{.Probed}}</b>probed addresses</div>
  <div class="card"><b>{{len .Findings}}</b>known issues</div>
  <div class="card"><b>{{.Critical}}</b>critical</div>
  <div class="card"><b>{{len .Unconfirmed}}</b>unconfirmed</div>
</div>
{{if .Findings}}
<table>
<thead><tr><th>Severity</th><th>Issue</th><th>Server</th><th>ID</th><th>Project</th><th>Host</th><th>Address</th><th>What</th></tr></thead>
<tbody>
{{range .Findings}}<tr>
<td><span class="badge {{sevclass .Severity}}">{{.Severity}}</span></td>
<td><a href="{{.RunbookURL}}">{{.Alert}}</a></td>
<td>{{index .Labels "name"}}</td><td><code>{{index .Labels "id"}}</code></td><td>{{index .Labels "project_id"}}</td>
<td>{{index .Labels "host"}}</td><td>{{address .}}</td>
<td>{{.Description}}{{if or .Port .ICMPExpected}}<div class="reach">{{reach .}}</div>{{end}}{{range .Notes}}<div class="note">{{.}}</div>{{end}}</td>
</tr>
{{end}}</tbody>
</table>
<h2>How to fix</h2>
{{range $i, $f := .Findings}}{{if $f.Mitigation}}
<details{{if eq $i 0}} open{{end}}><summary>{{$f.Alert}} — {{with index $f.Labels "name"}}{{.}}{{else}}{{index $f.Labels "host"}}{{end}}</summary>
<p><a href="{{$f.RunbookURL}}">Runbook</a></p>
<div class="md">{{markdown $f.Mitigation}}</div>
</details>{{end}}{{end}}
{{else}}
<p>No known issue found.</p>
{{end}}
{{if .Unconfirmed}}
<h2 id="unconfirmed">Unconfirmed: not answering ping now</h2>
<p class="note">{{.UnconfirmedNote}}</p>
<table class="unconfirmed">
<thead><tr><th>Check</th><th>Server</th><th>ID</th><th>Project</th><th>Host</th><th>Address</th><th>Port and ICMP</th><th>What</th></tr></thead>
<tbody>
{{range .Unconfirmed}}<tr>
<td><a href="{{.RunbookURL}}">{{.Alert}}</a></td>
<td>{{index .Labels "name"}}</td><td><code>{{index .Labels "id"}}</code></td><td>{{index .Labels "project_id"}}</td>
<td>{{index .Labels "host"}}</td><td>{{address .}}</td><td>{{reach .}}</td>
<td>{{.Summary}}<div class="md">{{advice .}}</div></td>
</tr>
{{end}}</tbody>
</table>
{{end}}
{{if .PolicySilent}}
<h2 id="policy-silent">Not expected to answer</h2>
<p class="note">{{.PolicySilentNote}}</p>
<table class="policy-silent">
<thead><tr><th>Server</th><th>ID</th><th>Project</th><th>Host</th><th>Address</th><th>Port and ICMP</th><th>Why</th></tr></thead>
<tbody>
{{range .PolicySilent}}<tr>
<td>{{index .Labels "name"}}</td><td><code>{{index .Labels "id"}}</code></td><td>{{index .Labels "project_id"}}</td>
<td>{{index .Labels "host"}}</td><td>{{index .Labels "address"}}</td><td>{{reach .}}</td>
<td><div class="md">{{markdown .Description}}</div></td>
</tr>
{{end}}</tbody>
</table>
{{end}}
</body>
</html>
`))
