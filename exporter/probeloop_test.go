package exporter

import (
	"bytes"
	"compress/gzip"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/syncbuf"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
)

func TestGzipAccepted(t *testing.T) {
	for header, want := range map[string]bool{
		"":                        false,
		"gzip":                    true,
		"GZIP":                    true,
		"x-gzip":                  true,
		"gzip;q=0.8":              true,
		"gzip; q=0.8":             true,
		"gzip;q=0.05":             true,
		"gzip;q=1":                true,
		"gzip;q=0":                false,
		"gzip;q=0.0":              false,
		"gzip; q=0.000":           false,
		"gzip;Q=0":                false,
		"gzip;q=bogus":            false,
		"identity":                false,
		"deflate, gzip;q=0.5":     true,
		"deflate, br":             false,
		"br;q=1.0, gzip;q=0.8, *": true,
		"*":                       true,
		"*;q=0":                   false,
		"gzip;q=0, *":             false,
		"*;q=0, gzip":             true,
		"identity, *;q=0.1":       true,
		"gzipped":                 false,
	} {
		if got := gzipAccepted(header); got != want {
			t.Errorf("gzipAccepted(%q) = %v, want %v", header, got, want)
		}
	}
}

func fleetOf(servers ...standin.Server) []standin.Server {
	for i := range servers {
		servers[i].VMState, servers[i].PowerState, servers[i].Host = "active", 1, "cmp-1"
	}
	return servers
}

func provider(addrs ...string) []standin.Address {
	var out []standin.Address
	for _, a := range addrs {
		out = append(out, standin.Address{Network: "provider", Addr: a, Type: "fixed"})
	}
	return out
}

// values returns the values of the series of name that have labels.
func values(t *testing.T, f *fixture, name string, labels map[string]string) []float64 {
	t.Helper()
	_, fams := f.scrape(t)
	var out []float64
	for _, m := range find(fams, name, labels) {
		switch {
		case m.GetGauge() != nil:
			out = append(out, m.GetGauge().GetValue())
		case m.GetCounter() != nil:
			out = append(out, m.GetCounter().GetValue())
		case m.GetHistogram() != nil:
			out = append(out, float64(m.GetHistogram().GetSampleCount()))
		}
	}
	return out
}

// An echo request that never left the host (no socket for the family, the
// send refused) is the exporter's fault: the address is not reported down.
func TestUnsentProbesAreNotDown(t *testing.T) {
	f := newFixture(t, fleetOf(standin.Server{ID: "s1", Name: "one", Addresses: provider("198.18.0.1", "2001:2::1")}))
	v4, v6 := netip.MustParseAddr("198.18.0.1"), netip.MustParseAddr("2001:2::1")
	f.engine.answers[v4] = probes.Result{Sent: 3, Received: 3, RTTs: []time.Duration{time.Millisecond, time.Millisecond, time.Millisecond}}
	f.engine.answers[v6] = probes.Result{Sent: 3, Received: 1, RTTs: []time.Duration{time.Millisecond}}
	f.refreshAndProbe(t)
	if got := values(t, f, "openstack_vm_icmp_up", nil); fmt.Sprint(got) != "[1 1]" {
		t.Fatalf("setup: icmp_up %v", got)
	}

	f.engine.answers[v6] = probes.Result{Sent: 0}
	f.refreshAndProbe(t)
	if got := values(t, f, "openstack_vm_icmp_up", map[string]string{"address": "2001:2::1"}); len(got) != 0 {
		t.Errorf("icmp_up of an address no request reached: %v, want none", got)
	}
	if got := values(t, f, "openstack_vm_icmp_up", map[string]string{"address": "198.18.0.1"}); fmt.Sprint(got) != "[1]" {
		t.Errorf("icmp_up of the other address %v", got)
	}
	// Its counters and histogram go on, unchanged.
	for name, want := range map[string]string{
		"openstack_vm_icmp_packets_sent_total": "[3]", "openstack_vm_icmp_packets_received_total": "[1]", "openstack_vm_icmp_rtt_seconds": "[1]",
	} {
		if got := values(t, f, name, map[string]string{"address": "2001:2::1"}); fmt.Sprint(got) != want {
			t.Errorf("%s = %v, want %s", name, got, want)
		}
	}

	// Sent and unanswered is down.
	f.engine.answers[v6] = probes.Result{Sent: 3}
	f.refreshAndProbe(t)
	if got := values(t, f, "openstack_vm_icmp_up", map[string]string{"address": "2001:2::1"}); fmt.Sprint(got) != "[0]" {
		t.Errorf("icmp_up after an unanswered cycle %v, want [0]", got)
	}

	// A new address whose requests cannot be sent gets its counters, no up.
	f.cloud.Update("s1", func(s *standin.Server) { s.Addresses = provider("198.18.0.1", "2001:2::1", "2001:2::2") })
	f.engine.answers[netip.MustParseAddr("2001:2::2")] = probes.Result{Sent: 0}
	f.refreshAndProbe(t)
	if got := values(t, f, "openstack_vm_icmp_up", map[string]string{"address": "2001:2::2"}); len(got) != 0 {
		t.Errorf("icmp_up of a new unsent address %v", got)
	}
	if got := values(t, f, "openstack_vm_icmp_packets_sent_total", map[string]string{"address": "2001:2::2"}); fmt.Sprint(got) != "[0]" {
		t.Errorf("sent counter of a new unsent address %v", got)
	}
}

// A failed engine call is counted and leaves the last completed cycle as it
// was: its timestamp stops advancing, so the probe loop looks stalled.
func TestFailedCycleIsNotRecorded(t *testing.T) {
	f := newFixture(t, fleetOf(
		standin.Server{ID: "s1", Name: "one", Addresses: provider("198.18.0.1")},
		standin.Server{ID: "s2", Name: "two", Addresses: provider("198.18.0.2")},
	))
	f.engine.answers[netip.MustParseAddr("198.18.0.1")] = probes.Result{Sent: 3, Received: 3, RTTs: []time.Duration{1, 1, 1}}
	f.engine.answers[netip.MustParseAddr("198.18.0.2")] = probes.Result{Sent: 3, Received: 3, RTTs: []time.Duration{1, 1, 1}}
	f.refreshAndProbe(t)
	before := resultsOf(f.svc.loop).Health
	generation := resultsOf(f.svc.loop).Generation

	f.engine.answers[netip.MustParseAddr("198.18.0.1")] = probes.Result{Sent: 3}
	f.engine.answers[netip.MustParseAddr("198.18.0.2")] = probes.Result{Sent: 3}
	f.engine.fail = errors.New("socket gone")
	f.refreshAndProbe(t)
	after := resultsOf(f.svc.loop).Health
	if after.Cycles != before.Cycles || !after.LastCycleEnd.Equal(before.LastCycleEnd) || resultsOf(f.svc.loop).Generation != generation {
		t.Errorf("a failed cycle was recorded as completed: %+v, before %+v", after, before)
	}
	if got := values(t, f, "openstack_vm_probe_errors_total", map[string]string{"reason": "cycle"}); fmt.Sprint(got) != "[1]" {
		t.Errorf("failed cycles counted %v, want [1]", got)
	}
	// Neither the half with results nor the other half changed.
	if got := values(t, f, "openstack_vm_icmp_packets_sent_total", nil); fmt.Sprint(got) != "[3 3]" {
		t.Errorf("counters changed by a failed cycle: %v", got)
	}

	f.engine.fail = nil
	f.refreshAndProbe(t)
	if h := resultsOf(f.svc.loop).Health; h.Cycles != before.Cycles+1 {
		t.Errorf("cycles %d after a good cycle, want %d", h.Cycles, before.Cycles+1)
	}
	if got := values(t, f, "openstack_vm_icmp_up", nil); fmt.Sprint(got) != "[0 0]" {
		t.Errorf("icmp_up after a good cycle %v", got)
	}
}

// logLines returns the lines of logs that contain substr.
func logLines(logs *syncbuf.Buffer, substr string) []string {
	var out []string
	for _, line := range strings.Split(logs.String(), "\n") {
		if strings.Contains(line, substr) {
			out = append(out, line)
		}
	}
	return out
}

// An address that two servers hold is not probed: a reply would not say
// which of them answered. An address one server lists twice is.
func TestDuplicateAddresses(t *testing.T) {
	f := newFixture(t, fleetOf(
		standin.Server{ID: "s1", Name: "one", Addresses: []standin.Address{
			{Network: "net-a", Addr: "198.18.0.1", Type: "fixed"}, {Network: "net-b", Addr: "198.18.0.1", Type: "fixed"}}},
		standin.Server{ID: "s2", Name: "two", Addresses: provider("198.18.0.2")},
		standin.Server{ID: "s3", Name: "three", Addresses: append(provider("198.18.0.3"),
			standin.Address{Network: "public", Addr: "198.18.0.2", Type: "floating"})},
		standin.Server{ID: "s4", Name: "four", Addresses: provider("198.18.0.2")},
	))
	var logs syncbuf.Buffer
	f.svc.loop.logger = slog.New(slog.NewTextHandler(&logs, nil))
	for _, a := range []string{"198.18.0.1", "198.18.0.2", "198.18.0.3"} {
		f.engine.answers[netip.MustParseAddr(a)] = probes.Result{Sent: 3, Received: 3, RTTs: []time.Duration{1, 1, 1}}
	}
	f.refreshAndProbe(t)
	f.refreshAndProbe(t)
	for _, probed := range f.engine.probed {
		if probed = slices.SortedFunc(slices.Values(probed), netip.Addr.Compare); fmt.Sprint(probed) != "[198.18.0.1 198.18.0.3]" {
			t.Errorf("probed %v, want the unambiguous addresses once each", probed)
		}
	}
	_, fams := f.scrape(t)
	got := map[string]float64{}
	for _, m := range fams["openstack_vm_icmp_up"].GetMetric() {
		l := metricLabels(m)
		got[l["id"]+"/"+l["network"]+"/"+l["address"]] = m.GetGauge().GetValue()
	}
	if want := "map[s1/net-a/198.18.0.1:1 s1/net-b/198.18.0.1:1 s3/provider/198.18.0.3:1]"; fmt.Sprint(got) != want {
		t.Errorf("icmp_up %v, want %s", got, want)
	}
	for _, name := range []string{"openstack_vm_icmp_packets_sent_total", "openstack_vm_icmp_rtt_seconds"} {
		if m := find(fams, name, map[string]string{"address": "198.18.0.2"}); len(m) != 0 {
			t.Errorf("%s of the ambiguous address: %v", name, m)
		}
	}
	if m := find(fams, "openstack_vm_icmp_packets_sent_total", map[string]string{"id": "s1", "network": "net-b"}); len(m) != 1 || m[0].GetCounter().GetValue() != 6 {
		t.Errorf("sent counter of an address listed twice by one server: %v", m)
	}
	if got := values(t, f, "openstack_vm_probe_duplicate_addresses", nil); fmt.Sprint(got) != "[1]" {
		t.Errorf("duplicate addresses %v, want [1]", got)
	}
	// Logged once, with the servers, not every cycle.
	lines := logLines(&logs, "not probed")
	if len(lines) != 1 || !strings.Contains(lines[0], "198.18.0.2: s2 s3 s4") || !strings.Contains(lines[0], "level=INFO") {
		t.Errorf("ambiguous addresses logged as %q", lines)
	}

	// s3 and s4 let go of it: it is s2's alone, and probed.
	f.cloud.Update("s3", func(s *standin.Server) { s.Addresses = provider("198.18.0.3") })
	f.cloud.Update("s4", func(s *standin.Server) { s.Addresses = nil })
	f.refreshAndProbe(t)
	if got := values(t, f, "openstack_vm_icmp_up", map[string]string{"id": "s2", "address": "198.18.0.2"}); fmt.Sprint(got) != "[1]" {
		t.Errorf("icmp_up of the address once it is one server's: %v", got)
	}
	if got := values(t, f, "openstack_vm_probe_duplicate_addresses", nil); fmt.Sprint(got) != "[0]" {
		t.Errorf("duplicate addresses %v, want [0]", got)
	}
	if n := len(logLines(&logs, "no address is held by more than one server")); n != 1 {
		t.Errorf("end of the ambiguity logged %d times", n)
	}
}

// watchWriter tells when the handler starts writing the per-address
// families: the old writer held the probe loop's lock from there on.
type watchWriter struct {
	http.ResponseWriter
	once    *sync.Once
	reached chan struct{}
}

func (w watchWriter) Write(b []byte) (int, error) {
	if bytes.Contains(b, []byte("openstack_vm_icmp_")) {
		w.once.Do(func() { close(w.reached) })
	}
	return w.ResponseWriter.Write(b)
}

// smallBufferListener gives each accepted connection a small send buffer,
// so that a client that does not read blocks the writer soon.
type smallBufferListener struct{ net.Listener }

func (l smallBufferListener) Accept() (net.Conn, error) {
	c, err := l.Listener.Accept()
	if tc, ok := c.(*net.TCPConn); ok {
		_ = tc.SetWriteBuffer(8 << 10)
	}
	return c, err
}

// A client that asks for /metrics and never reads must block neither the
// probe loop nor the other scrapes.
func TestStalledScrapeBlocksNothing(t *testing.T) {
	// Few servers with many addresses: the per-server families fit in the
	// writer's first buffer, the per-address ones (some 3 MB) are far more
	// than the socket buffers hold.
	const servers, perServer, n = 20, 50, 20 * 50
	fleet := make([]standin.Server, servers)
	for i := range fleet {
		fleet[i] = standin.Server{ID: fmt.Sprintf("s-%04d", i), Name: fmt.Sprintf("vm-%d", i)}
		for j := 0; j < perServer; j++ {
			fleet[i].Addresses = append(fleet[i].Addresses, provider(fmt.Sprintf("198.18.%d.%d", i, j+1))...)
		}
	}
	f := newFixture(t, fleetOf(fleet...))
	f.refreshAndProbe(t)
	cycles := resultsOf(f.svc.loop).Health.Cycles

	handler := f.svc.Handler(promhttp.HandlerOpts{MaxRequestsInFlight: 4})
	reached, stalledDone := make(chan struct{}), make(chan struct{})
	var once sync.Once
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Header.Get("X-Stalled") == "" {
			handler.ServeHTTP(w, r)
			return
		}
		defer close(stalledDone)
		handler.ServeHTTP(watchWriter{ResponseWriter: w, once: &once, reached: reached}, r)
	}))
	srv.Listener = smallBufferListener{srv.Listener}
	srv.Start()
	defer srv.Close()

	dialer := net.Dialer{Control: func(_, _ string, c syscall.RawConn) error {
		return c.Control(func(fd uintptr) { _ = syscall.SetsockoptInt(int(fd), syscall.SOL_SOCKET, syscall.SO_RCVBUF, 4<<10) })
	}}
	conn, err := dialer.Dial("tcp", srv.Listener.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close() // ends the stalled handler's writes
	if _, err := io.WriteString(conn, "GET /metrics HTTP/1.1\r\nHost: exporter\r\nX-Stalled: yes\r\n\r\n"); err != nil {
		t.Fatal(err)
	}
	// Generous deadlines only keep a regression from hanging the suite.
	deadline := time.After(time.Minute)
	select {
	case <-reached:
	case <-stalledDone:
		t.Fatal("setup: the stalled scrape ended before writing the per-address families")
	case <-deadline:
		t.Fatal("setup: the stalled scrape never reached the per-address families")
	}

	cycled := make(chan struct{})
	go func() { defer close(cycled); f.svc.loop.Cycle(context.Background()) }()
	select {
	case <-cycled:
	case <-deadline:
		t.Fatal("a probe cycle waits for a client that does not read")
	}
	if h := resultsOf(f.svc.loop).Health; h.Cycles != cycles+1 {
		t.Errorf("cycles %d, want %d", h.Cycles, cycles+1)
	}

	client := &http.Client{Timeout: time.Minute}
	for _, encoding := range []string{"", "gzip"} {
		req, _ := http.NewRequest(http.MethodGet, srv.URL+"/metrics", nil)
		if encoding != "" {
			req.Header.Set("Accept-Encoding", encoding)
		}
		resp, err := client.Do(req)
		if err != nil {
			t.Fatalf("scrape (encoding %q) while another stalls: %v", encoding, err)
		}
		var body io.Reader = resp.Body
		if encoding == "gzip" {
			if body, err = gzip.NewReader(resp.Body); err != nil {
				t.Fatal(err)
			}
		}
		parser := expfmt.NewTextParser(model.UTF8Validation)
		fams, err := parser.TextToMetricFamilies(body)
		resp.Body.Close()
		if err != nil || resp.StatusCode != http.StatusOK {
			t.Fatalf("scrape (encoding %q) while another stalls: %d %v", encoding, resp.StatusCode, err)
		}
		if got := len(fams["openstack_vm_icmp_up"].GetMetric()); got != n {
			t.Errorf("scrape (encoding %q): %d icmp_up series, want %d", encoding, got, n)
		}
	}
	select {
	case <-stalledDone:
		t.Fatal("setup: the stalled scrape was not stalled (it wrote everything)")
	default:
	}
}

// resultsOf returns a copy of the loop's health and generation.
func resultsOf(p *ProbeLoop) Results {
	var r Results
	p.Results(&r, 0)
	return r
}
