package inventory

import (
	"context"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/standin"
)

const testSecret = "s3cr3t-Pa55word"

// clearOSEnv unsets every OS_* variable for the test.
func clearOSEnv(t *testing.T) {
	for _, kv := range os.Environ() {
		if k, _, _ := strings.Cut(kv, "="); strings.HasPrefix(k, "OS_") {
			t.Setenv(k, "")
			os.Unsetenv(k)
		}
	}
}

func TestCredentialsFromEnv(t *testing.T) {
	clearOSEnv(t)
	t.Setenv("OS_AUTH_URL", "https://keystone.example.invalid:5000/v3")
	t.Setenv("OS_USERNAME", "exporter")
	t.Setenv("OS_PASSWORD", testSecret)
	t.Setenv("OS_PROJECT_NAME", "admin")
	t.Setenv("OS_USER_DOMAIN_NAME", "Default")
	t.Setenv("OS_PROJECT_DOMAIN_NAME", "Default")
	t.Setenv("OS_REGION_NAME", "RegionTwo")
	t.Setenv("OS_INTERFACE", "internal")
	c, err := LoadCredentials(config.Default().OpenStack)
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.Username != "exporter" || c.Auth.Password != testSecret || c.Auth.DomainName != "Default" || !c.Auth.AllowReauth {
		t.Errorf("auth: %+v", c.Auth)
	}
	if c.Auth.Scope == nil || c.Auth.Scope.ProjectName != "admin" || c.Auth.Scope.DomainName != "Default" {
		t.Errorf("scope: %+v", c.Auth.Scope)
	}
	if c.Endpoint.Region != "RegionTwo" || c.Endpoint.Availability != gophercloud.AvailabilityInternal {
		t.Errorf("endpoint: %+v", c.Endpoint)
	}
	cfg := config.Default().OpenStack
	cfg.Region, cfg.Interface = "RegionOne", "public"
	c, err = LoadCredentials(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.Endpoint.Region != "RegionOne" || c.Endpoint.Availability != gophercloud.AvailabilityPublic {
		t.Errorf("config does not override env: %+v", c.Endpoint)
	}
}

func TestCredentialsFromCloudsYAML(t *testing.T) {
	clearOSEnv(t)
	dir := t.TempDir()
	path := filepath.Join(dir, "clouds.yaml")
	if err := os.WriteFile(path, []byte(`clouds:
  prod:
    auth:
      auth_url: https://keystone.example.invalid/v3
      application_credential_id: abc123
      application_credential_secret: `+testSecret+`
    auth_type: v3applicationcredential
    region_name: RegionOne
    interface: internal
`), 0o600); err != nil {
		t.Fatal(err)
	}
	t.Setenv("OS_CLIENT_CONFIG_FILE", path)
	cfg := config.Default().OpenStack
	cfg.Cloud = "prod"
	c, err := LoadCredentials(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if c.Auth.ApplicationCredentialID != "abc123" || c.Auth.ApplicationCredentialSecret != testSecret {
		t.Errorf("auth: %+v", c.Auth)
	}
	if c.Endpoint.Region != "RegionOne" || c.Endpoint.Availability != gophercloud.AvailabilityInternal {
		t.Errorf("endpoint: %+v", c.Endpoint)
	}
	if !strings.Contains(c.Source, "prod") {
		t.Errorf("source %q", c.Source)
	}

	t.Setenv("OS_CLOUD", "prod")
	if _, err := LoadCredentials(config.Default().OpenStack); err != nil {
		t.Errorf("OS_CLOUD: %v", err)
	}
	cfg.Cloud = "staging"
	if _, err := LoadCredentials(cfg); err == nil || !strings.Contains(err.Error(), `"staging"`) {
		t.Errorf("missing cloud: %v", err)
	}
}

func TestCredentialErrors(t *testing.T) {
	for _, tc := range []struct {
		name string
		env  map[string]string
		want string
	}{
		{"nothing", map[string]string{}, "no credentials"},
		{"no secret", map[string]string{"OS_AUTH_URL": "http://k/v3", "OS_USERNAME": "u", "OS_USER_DOMAIN_NAME": "d"}, "no password"},
		{"app cred without secret", map[string]string{"OS_AUTH_URL": "http://k/v3", "OS_APPLICATION_CREDENTIAL_ID": "id"}, "without its secret"},
		{"user without domain", map[string]string{"OS_AUTH_URL": "http://k/v3", "OS_USERNAME": "u", "OS_PASSWORD": testSecret}, "OS_USER_DOMAIN_NAME"},
		{"project without domain", map[string]string{"OS_AUTH_URL": "http://k/v3", "OS_USERNAME": "u", "OS_PASSWORD": testSecret,
			"OS_USER_DOMAIN_NAME": "d", "OS_PROJECT_NAME": "p"}, "OS_PROJECT_DOMAIN_NAME"},
		{"unreadable CA", map[string]string{"OS_AUTH_URL": "http://k/v3", "OS_APPLICATION_CREDENTIAL_ID": "id",
			"OS_APPLICATION_CREDENTIAL_SECRET": testSecret, "OS_CACERT": "/nonexistent.pem"}, "OS_CACERT"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			clearOSEnv(t)
			for k, v := range tc.env {
				t.Setenv(k, v)
			}
			_, err := LoadCredentials(config.Default().OpenStack)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %v, want %q", err, tc.want)
			}
			if strings.Contains(err.Error(), testSecret) {
				t.Errorf("error leaks the secret: %v", err)
			}
		})
	}
}

func TestRedactor(t *testing.T) {
	token := "gAAAAABtokenvalue"
	r := newRedactor(func() string { return token }, testSecret, "", "ab")
	got := r.String("password " + testSecret + " token " + token + " ab stays")
	if strings.Contains(got, testSecret) || strings.Contains(got, token) || !strings.Contains(got, "ab stays") {
		t.Errorf("redacted: %q", got)
	}
	var nilR *Redactor
	if nilR.String("x") != "x" {
		t.Error("nil redactor")
	}
	// A login echoed back: the secret JSON-escaped in the body, URL-escaped
	// in a form or query.
	odd := `Pw"with/slash%25and\back-7f3Q`
	r = newRedactor(nil, odd)
	echo := `{"password":"Pw\"with/slash%25and\\back-7f3Q"} password=Pw%22with%2Fslash%2525and%5Cback-7f3Q path=Pw%22with%2Fslash%2525and%5Cback-7f3Q`
	if got := r.String(echo); strings.Contains(got, "with") || strings.Count(got, "<redacted>") != 3 {
		t.Errorf("escaped forms: %q", got)
	}
}

// tlsKeystone serves the stand-in's Keystone over TLS with httptest's
// self-signed certificate, and writes that certificate as a PEM file.
func tlsKeystone(t *testing.T, cloud *standin.Cloud) (srv *httptest.Server, caFile string) {
	t.Helper()
	target, _ := url.Parse(cloud.URL)
	srv = httptest.NewUnstartedServer(httputil.NewSingleHostReverseProxy(target))
	// The rejected handshakes are the test's point, not noise to print.
	srv.Config.ErrorLog = log.New(io.Discard, "", 0)
	srv.StartTLS()
	t.Cleanup(srv.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	pemBytes := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: srv.Certificate().Raw})
	if err := os.WriteFile(caFile, pemBytes, 0o600); err != nil {
		t.Fatal(err)
	}
	return srv, caFile
}

// TLS verification is on unless turned off; ca_file adds a CA.
func TestTLSVerification(t *testing.T) {
	cloud := startStandin(t)
	cloud.Put(fleet(2, func(int) string { return "cmp-1" })...)
	srv, caFile := tlsKeystone(t, cloud)
	env := cloud.Env()
	env["OS_AUTH_URL"] = srv.URL + "/identity/v3"
	ctx := context.Background()

	inv := inventoryFromEnv(t, env, nil)
	err := inv.Refresh(ctx)
	if err == nil {
		t.Fatal("a self-signed Keystone was trusted")
	}
	if msg := inv.Health().LastError; !strings.Contains(msg, "x509: certificate signed by unknown authority") ||
		!strings.Contains(msg, "openstack.ca_file") {
		t.Errorf("error %q does not name the certificate problem and its remedy", msg)
	}
	if cloud.Logins() != 0 {
		t.Error("credentials sent to an unverified server")
	}

	inv = inventoryFromEnv(t, env, func(c *config.OpenStack) { c.CAFile = caFile })
	if err := inv.Refresh(ctx); err != nil {
		t.Fatalf("with ca_file: %v", err)
	}
	if len(inv.Snapshot().Servers) != 2 {
		t.Error("servers missing")
	}

	logger, logs := newLogger()
	inv = loggedInventoryFromEnv(t, env, func(c *config.OpenStack) { c.Insecure = true }, logger)
	if err := inv.Refresh(ctx); err != nil {
		t.Fatalf("insecure: %v", err)
	}
	if out := logs.String(); !strings.Contains(out, "level=WARN") || !strings.Contains(out, "verification of the OpenStack API is OFF") {
		t.Errorf("insecure without a warning; log:\n%s", out)
	}
}

// ca_file is an extra CA: added to OS_CACERT's (or clouds.yaml's cacert),
// or else to the system's, never in their place.
func TestCAFileAddsToPool(t *testing.T) {
	cloud := startStandin(t)
	srvA, caA := tlsKeystone(t, cloud)
	srvB, caB := tlsKeystone(t, cloud)
	env := cloud.Env()
	env["OS_CACERT"] = caA
	clearOSEnv(t)
	for k, v := range env {
		t.Setenv(k, v)
	}
	cfg := config.Default().OpenStack
	cfg.CAFile = caB
	creds, err := LoadCredentials(cfg)
	if err != nil {
		t.Fatal(err)
	}
	for _, srv := range []*httptest.Server{srvA, srvB} {
		client := &http.Client{Transport: &http.Transport{TLSClientConfig: creds.TLS}}
		resp, err := client.Get(srv.URL + "/identity/v3/")
		if err != nil {
			t.Errorf("%s not trusted with OS_CACERT and ca_file: %v", srv.URL, err)
			continue
		}
		resp.Body.Close()
	}

	t.Setenv("OS_CACERT", "")
	os.Unsetenv("OS_CACERT")
	creds, err = LoadCredentials(cfg)
	if err != nil {
		t.Fatal(err)
	}
	want, err := x509.SystemCertPool()
	if err != nil {
		t.Skipf("no system pool: %v", err)
	}
	pemB, _ := os.ReadFile(caB)
	want.AppendCertsFromPEM(pemB)
	if !creds.TLS.RootCAs.Equal(want) {
		t.Error("ca_file alone does not keep the system CAs")
	}
}

func TestMessageCut(t *testing.T) {
	r := newRedactor(nil, testSecret)
	short := fmt.Errorf("login with %s refused", testSecret)
	if got := r.Message(short); got != "login with <redacted> refused" {
		t.Errorf("short: %q", got)
	}
	// A secret whole before the cut is redacted; one cut in two is
	// dropped, not half shown.
	for _, at := range []int{10, MaxErrorBytes - len(testSecret), MaxErrorBytes - 5, MaxErrorBytes - 1} {
		msg := strings.Repeat("é", at/2) + strings.Repeat("x", at%2) + testSecret + strings.Repeat("ü", 3000)
		got := r.Message(errors.New(msg))
		if len(got) > MaxErrorBytes+40 || !utf8.ValidString(got) || !strings.HasSuffix(got, "bytes cut)") {
			t.Errorf("secret at %d: %d bytes, %q...", at, len(got), got[max(0, len(got)-60):])
		}
		for k := 3; k <= len(testSecret); k++ {
			if strings.Contains(got, testSecret[:k]) {
				t.Errorf("secret at %d: %d bytes of the secret shown", at, k)
				break
			}
		}
		var cut int
		if _, err := fmt.Sscanf(got[strings.LastIndex(got, "(")+1:], "%d bytes cut)", &cut); err != nil || cut < len(msg)-MaxErrorBytes || cut >= len(msg) {
			t.Errorf("secret at %d: cut %d of %d (%v)", at, cut, len(msg), err)
		}
	}
}
