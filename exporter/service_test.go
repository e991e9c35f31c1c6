package exporter

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/gophercloud/gophercloud/v2"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/inventory"
)

// A reload rebuilds the client when any credential changes, a rotated
// secret or a new CA included, and only then.
func TestCredentialsIdentity(t *testing.T) {
	base := func() *inventory.Credentials {
		c := &inventory.Credentials{
			Auth: gophercloud.AuthOptions{IdentityEndpoint: "https://keystone.example/v3", Username: "exporter", Password: "pw-1",
				DomainName: "Default", Scope: &gophercloud.AuthScope{ProjectName: "admin", DomainName: "Default"}},
			Endpoint: gophercloud.EndpointOpts{Region: "RegionOne", Availability: gophercloud.AvailabilityPublic},
		}
		return c
	}
	ref := base()
	if !sameCredentials(ref, base()) {
		t.Fatal("the same credentials are told apart")
	}
	pool := x509.NewCertPool()
	pool.AddCert(&x509.Certificate{Raw: []byte("not really a certificate"), RawSubject: []byte("ca")})
	for name, change := range map[string]func(*inventory.Credentials){
		"password":     func(c *inventory.Credentials) { c.Auth.Password = "pw-2" },
		"app secret":   func(c *inventory.Credentials) { c.Auth.ApplicationCredentialSecret = "s" },
		"project":      func(c *inventory.Credentials) { c.Auth.Scope.ProjectName = "other" },
		"no scope":     func(c *inventory.Credentials) { c.Auth.Scope = nil },
		"region":       func(c *inventory.Credentials) { c.Endpoint.Region = "RegionTwo" },
		"auth URL":     func(c *inventory.Credentials) { c.Auth.IdentityEndpoint = "https://other.example/v3" },
		"moved letter": func(c *inventory.Credentials) { c.Auth.Username, c.Auth.Password = "exporterp", "w-1" },
		"CA":           func(c *inventory.Credentials) { c.TLS = &tls.Config{RootCAs: pool} },
	} {
		c := base()
		change(c)
		if sameCredentials(ref, c) {
			t.Errorf("a change of %s is not seen", name)
		}
	}
}
