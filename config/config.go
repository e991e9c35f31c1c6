// Package config loads, defaults and validates the exporter's YAML
// configuration. Decoding is strict: an unknown key is an error that names the
// key, its line and the keys allowed there, because a typo in a monitoring
// agent's config otherwise silently turns a check off.
package config

import (
	_ "embed"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"sort"
	"strconv"
	"strings"
	"time"

	"gopkg.in/yaml.v3"
)

// Config is the whole configuration file.
type Config struct {
	OpenStack OpenStack `yaml:"openstack"`
	Probe     Probe     `yaml:"probe"`
}

// OpenStack says how to reach Nova and which servers to watch.
type OpenStack struct {
	// Cloud names an entry of clouds.yaml; empty means $OS_CLOUD, and when
	// that is empty too, the OS_* environment variables.
	Cloud string `yaml:"cloud"`
	// Region overrides the region of the cloud entry or $OS_REGION_NAME.
	Region string `yaml:"region"`
	// Interface is the service catalog endpoint interface; empty means the
	// cloud entry's, $OS_INTERFACE, or else public.
	Interface string `yaml:"interface"`
	// Scope is "host" (only this hypervisor's servers) or "all".
	Scope string `yaml:"scope"`
	// Host is the Nova host name of this hypervisor in scope "host"; empty
	// means the machine's hostname, which is Nova's own default.
	Host string `yaml:"host"`
	// RefreshInterval is how often the inventory is refreshed.
	RefreshInterval time.Duration `yaml:"refresh_interval"`
	// FullRefreshInterval is how often a refresh lists every server instead
	// of only those changed since the last refresh.
	FullRefreshInterval time.Duration `yaml:"full_refresh_interval"`
	// Timeout bounds one whole refresh, every page included.
	Timeout time.Duration `yaml:"timeout"`
	// PageSize is the `limit` of each server list request.
	PageSize int `yaml:"page_size"`
	// CAFile is a PEM bundle to verify the API's TLS certificates with,
	// in addition to what clouds.yaml or $OS_CACERT name.
	CAFile string `yaml:"ca_file"`
	// Insecure turns TLS verification off. Logged loudly at start.
	Insecure bool `yaml:"insecure"`
}

// Probe holds the probers; ICMP is the only one.
type Probe struct {
	ICMP ICMP `yaml:"icmp"`
}

// ICMP configures the echo probes sent to the servers' addresses.
type ICMP struct {
	Enabled bool `yaml:"enabled"`
	// Engine is "shared" (one socket per address family for all targets)
	// or "pro-bing" (a short-lived pro-bing pinger per target and cycle).
	Engine string `yaml:"engine"`
	// Interval between the starts of two probe cycles.
	Interval time.Duration `yaml:"interval"`
	// Count is the number of echo requests per address and cycle.
	Count int `yaml:"count"`
	// Timeout is how long a reply is waited for after its request.
	Timeout time.Duration `yaml:"timeout"`
	// Mode is "privileged" (raw sockets, CAP_NET_RAW), "unprivileged"
	// (ICMP datagram sockets, net.ipv4.ping_group_range) or "auto" (raw
	// sockets where allowed, else datagram sockets).
	Mode string `yaml:"mode"`
	// Statuses are the Nova statuses whose servers are probed.
	Statuses []string `yaml:"statuses"`
	// AddressTypes are the OS-EXT-IPS:type values probed: fixed, floating.
	AddressTypes []string `yaml:"address_types"`
	// Networks limits probing to these Nova network names; empty means all.
	Networks []string `yaml:"networks"`
	// IPVersions are the IP versions probed: 4, 6.
	IPVersions []int `yaml:"ip_versions"`
	// MaxPacketsPerSecond caps the send rate so a large fleet is not hit
	// with one burst and replies do not overflow the socket buffer.
	MaxPacketsPerSecond int `yaml:"max_packets_per_second"`
	// OptOutMetadataKey names a server metadata key; a server whose value
	// for it is false, off, no, disabled or 0 is not probed.
	OptOutMetadataKey string `yaml:"opt_out_metadata_key"`
	// RTTBuckets are the classic histogram buckets of the RTT, in seconds.
	RTTBuckets []float64 `yaml:"rtt_buckets"`
	// Vantage chooses where each address is probed from: "host" (the
	// exporter's own network namespace), "ovn-metadata" (the OVN metadata
	// agent's ovnmeta-<network id> namespace of the address's network),
	// "dhcp" (qdhcp-<network id>), or "auto" (ovn-metadata where any
	// ovnmeta-* namespace exists, else dhcp where any qdhcp-* exists, else
	// host; decided again every cycle). Package targets applies it.
	Vantage string `yaml:"vantage"`
	// HostRoutableNetworks names the networks (Nova network names or
	// Neutron network ids) whose addresses are probed from the host
	// vantage whatever Vantage says: provider networks routable from the
	// hypervisor.
	HostRoutableNetworks []string `yaml:"host_routable_networks"`
	// NetnsDir is where the named network namespaces are (ip netns).
	NetnsDir string `yaml:"netns_dir"`
}

// Vantage modes of probe.icmp.vantage.
const (
	VantageAuto        = "auto"
	VantageHost        = "host"
	VantageOVNMetadata = "ovn-metadata"
	VantageDHCP        = "dhcp"
)

//go:embed defaults.yaml
var defaultsYAML []byte

// Default returns the configuration used for every key a file leaves out.
func Default() *Config {
	var c Config
	if err := yaml.Unmarshal(defaultsYAML, &c); err != nil {
		panic(fmt.Sprintf("config: embedded defaults are invalid: %v", err))
	}
	return &c
}

// Load reads and validates the configuration file at path.
func Load(path string) (*Config, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("reading config: %w", err)
	}
	c, err := Parse(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Parse decodes a configuration over the defaults and validates it.
func Parse(data []byte) (*Config, error) {
	c := Default()
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		return nil, fmt.Errorf("parsing YAML: %w", err)
	}
	lines := map[string]int{}
	if len(root.Content) > 0 {
		doc := root.Content[0]
		if doc.Kind != yaml.MappingNode && !isNull(doc) {
			return nil, fmt.Errorf("line %d: the configuration must be a mapping of sections (openstack, probe)", doc.Line)
		}
		// c holds the defaults still: they serve as examples.
		if err := checkKeys(doc, reflect.ValueOf(*c), "", lines); err != nil {
			return nil, err
		}
		if err := doc.Decode(c); err != nil {
			// checkKeys has tried every value already; this is a backstop.
			return nil, fmt.Errorf("decoding: %w", err)
		}
	}
	if err := c.validate(); err != nil {
		var ve *ValidationError
		if errors.As(err, &ve) {
			ve.Line = lines[ve.Key]
		}
		return nil, err
	}
	return c, nil
}

// checkKeys walks the YAML mapping against the struct's yaml tags, so that an
// unknown key is reported with its line and the keys allowed beside it, and
// tries each value against its field's type, so that a value of the wrong
// type is reported with its key, its line and what the key takes (yaml.v3's
// own message names neither the key nor what would do). def holds the
// defaults, whose values serve as examples.
func checkKeys(n *yaml.Node, def reflect.Value, prefix string, lines map[string]int) error {
	if n.Kind != yaml.MappingNode {
		return nil
	}
	t := def.Type()
	fields := map[string]int{}
	var allowed []string
	for i := 0; i < t.NumField(); i++ {
		name := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		fields[name] = i
		allowed = append(allowed, name)
	}
	sort.Strings(allowed)
	for i := 0; i+1 < len(n.Content); i += 2 {
		k, v := n.Content[i], n.Content[i+1]
		path := k.Value
		if prefix != "" {
			path = prefix + "." + k.Value
		}
		fi, ok := fields[k.Value]
		if !ok {
			where := "at the top level"
			if prefix != "" {
				where = "in " + prefix
			}
			return &ValidationError{Key: path, Line: k.Line,
				Msg: fmt.Sprintf("unknown key %q %s (allowed: %s)", k.Value, where, strings.Join(allowed, ", "))}
		}
		if _, dup := lines[path]; dup {
			return &ValidationError{Key: path, Line: k.Line, Msg: fmt.Sprintf("key %q is given twice", k.Value)}
		}
		lines[path] = k.Line
		fv := def.Field(fi)
		if fv.Kind() == reflect.Struct && fv.Type() != durationType {
			if v.Kind != yaml.MappingNode && !isNull(v) {
				return &ValidationError{Key: path, Line: v.Line, Msg: fmt.Sprintf("%s must be a mapping", path)}
			}
			if err := checkKeys(v, fv, path, lines); err != nil {
				return err
			}
			continue
		}
		if err := checkValue(v, fv, path); err != nil {
			return err
		}
	}
	return nil
}

var durationType = reflect.TypeOf(time.Duration(0))

func isNull(n *yaml.Node) bool { return n.Kind == yaml.ScalarNode && n.Tag == "!!null" }

// checkValue decodes v as the field's type would, and on failure says what
// the key takes. A list is tried element by element, to point at the wrong
// one.
func checkValue(v *yaml.Node, def reflect.Value, path string) error {
	t := def.Type()
	// yaml.v3 truncates a fraction given for a whole number (10.5 → 10).
	fits := func(n *yaml.Node, t reflect.Type) bool {
		return n.Decode(reflect.New(t).Interface()) == nil && !(t.Kind() == reflect.Int && n.Tag == "!!float")
	}
	bad := v
	if t.Kind() == reflect.Slice && v.Kind == yaml.SequenceNode {
		if i := slices.IndexFunc(v.Content, func(e *yaml.Node) bool { return !fits(e, t.Elem()) }); i >= 0 {
			bad = v.Content[i]
		}
	}
	if bad == v && fits(v, t) {
		return nil
	}
	return &ValidationError{Key: path, Line: bad.Line, Msg: "must be " + expected(def, path) + ", got " + describeNode(bad, t)}
}

// listExamples stand in for defaults that are empty lists.
var listExamples = map[string]string{"probe.icmp.networks": "[provider]", "probe.icmp.host_routable_networks": "[provider]"}

// expected says what a key of def's type takes, with the default (or an
// example) as illustration.
func expected(def reflect.Value, path string) string {
	switch t := def.Type(); {
	case t == durationType:
		return "a duration such as " + shortDuration(time.Duration(def.Int())) + " (a number with a unit: ms, s, m or h)"
	case t.Kind() == reflect.Bool:
		return "true or false"
	case t.Kind() == reflect.Int:
		return fmt.Sprintf("a whole number, e.g. %d", def.Int())
	case t.Kind() == reflect.String:
		return "a single value (text)"
	case t.Kind() == reflect.Slice:
		example := listExamples[path]
		if example == "" {
			var items []string
			for i := 0; i < def.Len() && i < 3; i++ {
				items = append(items, fmt.Sprint(def.Index(i).Interface()))
			}
			example = "[" + strings.Join(items, ", ") + "]"
		}
		what := "a list"
		switch t.Elem().Kind() {
		case reflect.Int:
			what = "a list of whole numbers"
		case reflect.Float64:
			what = "a list of numbers"
		}
		return what + ", e.g. " + example
	}
	return "a " + def.Type().String()
}

// describeNode shows what the file holds, shortened, with a hint for the
// usual mistake of a duration without its unit.
func describeNode(n *yaml.Node, t reflect.Type) string {
	switch n.Kind {
	case yaml.MappingNode:
		return "a mapping"
	case yaml.SequenceNode:
		return "a list"
	case yaml.AliasNode:
		return "an alias"
	}
	v := n.Value
	if len(v) > 40 {
		v = v[:40] + "..."
	}
	got := strconv.Quote(v)
	if t == durationType && (n.Tag == "!!int" || n.Tag == "!!float") {
		got += fmt.Sprintf(" (a number alone has no unit: write %ss for seconds)", n.Value)
	}
	return got
}

// shortDuration writes d in its largest whole unit: 1m, 10m, 2s, 500ms
// (time.Duration's String writes 1m0s).
func shortDuration(d time.Duration) string {
	for _, u := range []struct {
		unit time.Duration
		name string
	}{{time.Hour, "h"}, {time.Minute, "m"}, {time.Second, "s"}, {time.Millisecond, "ms"}} {
		if d >= u.unit && d%u.unit == 0 {
			return fmt.Sprintf("%d%s", d/u.unit, u.name)
		}
	}
	return d.String()
}

// ValidationError names the key at fault, its line (0 when the key was not
// in the file, i.e. a default is at fault) and what is allowed.
type ValidationError struct {
	Key  string
	Line int
	Msg  string
}

func (e *ValidationError) Error() string {
	if e.Line > 0 {
		return fmt.Sprintf("line %d: %s: %s", e.Line, e.Key, e.Msg)
	}
	return fmt.Sprintf("%s: %s", e.Key, e.Msg)
}

func invalid(key, format string, args ...any) error {
	return &ValidationError{Key: key, Msg: fmt.Sprintf(format, args...)}
}

func oneOf(key, value string, allowed ...string) error {
	if slices.Contains(allowed, value) {
		return nil
	}
	return invalid(key, "%q is not allowed (one of: %s)", value, strings.Join(allowed, ", "))
}

// MaxPacketsPerSecondLimit bounds probe.icmp.max_packets_per_second. At
// 100,000 echo requests a second 50,000 addresses are probed three times in
// 1.5 s; faster, the replies arrive quicker than one socket's receive buffer
// is drained and are lost as if the servers had not answered. The bound also
// keeps the pacing period (a second over the rate, times count) far from
// the zero a much larger rate would round it to.
const MaxPacketsPerSecondLimit = 100000

// KnownStatuses are the server statuses Nova's API can return.
var KnownStatuses = []string{
	"ACTIVE", "BUILD", "DELETED", "ERROR", "HARD_REBOOT", "MIGRATING", "PASSWORD",
	"PAUSED", "REBOOT", "REBUILD", "RESCUE", "RESIZE", "REVERT_RESIZE", "SHELVED",
	"SHELVED_OFFLOADED", "SHUTOFF", "SOFT_DELETED", "SUSPENDED", "UNKNOWN", "VERIFY_RESIZE",
}

func (c *Config) validate() error {
	o := &c.OpenStack
	if err := oneOf("openstack.interface", o.Interface, "", "public", "internal", "admin"); err != nil {
		return err
	}
	if err := oneOf("openstack.scope", o.Scope, "host", "all"); err != nil {
		return err
	}
	if o.Scope == "all" && o.Host != "" {
		return invalid("openstack.host", "is only used with scope host; remove it or set scope: host")
	}
	if o.RefreshInterval < time.Second {
		return invalid("openstack.refresh_interval", "must be at least 1s, got %s", o.RefreshInterval)
	}
	if o.Timeout <= 0 {
		return invalid("openstack.timeout", "must be positive, got %s", o.Timeout)
	}
	if o.FullRefreshInterval < o.RefreshInterval {
		return invalid("openstack.full_refresh_interval", "must be at least refresh_interval (%s), got %s", o.RefreshInterval, o.FullRefreshInterval)
	}
	if o.PageSize < 1 || o.PageSize > 10000 {
		return invalid("openstack.page_size", "must be between 1 and 10000, got %d", o.PageSize)
	}
	if o.CAFile != "" {
		if _, err := os.Stat(o.CAFile); err != nil {
			return invalid("openstack.ca_file", "cannot be read: %v", err)
		}
	}
	return c.Probe.ICMP.validate()
}

func (p *ICMP) validate() error {
	if err := oneOf("probe.icmp.engine", p.Engine, "shared", "pro-bing"); err != nil {
		return err
	}
	if err := oneOf("probe.icmp.mode", p.Mode, "privileged", "unprivileged", "auto"); err != nil {
		return err
	}
	if p.Interval < 100*time.Millisecond {
		return invalid("probe.icmp.interval", "must be at least 100ms, got %s", p.Interval)
	}
	if p.Count < 1 || p.Count > 100 {
		return invalid("probe.icmp.count", "must be between 1 and 100, got %d", p.Count)
	}
	if p.Timeout <= 0 || p.Timeout >= p.Interval {
		return invalid("probe.icmp.timeout", "must be positive and shorter than interval (%s), got %s", p.Interval, p.Timeout)
	}
	if p.MaxPacketsPerSecond < 1 || p.MaxPacketsPerSecond > MaxPacketsPerSecondLimit {
		return invalid("probe.icmp.max_packets_per_second", "must be between 1 and %d, got %d", MaxPacketsPerSecondLimit, p.MaxPacketsPerSecond)
	}
	if len(p.Statuses) == 0 {
		return invalid("probe.icmp.statuses", "must name at least one status (e.g. ACTIVE)")
	}
	for _, s := range p.Statuses {
		if err := oneOf("probe.icmp.statuses", s, KnownStatuses...); err != nil {
			return err
		}
	}
	if len(p.AddressTypes) == 0 {
		return invalid("probe.icmp.address_types", "must name at least one of fixed, floating")
	}
	for _, t := range p.AddressTypes {
		if err := oneOf("probe.icmp.address_types", t, "fixed", "floating"); err != nil {
			return err
		}
	}
	if len(p.IPVersions) == 0 {
		return invalid("probe.icmp.ip_versions", "must name at least one of 4, 6")
	}
	for _, v := range p.IPVersions {
		if v != 4 && v != 6 {
			return invalid("probe.icmp.ip_versions", "%d is not allowed (one of: 4, 6)", v)
		}
	}
	if len(p.RTTBuckets) == 0 {
		return invalid("probe.icmp.rtt_buckets", "must have at least one bucket")
	}
	if err := oneOf("probe.icmp.vantage", p.Vantage, VantageAuto, VantageHost, VantageOVNMetadata, VantageDHCP); err != nil {
		return err
	}
	seen := map[string]bool{}
	for _, n := range p.HostRoutableNetworks {
		if strings.TrimSpace(n) == "" {
			return invalid("probe.icmp.host_routable_networks", "has an empty entry; each is a Nova network name or a Neutron network id")
		}
		if seen[n] {
			return invalid("probe.icmp.host_routable_networks", "names %q twice", n)
		}
		seen[n] = true
	}
	if !filepath.IsAbs(p.NetnsDir) || filepath.Clean(p.NetnsDir) != p.NetnsDir {
		return invalid("probe.icmp.netns_dir", "must be an absolute, clean path such as /run/netns, got %q", p.NetnsDir)
	}
	for i, b := range p.RTTBuckets {
		if b <= 0 || (i > 0 && b <= p.RTTBuckets[i-1]) {
			return invalid("probe.icmp.rtt_buckets", "must be positive and strictly increasing, got %v", p.RTTBuckets)
		}
	}
	return nil
}
