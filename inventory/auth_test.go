package inventory

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
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
	r := NewRedactor(func() string { return token }, testSecret, "", "ab")
	got := r.String("password " + testSecret + " token " + token + " ab stays")
	if strings.Contains(got, testSecret) || strings.Contains(got, token) || !strings.Contains(got, "ab stays") {
		t.Errorf("redacted: %q", got)
	}
	var nilR *Redactor
	if nilR.String("x") != "x" {
		t.Error("nil redactor")
	}
}
