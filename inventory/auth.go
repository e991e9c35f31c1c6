package inventory

import (
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/gophercloud/gophercloud/v2"
	"github.com/gophercloud/gophercloud/v2/openstack/config/clouds"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
)

// Credentials is everything needed to log in and find Nova.
type Credentials struct {
	Auth     gophercloud.AuthOptions
	Endpoint gophercloud.EndpointOpts
	TLS      *tls.Config
	// Source says where they came from, for logs: `clouds.yaml cloud "x"` or
	// "OS_* environment variables".
	Source string
}

// Secrets lists the secret values in the credentials, for redaction.
func (c *Credentials) Secrets() []string {
	var s []string
	for _, v := range []string{c.Auth.Password, c.Auth.ApplicationCredentialSecret, c.Auth.TokenID, c.Auth.Passcode} {
		if v != "" {
			s = append(s, v)
		}
	}
	return s
}

// LoadCredentials reads credentials the way the openstack CLI does: the
// cloud named in the config or $OS_CLOUD from clouds.yaml (searched in
// $OS_CLIENT_CONFIG_FILE, ./, ~/.config/openstack/, /etc/openstack/), and
// otherwise the OS_* environment variables. The config's region, interface,
// ca_file and insecure override what those say.
func LoadCredentials(cfg config.OpenStack) (*Credentials, error) {
	return LoadCredentialsFrom(cfg, os.Getenv)
}

// LoadCredentialsFrom is LoadCredentials with the OS_* variables read from
// getenv instead of the process environment (the default locations of
// clouds.yaml still depend on the process's $HOME and $XDG_CONFIG_HOME).
func LoadCredentialsFrom(cfg config.OpenStack, getenv func(string) string) (*Credentials, error) {
	var creds Credentials
	cloud := cfg.Cloud
	if cloud == "" {
		cloud = getenv("OS_CLOUD")
	}
	if cloud != "" {
		var opts []clouds.ParseOption
		opts = append(opts, clouds.WithCloudName(cloud))
		// gophercloud reads these from the process by default; here they
		// come from getenv like every other variable.
		if path := getenv("OS_CLIENT_CONFIG_FILE"); path != "" {
			opts = append(opts, clouds.WithLocations(path))
		}
		if region := firstNonEmpty(cfg.Region, getenv("OS_REGION_NAME")); region != "" {
			opts = append(opts, clouds.WithRegion(region))
		}
		if iface := firstNonEmpty(cfg.Interface, getenv("OS_INTERFACE")); iface != "" {
			opts = append(opts, clouds.WithEndpointType(iface))
		}
		ao, eo, tlsConfig, err := clouds.Parse(opts...)
		if err != nil {
			return nil, fmt.Errorf("reading cloud %q from clouds.yaml: %w", cloud, err)
		}
		creds = Credentials{Auth: ao, Endpoint: eo, TLS: tlsConfig, Source: fmt.Sprintf("clouds.yaml cloud %q", cloud)}
	} else {
		var err error
		if creds, err = credentialsFromEnv(cfg, getenv); err != nil {
			return nil, err
		}
	}
	if creds.Auth.IdentityEndpoint == "" {
		return nil, fmt.Errorf("no auth URL in %s: set auth.auth_url in clouds.yaml or OS_AUTH_URL", creds.Source)
	}
	if creds.Auth.ApplicationCredentialID == "" && creds.Auth.ApplicationCredentialName == "" &&
		creds.Auth.Password == "" && creds.Auth.TokenID == "" {
		return nil, fmt.Errorf("no password, token or application credential in %s", creds.Source)
	}
	if (creds.Auth.ApplicationCredentialID != "" || creds.Auth.ApplicationCredentialName != "") &&
		creds.Auth.ApplicationCredentialSecret == "" {
		return nil, fmt.Errorf("application credential without its secret in %s (OS_APPLICATION_CREDENTIAL_SECRET)", creds.Source)
	}
	// Keystone v3 needs a domain beside every name; gophercloud would only
	// say so at the first login, which is retried as if it could heal.
	if creds.Auth.Username != "" && creds.Auth.DomainName == "" && creds.Auth.DomainID == "" {
		return nil, fmt.Errorf("user %q has no domain in %s: set user_domain_name (OS_USER_DOMAIN_NAME) or user_domain_id", creds.Auth.Username, creds.Source)
	}
	if sc := creds.Auth.Scope; sc != nil && sc.ProjectName != "" && sc.DomainName == "" && sc.DomainID == "" {
		return nil, fmt.Errorf("project %q has no domain in %s: set project_domain_name (OS_PROJECT_DOMAIN_NAME) or project_domain_id", sc.ProjectName, creds.Source)
	}
	// Re-authenticate by itself when the token expires or is revoked,
	// instead of a new login on every refresh.
	creds.Auth.AllowReauth = true
	if creds.TLS == nil {
		creds.TLS = &tls.Config{}
	}
	if cfg.CAFile != "" {
		pem, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("reading openstack.ca_file: %w", err)
		}
		// An extra CA: added to those of clouds.yaml's cacert or
		// $OS_CACERT, or else to the system's, never instead of them.
		pool := creds.TLS.RootCAs
		if pool == nil {
			if pool, err = x509.SystemCertPool(); err != nil {
				pool = x509.NewCertPool()
			}
		} else {
			pool = pool.Clone()
		}
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("openstack.ca_file %s holds no PEM certificate", cfg.CAFile)
		}
		creds.TLS.RootCAs = pool
	}
	if cfg.Insecure {
		creds.TLS.InsecureSkipVerify = true
	}
	return &creds, nil
}

func firstNonEmpty(values ...string) string {
	for _, v := range values {
		if v != "" {
			return v
		}
	}
	return ""
}

func credentialsFromEnv(cfg config.OpenStack, getenv func(string) string) (Credentials, error) {
	env := func(names ...string) string {
		for _, n := range names {
			if v := getenv(n); v != "" {
				return v
			}
		}
		return ""
	}
	if env("OS_AUTH_URL") == "" {
		return Credentials{}, errors.New("no credentials: name a cloud (openstack.cloud or $OS_CLOUD) from clouds.yaml, or set OS_AUTH_URL and the other OS_* variables")
	}
	ao := gophercloud.AuthOptions{
		IdentityEndpoint:            env("OS_AUTH_URL"),
		Username:                    env("OS_USERNAME"),
		UserID:                      env("OS_USER_ID", "OS_USERID"),
		Password:                    env("OS_PASSWORD"),
		Passcode:                    env("OS_PASSCODE"),
		TokenID:                     env("OS_TOKEN"),
		DomainName:                  env("OS_USER_DOMAIN_NAME", "OS_DOMAIN_NAME"),
		DomainID:                    env("OS_USER_DOMAIN_ID", "OS_DOMAIN_ID"),
		ApplicationCredentialID:     env("OS_APPLICATION_CREDENTIAL_ID"),
		ApplicationCredentialName:   env("OS_APPLICATION_CREDENTIAL_NAME"),
		ApplicationCredentialSecret: env("OS_APPLICATION_CREDENTIAL_SECRET"),
	}
	switch {
	case ao.ApplicationCredentialID != "" || ao.ApplicationCredentialName != "":
		// An application credential carries its own scope.
	case env("OS_SYSTEM_SCOPE") == "all":
		ao.Scope = &gophercloud.AuthScope{System: true}
	case env("OS_PROJECT_ID", "OS_TENANT_ID") != "":
		ao.Scope = &gophercloud.AuthScope{ProjectID: env("OS_PROJECT_ID", "OS_TENANT_ID")}
	case env("OS_PROJECT_NAME", "OS_TENANT_NAME") != "":
		ao.Scope = &gophercloud.AuthScope{
			ProjectName: env("OS_PROJECT_NAME", "OS_TENANT_NAME"),
			DomainName:  env("OS_PROJECT_DOMAIN_NAME", "OS_DOMAIN_NAME"),
			DomainID:    env("OS_PROJECT_DOMAIN_ID", "OS_DOMAIN_ID"),
		}
	}
	iface := cfg.Interface
	if iface == "" {
		iface = env("OS_INTERFACE", "OS_ENDPOINT_TYPE")
	}
	region := cfg.Region
	if region == "" {
		region = env("OS_REGION_NAME")
	}
	tlsConfig := &tls.Config{}
	if ca := env("OS_CACERT"); ca != "" {
		pem, err := os.ReadFile(ca)
		if err != nil {
			return Credentials{}, fmt.Errorf("reading OS_CACERT: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return Credentials{}, fmt.Errorf("OS_CACERT %s holds no PEM certificate", ca)
		}
		tlsConfig.RootCAs = pool
	}
	if v, err := strconv.ParseBool(env("OS_INSECURE")); err == nil && v {
		tlsConfig.InsecureSkipVerify = true
	}
	if cert, key := env("OS_CERT"), env("OS_KEY"); cert != "" && key != "" {
		pair, err := tls.LoadX509KeyPair(cert, key)
		if err != nil {
			return Credentials{}, fmt.Errorf("loading OS_CERT/OS_KEY: %w", err)
		}
		tlsConfig.Certificates = []tls.Certificate{pair}
	}
	return Credentials{
		Auth:     ao,
		Endpoint: gophercloud.EndpointOpts{Region: region, Availability: availability(iface)},
		TLS:      tlsConfig,
		Source:   "OS_* environment variables",
	}, nil
}

func availability(iface string) gophercloud.Availability {
	switch strings.TrimSuffix(strings.ToLower(iface), "url") {
	case "internal":
		return gophercloud.AvailabilityInternal
	case "admin":
		return gophercloud.AvailabilityAdmin
	}
	return gophercloud.AvailabilityPublic
}
