package exporter

import (
	"context"
	"fmt"

	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/probes"
)

// scrapeFixture is an exporter holding n servers, each with one probed
// address that answered three echo requests.
func scrapeFixture(b *testing.B, n int) (http.Handler, *ProbeLoop) {
	b.Helper()
	servers := make([]standin.Server, n)
	for i := range servers {
		servers[i] = standin.Server{
			ID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), Name: fmt.Sprintf("vm-%d", i), ProjectID: fmt.Sprintf("p%d", i%50),
			Host: fmt.Sprintf("cmp-%d", i%100), VMState: "active", PowerState: 1, Flavor: "m1.small", ImageID: "img",
			Addresses: []standin.Address{{Network: "provider", Addr: fmt.Sprintf("198.18.%d.%d", i/250, i%250+1), Type: "fixed"}},
		}
	}
	f := newFixture(b, servers)
	for i := 0; i < n; i++ {
		f.engine.answers[netip.AddrFrom4([4]byte{198, 18, byte(i / 250), byte(i%250 + 1)})] = probes.Result{Sent: 3, Received: 3,
			RTTs: []time.Duration{300 * time.Microsecond, 450 * time.Microsecond, 2 * time.Millisecond}}
	}
	if err := f.svc.inv.Refresh(context.Background()); err != nil {
		b.Fatal(err)
	}
	f.svc.loop.Cycle(context.Background())
	return f.svc.Handler(promhttp.HandlerOpts{}), f.svc.loop
}

func benchmarkScrape(b *testing.B, n int, gzip bool) {
	h, _ := scrapeFixture(b, n)
	req := httptest.NewRequest(http.MethodGet, "/metrics", nil)
	if gzip {
		req.Header.Set("Accept-Encoding", "gzip")
	}
	b.ReportAllocs()
	b.ResetTimer()
	var w countingWriter
	for i := 0; i < b.N; i++ {
		w = countingWriter{header: http.Header{}}
		h.ServeHTTP(&w, req)
	}
	b.ReportMetric(float64(w.n), "bytes/scrape")
}

// BenchmarkScrape10kVMs renders /metrics for 10,000 servers with one probed
// address each (status, info, since, up, counters and an RTT histogram).
func BenchmarkScrape10kVMs(b *testing.B)     { benchmarkScrape(b, 10000, false) }
func BenchmarkScrape10kVMsGzip(b *testing.B) { benchmarkScrape(b, 10000, true) }

// BenchmarkCopyTargets10k measures what a scrape does under the prober's
// lock, so what a probe cycle may wait for: copying 10,000 targets' values.
func BenchmarkCopyTargets10k(b *testing.B) {
	_, p := scrapeFixture(b, 10000)
	var r Results
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		p.Results(&r, ResultTargets)
	}
}

// countingWriter stands for the network: it counts what the handler writes,
// so the benchmark measures the exporter and not a growing buffer.
type countingWriter struct {
	header http.Header
	n      int
}

func (w *countingWriter) Header() http.Header         { return w.header }
func (w *countingWriter) WriteHeader(int)             {}
func (w *countingWriter) Write(b []byte) (int, error) { w.n += len(b); return len(b), nil }
