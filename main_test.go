package main

// Tests of the built binary: flags, reload, shutdown, TLS and basic auth, and
// that no secret reaches any output. The inventory comes from the HTTP
// stand-in; the servers' addresses are loopback addresses, which really
// answer ICMP here.

import (
	"bytes"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"io"
	"math/big"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/crypto/bcrypt"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

var binary string

func TestMain(m *testing.M) {
	dir, err := os.MkdirTemp("", "ovmx-bin-")
	if err != nil {
		panic(err)
	}
	binary = filepath.Join(dir, "openstack-vm-exporter")
	if out, err := exec.Command("go", "build", "-race", "-o", binary, ".").CombinedOutput(); err != nil {
		fmt.Fprintf(os.Stderr, "building the exporter: %v\n%s", err, out)
		os.Exit(1)
	}
	code := m.Run()
	os.RemoveAll(dir)
	os.Exit(code)
}

// syncBuffer collects a process's output for the test to read while it runs.
type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

type running struct {
	cmd    *exec.Cmd
	addr   string
	output *syncBuffer
	done   chan error
}

func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

func startBinary(t *testing.T, env map[string]string, args ...string) *running {
	t.Helper()
	addr := freeAddr(t)
	// A subcommand comes first: its flags follow it.
	var argv []string
	if len(args) > 0 && !strings.HasPrefix(args[0], "-") {
		argv, args = []string{args[0]}, args[1:]
	}
	argv = append(argv, "--web.listen-address="+addr, "--log.level=debug")
	cmd := exec.Command(binary, append(argv, args...)...)
	cmd.Env = []string{"PATH=" + os.Getenv("PATH"), "HOME=" + t.TempDir()}
	for k, v := range env {
		cmd.Env = append(cmd.Env, k+"="+v)
	}
	r := &running{cmd: cmd, addr: addr, output: &syncBuffer{}, done: make(chan error, 1)}
	cmd.Stdout, cmd.Stderr = r.output, r.output
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.done <- cmd.Wait() }()
	t.Cleanup(func() {
		_ = cmd.Process.Kill()
		<-r.done
		if t.Failed() {
			t.Logf("exporter output:\n%s", r.output)
		}
	})
	return r
}

// waitFor polls fn until it returns "" or the deadline passes.
func waitFor(t *testing.T, d time.Duration, what string, fn func() string) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := ""
	for time.Now().Before(deadline) {
		if last = fn(); last == "" {
			return
		}
		time.Sleep(100 * time.Millisecond)
	}
	t.Fatalf("%s: %s", what, last)
}

func get(client *http.Client, url string) (int, string) {
	if client == nil {
		client = http.DefaultClient
	}
	resp, err := client.Get(url)
	if err != nil {
		return 0, err.Error()
	}
	defer resp.Body.Close()
	b, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(b)
}

func startCloud(t *testing.T) *standin.Cloud {
	t.Helper()
	c, err := standin.Start("127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.Password = "S3cret-P4ssw0rd-for-leak-test"
	for i := 1; i <= 3; i++ {
		c.Put(standin.Server{ID: fmt.Sprintf("srv-%d", i), Name: fmt.Sprintf("vm-%d", i), ProjectID: "p", Host: "cmp-1",
			VMState: "active", PowerState: 1, Flavor: "m1.small",
			Addresses: []standin.Address{{Network: "provider", Addr: fmt.Sprintf("127.0.200.%d", i), Type: "fixed"}}})
	}
	return c
}

func writeConfig(t *testing.T, path, body string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(body), 0o600); err != nil {
		t.Fatal(err)
	}
}

const baseConfig = `openstack:
  scope: all
  refresh_interval: 2s
  full_refresh_interval: 10s
  timeout: 3s
probe:
  icmp:
    interval: %s
    count: 1
    timeout: 500ms
`

func metricValue(body, series string) string {
	for _, line := range strings.Split(body, "\n") {
		if strings.HasPrefix(line, series+" ") {
			return strings.TrimPrefix(line, series+" ")
		}
	}
	return ""
}

func TestReload(t *testing.T) {
	cloud := startCloud(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf(baseConfig, "1s"))
	r := startBinary(t, cloud.Env(), "--config.file="+cfgPath)
	base := "http://" + r.addr
	waitFor(t, 15*time.Second, "ready", func() string {
		if code, body := get(nil, base+"/-/ready"); code != 200 {
			return body
		}
		return ""
	})
	waitFor(t, 10*time.Second, "probed", func() string {
		_, body := get(nil, base+"/metrics")
		if !strings.Contains(body, `openstack_vm_icmp_up{address="127.0.200.1"`) {
			return "no icmp series yet"
		}
		return ""
	})

	// A valid change by SIGHUP.
	writeConfig(t, cfgPath, fmt.Sprintf(baseConfig, "3s"))
	if err := r.cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	waitFor(t, 10*time.Second, "SIGHUP reload", func() string {
		_, body := get(nil, base+"/metrics")
		if v := metricValue(body, "openstack_vm_probe_interval_seconds"); v != "3" {
			return "probe interval " + v
		}
		return ""
	})

	// An invalid change by POST is rejected with the reason; nothing is lost.
	writeConfig(t, cfgPath, fmt.Sprintf(baseConfig, "2s")+"    colour: blue\n")
	resp, err := http.Post(base+"/-/reload", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusBadRequest || !strings.Contains(string(b), `line 11`) || !strings.Contains(string(b), `"colour"`) {
		t.Errorf("invalid reload answered %d %q", resp.StatusCode, b)
	}
	_, body := get(nil, base+"/metrics")
	if v := metricValue(body, "openstack_vm_probe_interval_seconds"); v != "3" {
		t.Errorf("probe interval %q after a rejected reload", v)
	}
	if !strings.Contains(body, `openstack_vm_status{host="cmp-1",id="srv-1"`) {
		t.Error("inventory lost by a rejected reload")
	}
	if code, _ := get(nil, base+"/-/reload"); code != http.StatusMethodNotAllowed {
		t.Errorf("GET /-/reload answered %d", code)
	}

	// A valid change by POST.
	writeConfig(t, cfgPath, fmt.Sprintf(baseConfig, "2s"))
	resp, err = http.Post(base+"/-/reload", "text/plain", nil)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		t.Errorf("valid reload answered %d", resp.StatusCode)
	}
	_, body = get(nil, base+"/metrics")
	if v := metricValue(body, "openstack_vm_probe_interval_seconds"); v != "2" {
		t.Errorf("probe interval %q after POST reload", v)
	}
}

func TestGracefulShutdown(t *testing.T) {
	cloud := startCloud(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf(baseConfig, "1s"))
	r := startBinary(t, cloud.Env(), "--config.file="+cfgPath)
	waitFor(t, 15*time.Second, "ready", func() string {
		if code, body := get(nil, "http://"+r.addr+"/-/ready"); code != 200 {
			return body
		}
		return ""
	})
	start := time.Now()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		r.done <- err // for the cleanup
		if err != nil {
			t.Errorf("exit after SIGTERM: %v", err)
		}
		if took := time.Since(start); took > 5*time.Second {
			t.Errorf("shutdown took %v", took)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("no exit within 15s of SIGTERM")
	}
}

func TestInvalidConfigAtStart(t *testing.T) {
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	writeConfig(t, cfgPath, "openstack:\n  scope: everywhere\n")
	out, err := exec.Command(binary, "--config.file="+cfgPath).CombinedOutput()
	if err == nil || !strings.Contains(string(out), "line 2: openstack.scope") || !strings.Contains(string(out), "host, all") {
		t.Errorf("invalid config: %v\n%s", err, out)
	}
	writeConfig(t, cfgPath, "probe:\n  icmp:\n    count: 2\n")
	out, err = exec.Command(binary, "--config.file="+cfgPath, "serve", "--config.check").CombinedOutput()
	if err != nil || !strings.Contains(string(out), "valid") {
		t.Errorf("--config.check on a valid file: %v\n%s", err, out)
	}
}

// selfSignedCert writes a certificate and key for 127.0.0.1.
func selfSignedCert(t *testing.T, dir string) (certPath, keyPath string, pool *x509.CertPool) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "exporter-test"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		IPAddresses: []net.IP{net.ParseIP("127.0.0.1")}, KeyUsage: x509.KeyUsageDigitalSignature,
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}, IsCA: true, BasicConstraintsValid: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	keyDER, err := x509.MarshalECPrivateKey(key)
	if err != nil {
		t.Fatal(err)
	}
	certPath, keyPath = filepath.Join(dir, "tls.crt"), filepath.Join(dir, "tls.key")
	writeConfig(t, certPath, string(pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})))
	writeConfig(t, keyPath, string(pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: keyDER})))
	cert, _ := x509.ParseCertificate(der)
	pool = x509.NewCertPool()
	pool.AddCert(cert)
	return certPath, keyPath, pool
}

func TestTLSAndBasicAuth(t *testing.T) {
	cloud := startCloud(t)
	dir := t.TempDir()
	certPath, keyPath, pool := selfSignedCert(t, dir)
	hash, err := bcrypt.GenerateFromPassword([]byte("scrape-secret"), bcrypt.MinCost)
	if err != nil {
		t.Fatal(err)
	}
	webConfig := filepath.Join(dir, "web.yml")
	writeConfig(t, webConfig, fmt.Sprintf("tls_server_config:\n  cert_file: %s\n  key_file: %s\nbasic_auth_users:\n  prometheus: %s\n", certPath, keyPath, hash))
	cfgPath := filepath.Join(dir, "config.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf(baseConfig, "1s"))
	r := startBinary(t, cloud.Env(), "--config.file="+cfgPath, "--web.config.file="+webConfig)

	client := &http.Client{Transport: &http.Transport{TLSClientConfig: &tls.Config{RootCAs: pool}}, Timeout: 5 * time.Second}
	url := "https://" + r.addr + "/metrics"
	waitFor(t, 15*time.Second, "TLS listener", func() string {
		if code, body := get(client, url); code != http.StatusUnauthorized {
			return fmt.Sprintf("%d %s", code, body)
		}
		return ""
	})
	req, _ := http.NewRequest(http.MethodGet, url, nil)
	req.SetBasicAuth("prometheus", "wrong")
	if resp, err := client.Do(req); err != nil || resp.StatusCode != http.StatusUnauthorized {
		t.Errorf("wrong password: %v %v", resp, err)
	}
	req.SetBasicAuth("prometheus", "scrape-secret")
	resp, err := client.Do(req)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("right password: %v %v", resp, err)
	}
	resp.Body.Close()
	if resp.TLS == nil {
		t.Error("not served over TLS")
	}
	if code, _ := get(nil, "http://"+r.addr+"/metrics"); code == 200 {
		t.Error("plain HTTP served metrics")
	}
}

// The password, the tokens and the scrape credentials never appear in any
// output: logs at debug level (with failed logins and API errors), metrics,
// the landing page, health endpoints and reload errors.
func TestSecretsNeverLeak(t *testing.T) {
	cloud := startCloud(t)
	realPassword := cloud.Password
	cloud.Password = "not-what-the-exporter-has"
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf(baseConfig, "1s"))
	env := cloud.Env()
	env["OS_PASSWORD"] = realPassword
	r := startBinary(t, env, "--config.file="+cfgPath)
	base := "http://" + r.addr
	waitFor(t, 10*time.Second, "auth failures logged", func() string {
		if !strings.Contains(r.output.String(), "reason=auth") {
			return "no auth failure yet"
		}
		return ""
	})
	cloud.Password = realPassword
	waitFor(t, 20*time.Second, "ready after the password is right", func() string {
		if code, body := get(nil, base+"/-/ready"); code != 200 {
			return body
		}
		return ""
	})
	cloud.RevokeTokens() // forces a re-login mid-run
	cloud.SetFault(func(r *http.Request) *standin.Failure {
		if strings.Contains(r.URL.Path, "os-services") {
			return &standin.Failure{Status: 500}
		}
		return nil
	})
	time.Sleep(3 * time.Second)
	cloud.SetFault(nil)
	time.Sleep(3 * time.Second)

	var outputs []string
	for _, path := range []string{"/", "/metrics", "/-/healthy", "/-/ready"} {
		_, body := get(nil, base+path)
		outputs = append(outputs, body)
	}
	writeConfig(t, cfgPath, "openstack:\n  bogus: "+realPassword+"\n")
	resp, err := http.Post(base+"/-/reload", "text/plain", nil)
	if err == nil {
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		outputs = append(outputs, string(b))
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(15 * time.Second):
	}
	outputs = append(outputs, r.output.String())
	if cloud.Logins() < 3 {
		t.Errorf("only %d logins: the test did not exercise failed and renewed logins", cloud.Logins())
	}
	all := strings.Join(outputs, "\n")
	for _, secret := range []string{realPassword, "gAAAAAstandin"} {
		if strings.Contains(all, secret) {
			i := strings.Index(all, secret)
			t.Errorf("secret %q leaked: ...%s...", secret, all[max(0, i-200):min(len(all), i+100)])
		}
	}
}

// The README's first command ends in `openstack-vm-exporter demo`: the demo
// cloud, the exporter on it, and a Prometheus whose bundled rules fire on the
// demo's known issues.
func TestDemo(t *testing.T) {
	promAddr := freeAddr(t)
	r := startBinary(t, nil, "demo", "--demo.prometheus-address="+promAddr)
	base := "http://" + r.addr
	waitFor(t, 30*time.Second, "demo metrics", func() string {
		_, body := get(nil, base+"/metrics")
		if !strings.Contains(body, `status="ERROR"`) || !strings.Contains(body, "openstack_vm_icmp_up{") {
			return "no demo fleet yet"
		}
		return ""
	})
	waitFor(t, 90*time.Second, "the demo's known issues firing in Prometheus", func() string {
		_, body := get(nil, "http://"+promAddr+`/api/v1/query?query=count(ALERTS{alertstate="firing"})`)
		if !strings.Contains(body, `"value"`) {
			return body
		}
		var n int
		if i := strings.LastIndex(body, `,"`); i > 0 {
			fmt.Sscanf(body[i+2:], "%d", &n)
		}
		if n < 6 {
			return fmt.Sprintf("%d alerts firing", n)
		}
		return ""
	})
	if !strings.Contains(r.output.String(), "http://"+promAddr+"/alerts") {
		t.Errorf("the demo does not say where to look:\n%s", r.output)
	}
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-r.done:
		r.done <- err
	case <-time.After(20 * time.Second):
		t.Fatal("the demo did not stop on SIGTERM")
	}
	if code, _ := get(nil, "http://"+promAddr+"/-/ready"); code != 0 {
		t.Error("the demo's Prometheus still runs after the demo stopped")
	}
}

func TestReportDemoExitStatus(t *testing.T) {
	out, err := exec.Command(binary, "report", "--demo", "-f", "json").Output()
	if err != nil {
		t.Fatalf("report --demo: %v", err)
	}
	var r struct {
		Findings []struct{ Alert string } `json:"findings"`
	}
	if err := json.Unmarshal(out, &r); err != nil || len(r.Findings) < 6 {
		t.Errorf("report --demo: %v, %d findings\n%s", err, len(r.Findings), out)
	}
}

// Keystone down at start: the exporter serves /metrics with api_up 0, is
// not ready, retries with backoff, and becomes ready when Keystone answers.
func TestKeystoneDownAtStart(t *testing.T) {
	apiAddr := freeAddr(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	writeConfig(t, cfgPath, fmt.Sprintf(baseConfig, "1s"))
	env := map[string]string{"OS_AUTH_URL": "http://" + apiAddr + "/identity/v3", "OS_USERNAME": "admin",
		"OS_PASSWORD": "standin-password", "OS_PROJECT_NAME": "admin", "OS_USER_DOMAIN_NAME": "Default", "OS_PROJECT_DOMAIN_NAME": "Default"}
	r := startBinary(t, env, "--config.file="+cfgPath)
	base := "http://" + r.addr
	waitFor(t, 10*time.Second, "metrics while Keystone is down", func() string {
		code, body := get(nil, base+"/metrics")
		if code != 200 || metricValue(body, "openstack_vm_api_up") != "0" || metricValue(body, `openstack_vm_api_errors_total{reason="network"}`) == "0" {
			return fmt.Sprintf("%d api_up=%q", code, metricValue(body, "openstack_vm_api_up"))
		}
		return ""
	})
	if code, _ := get(nil, base+"/-/ready"); code != http.StatusServiceUnavailable {
		t.Errorf("ready answered %d while Keystone is down", code)
	}
	cloud, err := standin.Start(apiAddr)
	if err != nil {
		t.Fatal(err)
	}
	defer cloud.Close()
	cloud.Put(standin.Server{ID: "s1", Name: "vm", Host: "cmp-1", VMState: "active", PowerState: 1})
	waitFor(t, 40*time.Second, "ready once Keystone answers", func() string {
		if code, body := get(nil, base+"/-/ready"); code != 200 {
			return body
		}
		return ""
	})
}

// Bad credentials: a clear auth error, and logins backing off instead of a
// storm against Keystone.
func TestWrongCredentialsNoRetryStorm(t *testing.T) {
	cloud := startCloud(t)
	cfgPath := filepath.Join(t.TempDir(), "config.yaml")
	writeConfig(t, cfgPath, strings.Replace(fmt.Sprintf(baseConfig, "1s"), "refresh_interval: 2s", "refresh_interval: 1s", 1))
	env := cloud.Env()
	env["OS_PASSWORD"] = "wrong-password"
	r := startBinary(t, env, "--config.file="+cfgPath)
	time.Sleep(12 * time.Second)
	if n := cloud.Logins(); n < 2 || n > 5 {
		t.Errorf("%d logins in 12 s with wrong credentials; want backoff (1, 2, 4, 8 s)", n)
	}
	_, body := get(nil, "http://"+r.addr+"/metrics")
	if v := metricValue(body, `openstack_vm_api_errors_total{reason="auth"}`); v == "" || v == "0" {
		t.Errorf("auth errors %q", v)
	}
	if !strings.Contains(r.output.String(), "reason=auth") {
		t.Error("the log does not say the failure is about authentication")
	}
}
