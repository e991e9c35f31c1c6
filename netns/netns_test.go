package netns

import (
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestValidName(t *testing.T) {
	for _, ok := range []string{"ovnmeta-0b6c4e8e-54c8-4b7d-9b0e-2f1b6f0b7a11", "qdhcp-x", "a.b", "..a"} {
		if err := ValidName(ok); err != nil {
			t.Errorf("%q rejected: %v", ok, err)
		}
	}
	for _, bad := range []string{"", ".", "..", "../etc", "a/b", "/abs", "a\x00b", strings.Repeat("x", 256)} {
		if err := ValidName(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
		if _, err := Path("/run/netns", bad); err == nil {
			t.Errorf("Path accepted %q", bad)
		}
		if err := Do("/run/netns", bad, func() error { t.Error("fn ran"); return nil }); err == nil {
			t.Errorf("Do accepted %q", bad)
		}
	}
}

func TestList(t *testing.T) {
	dir := t.TempDir()
	for _, n := range []string{"qdhcp-b", "ovnmeta-a"} {
		if err := os.WriteFile(filepath.Join(dir, n), nil, 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Mkdir(filepath.Join(dir, "subdir"), 0o700); err != nil {
		t.Fatal(err)
	}
	got, err := List(dir)
	if err != nil || !slices.Equal(got, []string{"ovnmeta-a", "qdhcp-b"}) {
		t.Errorf("List = %v, %v", got, err)
	}
	got, err = List(filepath.Join(dir, "missing"))
	if err != nil || len(got) != 0 {
		t.Errorf("List of a missing dir = %v, %v; want nothing, no error", got, err)
	}
}

func TestIdentityOfMissing(t *testing.T) {
	_, err := Identity(t.TempDir(), "gone")
	if !errors.Is(err, ErrNotExist) {
		t.Errorf("Identity of a missing namespace: %v, want ErrNotExist", err)
	}
	err = Do(t.TempDir(), "gone", func() error { t.Error("fn ran"); return nil })
	if !errors.Is(err, ErrNotExist) {
		t.Errorf("Do in a missing namespace: %v, want ErrNotExist", err)
	}
}

func TestPrefixes(t *testing.T) {
	_, n4, _ := net.ParseCIDR("198.18.7.2/24")
	n4.IP = net.ParseIP("198.18.7.2") // 16-byte form, 4-byte mask
	_, n6, _ := net.ParseCIDR("2001:2::5/64")
	n6.IP = net.ParseIP("2001:2::5")
	mapped := &net.IPNet{IP: net.ParseIP("169.254.169.254"), Mask: net.CIDRMask(128, 128)}
	got := prefixes([]net.Addr{n4, n6, mapped, &net.UDPAddr{}})
	want := []netip.Prefix{netip.MustParsePrefix("198.18.7.2/24"), netip.MustParsePrefix("2001:2::5/64"),
		netip.MustParsePrefix("169.254.169.254/32")}
	if !slices.Equal(got, want) {
		t.Errorf("prefixes = %v, want %v", got, want)
	}
}

func TestPrivilegesMessage(t *testing.T) {
	eff, err := parseCapEff("Name:\tx\nCapInh:\t0000000000000000\nCapEff:\t0000000000202000\n")
	if err != nil || eff != 1<<13|1<<21 {
		t.Fatalf("parseCapEff = %x, %v", eff, err)
	}
	if m := (Privileges{SysAdmin: true, NetRaw: true}).Message(); m != "" {
		t.Errorf("nothing missing, message %q", m)
	}
	m := Privileges{NetRaw: true}.Message()
	for _, want := range []string{"CAP_SYS_ADMIN", "no_privilege", "AmbientCapabilities", "SYS_ADMIN", "HostToContainer"} {
		if !strings.Contains(m, want) {
			t.Errorf("message lacks %q: %s", want, m)
		}
	}
	if strings.Contains(m, "lacks CAP_SYS_ADMIN (to enter network namespaces) and CAP_NET_RAW") {
		t.Errorf("message claims CAP_NET_RAW is missing: %s", m)
	}
	if m := (Privileges{SysAdmin: true}).Message(); !strings.Contains(m, "CAP_NET_RAW (for raw") {
		t.Errorf("message does not name CAP_NET_RAW: %s", m)
	}
}
