// Package e2e runs the built exporter for real: in a hypervisor namespace
// with no default route, against the real Keystone and Nova API (served in
// that namespace), probing VMs that live in other namespaces, scraped by a
// real Prometheus whose alerts reach a real Alertmanager. Its tests need
// root and Debian's packages: they carry the build tag "lab".
package e2e
