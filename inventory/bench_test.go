package inventory

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"testing"
	"time"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

// BenchmarkDecodePage decodes one page of 1,000 servers as Nova's detail
// listing returns it (the recorded server, repeated with distinct ids).
func BenchmarkDecodePage(b *testing.B) {
	raw, err := os.ReadFile("testdata/nova/server_show.json")
	if err != nil {
		b.Fatal(err)
	}
	var show struct {
		Server map[string]any `json:"server"`
	}
	if err := json.Unmarshal(raw, &show); err != nil {
		b.Fatal(err)
	}
	servers := make([]map[string]any, 1000)
	for i := range servers {
		s := map[string]any{}
		for k, v := range show.Server {
			s[k] = v
		}
		s["id"] = fmt.Sprintf("%08d-0000-4000-8000-000000000000", i)
		servers[i] = s
	}
	page, _ := json.Marshal(map[string]any{"servers": servers})
	b.SetBytes(int64(len(page)))
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		var p serverPage
		if err := json.Unmarshal(page, &p); err != nil {
			b.Fatal(err)
		}
		out := make([]Server, 0, len(p.Servers))
		for j := range p.Servers {
			out = append(out, p.Servers[j].toServer([]string{"monitoring_icmp"}))
		}
	}
}

func benchmarkRefresh(b *testing.B, n int) {
	cloud, err := standin.Start("127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer cloud.Close()
	servers := make([]standin.Server, n)
	for i := range servers {
		servers[i] = standin.Server{ID: fmt.Sprintf("%08d-0000-4000-8000-000000000000", i), Name: fmt.Sprintf("vm-%d", i),
			Host: fmt.Sprintf("cmp-%d", i%1000), VMState: "active", PowerState: 1, Flavor: "m1.small",
			Addresses: []standin.Address{{Network: "provider", Addr: fmt.Sprintf("198.18.%d.%d", i/250%256, i%250+1), Type: "fixed"}}}
	}
	cloud.Put(servers...)
	env := cloud.Env()
	cfg := config.Default().OpenStack
	cfg.Scope, cfg.Timeout = "all", 5*time.Minute
	creds, err := LoadCredentialsFrom(cfg, func(k string) string { return env[k] })
	if err != nil {
		b.Fatal(err)
	}
	client, _ := NewClient(creds, ClientOptions{})
	inv := New(Options{OpenStack: cfg}, client)
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		inv.forceFull = true
		if err := inv.Refresh(context.Background()); err != nil {
			b.Fatal(err)
		}
	}
	b.StopTimer()
	if got := len(inv.Snapshot().Servers); got != n {
		b.Fatalf("%d servers", got)
	}
	h := inv.Health()
	b.ReportMetric(float64(h.Bytes)/float64(b.N+0), "bytes/refresh")
}

// BenchmarkRefresh10k and 50k: a full listing from the stand-in, pages of
// 1,000, stand-in included (it renders Nova's JSON on the same machine).
func BenchmarkRefresh10k(b *testing.B) { benchmarkRefresh(b, 10000) }
func BenchmarkRefresh50k(b *testing.B) { benchmarkRefresh(b, 50000) }
