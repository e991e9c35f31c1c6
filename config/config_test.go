package config

import (
	"errors"
	"os"
	"reflect"
	"strings"
	"testing"
	"time"

	"gopkg.in/yaml.v3"
)

func TestDefaults(t *testing.T) {
	c, err := Parse(nil)
	if err != nil {
		t.Fatalf("empty config: %v", err)
	}
	if c.OpenStack.Scope != "host" || c.OpenStack.RefreshInterval != time.Minute || c.OpenStack.PageSize != 1000 {
		t.Errorf("openstack defaults: %+v", c.OpenStack)
	}
	p := c.Probe.ICMP
	if !p.Enabled || p.Interval != 15*time.Second || p.Count != 3 || p.Mode != "auto" || p.Engine != "shared" {
		t.Errorf("probe defaults: %+v", p)
	}
	if !reflect.DeepEqual(p.Statuses, []string{"ACTIVE"}) || !reflect.DeepEqual(p.IPVersions, []int{4, 6}) {
		t.Errorf("probe selection defaults: %+v", p)
	}
}

// The example file documents every key with its default: parsing it must
// give exactly the defaults, and it must name every key the structs have.
func TestExampleIsDefaultsAndComplete(t *testing.T) {
	data, err := os.ReadFile("../config.example.yaml")
	if err != nil {
		t.Fatal(err)
	}
	c, err := Parse(data)
	if err != nil {
		t.Fatalf("config.example.yaml: %v", err)
	}
	if !reflect.DeepEqual(c, Default()) {
		t.Errorf("config.example.yaml differs from the defaults:\n%+v\n%+v", c, Default())
	}
	var root yaml.Node
	if err := yaml.Unmarshal(data, &root); err != nil {
		t.Fatal(err)
	}
	lines := map[string]int{}
	if err := checkKeys(root.Content[0], reflect.ValueOf(*Default()), "", lines); err != nil {
		t.Fatal(err)
	}
	for _, key := range allKeys(reflect.TypeOf(Config{}), "") {
		if _, ok := lines[key]; !ok {
			t.Errorf("config.example.yaml does not document %s", key)
		}
	}
}

func allKeys(t reflect.Type, prefix string) []string {
	var keys []string
	for i := 0; i < t.NumField(); i++ {
		name := strings.Split(t.Field(i).Tag.Get("yaml"), ",")[0]
		if prefix != "" {
			name = prefix + "." + name
		}
		keys = append(keys, name)
		if ft := t.Field(i).Type; ft.Kind() == reflect.Struct && ft != reflect.TypeOf(time.Duration(0)) {
			keys = append(keys, allKeys(ft, name)...)
		}
	}
	return keys
}

func TestOverrides(t *testing.T) {
	c, err := Parse([]byte(`
openstack:
  cloud: prod
  scope: all
  refresh_interval: 2m
  full_refresh_interval: 30m
probe:
  icmp:
    count: 1
    interval: 30s
    networks: [provider]
    ip_versions: [4]
`))
	if err != nil {
		t.Fatal(err)
	}
	if c.OpenStack.Cloud != "prod" || c.OpenStack.Scope != "all" || c.OpenStack.RefreshInterval != 2*time.Minute {
		t.Errorf("openstack: %+v", c.OpenStack)
	}
	if c.Probe.ICMP.Count != 1 || c.Probe.ICMP.Timeout != 2*time.Second || !reflect.DeepEqual(c.Probe.ICMP.Networks, []string{"provider"}) {
		t.Errorf("probe: %+v", c.Probe.ICMP)
	}
}

func TestErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string // substrings of the error
	}{
		{"unknown top key", "openstak:\n  scope: all\n", []string{"line 1", `unknown key "openstak"`, "allowed: openstack, probe"}},
		{"unknown nested key", "probe:\n  icmp:\n    intervall: 5s\n", []string{"line 3", "probe.icmp.intervall", "allowed:", "interval"}},
		{"duplicate key", "openstack:\n  scope: all\n  scope: host\n", []string{"line 3"}},
		{"section not a mapping", "openstack: yes\n", []string{"line 1", "openstack must be a mapping"}},
		{"not a mapping", "- a\n- b\n", []string{"line 1", "mapping"}},
		{"bad duration", "openstack:\n  timeout: soon\n", []string{"line 2", "openstack.timeout", "a duration such as 30s", `got "soon"`}},
		{"bad type", "probe:\n  icmp:\n    count: three\n", []string{"line 3", "probe.icmp.count", "a whole number, e.g. 3", `got "three"`}},
		{"bad scope", "openstack:\n  scope: region\n", []string{"line 2", "openstack.scope", `"region"`, "host, all"}},
		{"host with scope all", "openstack:\n  scope: all\n  host: cmp1\n", []string{"line 3", "openstack.host"}},
		{"bad interface", "openstack:\n  interface: private\n", []string{"openstack.interface", "public, internal, admin"}},
		{"refresh too short", "openstack:\n  refresh_interval: 10ms\n", []string{"openstack.refresh_interval", "at least 1s"}},
		{"full shorter than refresh", "openstack:\n  full_refresh_interval: 30s\n", []string{"openstack.full_refresh_interval"}},
		{"zero timeout", "openstack:\n  timeout: 0s\n", []string{"openstack.timeout", "positive"}},
		{"page size", "openstack:\n  page_size: 0\n", []string{"openstack.page_size", "between 1 and 10000"}},
		{"missing CA", "openstack:\n  ca_file: /nonexistent/ca.pem\n", []string{"openstack.ca_file", "cannot be read"}},
		{"bad engine", "probe:\n  icmp:\n    engine: fping\n", []string{"probe.icmp.engine", "shared, pro-bing"}},
		{"bad mode", "probe:\n  icmp:\n    mode: root\n", []string{"probe.icmp.mode", "privileged, unprivileged"}},
		{"count zero", "probe:\n  icmp:\n    count: 0\n", []string{"probe.icmp.count", "between 1 and 100"}},
		{"timeout over interval", "probe:\n  icmp:\n    interval: 1s\n    timeout: 2s\n", []string{"line 4", "probe.icmp.timeout", "shorter than interval"}},
		{"interval too short", "probe:\n  icmp:\n    interval: 10ms\n    timeout: 5ms\n", []string{"probe.icmp.interval"}},
		{"no statuses", "probe:\n  icmp:\n    statuses: []\n", []string{"probe.icmp.statuses"}},
		{"bad status", "probe:\n  icmp:\n    statuses: [RUNNING]\n", []string{"probe.icmp.statuses", `"RUNNING"`, "ACTIVE"}},
		{"bad address type", "probe:\n  icmp:\n    address_types: [public]\n", []string{"probe.icmp.address_types", "fixed, floating"}},
		{"no address types", "probe:\n  icmp:\n    address_types: []\n", []string{"probe.icmp.address_types"}},
		{"bad ip version", "probe:\n  icmp:\n    ip_versions: [5]\n", []string{"probe.icmp.ip_versions", "4, 6"}},
		{"no ip versions", "probe:\n  icmp:\n    ip_versions: []\n", []string{"probe.icmp.ip_versions"}},
		{"rate", "probe:\n  icmp:\n    max_packets_per_second: 0\n", []string{"line 3", "probe.icmp.max_packets_per_second", "between 1 and 100000"}},
		// A rate this high would round the pacing period to zero.
		{"rate too high", "probe:\n  icmp:\n    max_packets_per_second: 2000000000\n", []string{"line 3", "probe.icmp.max_packets_per_second", "between 1 and 100000", "got 2000000000"}},
		{"buckets unsorted", "probe:\n  icmp:\n    rtt_buckets: [0.1, 0.01]\n", []string{"probe.icmp.rtt_buckets", "increasing"}},
		{"buckets empty", "probe:\n  icmp:\n    rtt_buckets: []\n", []string{"probe.icmp.rtt_buckets"}},
		{"invalid yaml", "openstack: [\n", []string{"parsing YAML"}},
		{"bad vantage", "probe:\n  icmp:\n    vantage: qrouter\n", []string{"line 3", "probe.icmp.vantage", `"qrouter"`, "auto, host, ovn-metadata, dhcp"}},
		{"routable not a list", "probe:\n  icmp:\n    host_routable_networks: provider\n", []string{"line 3", "probe.icmp.host_routable_networks", "a list, e.g. [provider]"}},
		{"routable empty entry", "probe:\n  icmp:\n    host_routable_networks: [provider, \"\"]\n", []string{"line 3", "probe.icmp.host_routable_networks", "empty entry"}},
		{"routable twice", "probe:\n  icmp:\n    host_routable_networks: [public, public]\n", []string{"probe.icmp.host_routable_networks", `"public" twice`}},
		{"relative netns dir", "probe:\n  icmp:\n    netns_dir: run/netns\n", []string{"line 3", "probe.icmp.netns_dir", "absolute"}},
		{"empty netns dir", "probe:\n  icmp:\n    netns_dir: \"\"\n", []string{"probe.icmp.netns_dir", "absolute"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
		})
	}
}

// A value of the wrong type names its key, its line and what the key
// takes, for every type the configuration has.
func TestTypeErrors(t *testing.T) {
	for _, tc := range []struct {
		name, yaml string
		want       []string
	}{
		{"duration as a number", "openstack:\n  refresh_interval: 60\n",
			[]string{"line 2: openstack.refresh_interval: must be a duration such as 1m", "ms, s, m or h", `got "60"`, "write 60s"}},
		{"duration as a float", "probe:\n  icmp:\n    timeout: 1.5\n",
			[]string{"line 3: probe.icmp.timeout: must be a duration such as 2s", "write 1.5s"}},
		{"duration as a word", "openstack:\n  full_refresh_interval: hourly\n",
			[]string{"line 2: openstack.full_refresh_interval: must be a duration such as 10m", `got "hourly"`}},
		{"duration as a list", "probe:\n  icmp:\n    interval: [15s]\n",
			[]string{"line 3: probe.icmp.interval: must be a duration such as 15s", "got a list"}},
		{"int as a word", "probe:\n  icmp:\n    count: abc\n",
			[]string{"line 3: probe.icmp.count: must be a whole number, e.g. 3", `got "abc"`}},
		{"int as a fraction", "openstack:\n  page_size: 10.5\n",
			[]string{"line 2: openstack.page_size: must be a whole number, e.g. 1000", `got "10.5"`}},
		{"int as a mapping", "probe:\n  icmp:\n    max_packets_per_second: {a: 1}\n",
			[]string{"line 3: probe.icmp.max_packets_per_second: must be a whole number, e.g. 5000", "got a mapping"}},
		{"bool as a word", "probe:\n  icmp:\n    enabled: maybe\n",
			[]string{"line 3: probe.icmp.enabled: must be true or false", `got "maybe"`}},
		{"bool as a number", "openstack:\n  insecure: 2\n",
			[]string{"line 2: openstack.insecure: must be true or false", `got "2"`}},
		{"string as a list", "openstack:\n  cloud: [a, b]\n",
			[]string{"line 2: openstack.cloud: must be a single value (text)", "got a list"}},
		{"string as a mapping", "probe:\n  icmp:\n    opt_out_metadata_key: {k: v}\n",
			[]string{"line 3: probe.icmp.opt_out_metadata_key: must be a single value", "got a mapping"}},
		{"list as a scalar", "probe:\n  icmp:\n    statuses: ACTIVE\n",
			[]string{"line 3: probe.icmp.statuses: must be a list, e.g. [ACTIVE]", `got "ACTIVE"`}},
		{"empty-default list as a scalar", "probe:\n  icmp:\n    networks: provider\n",
			[]string{"line 3: probe.icmp.networks: must be a list, e.g. [provider]"}},
		{"list element of the wrong type", "probe:\n  icmp:\n    statuses:\n      - ACTIVE\n      - {x: 1}\n",
			[]string{"line 5: probe.icmp.statuses: must be a list, e.g. [ACTIVE]", "got a mapping"}},
		{"int list element", "probe:\n  icmp:\n    ip_versions: [4, six]\n",
			[]string{"line 3: probe.icmp.ip_versions: must be a list of whole numbers, e.g. [4, 6]", `got "six"`}},
		{"int list as a scalar", "probe:\n  icmp:\n    ip_versions: 4\n",
			[]string{"probe.icmp.ip_versions: must be a list of whole numbers", `got "4"`}},
		{"float list element", "probe:\n  icmp:\n    rtt_buckets:\n      - 0.1\n      - fast\n",
			[]string{"line 5: probe.icmp.rtt_buckets: must be a list of numbers, e.g. [0.0002, 0.0005, 0.001]", `got "fast"`}},
		{"long value shortened", "openstack:\n  timeout: " + strings.Repeat("x", 100) + "\n",
			[]string{"openstack.timeout", `..."`}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Parse([]byte(tc.yaml))
			if err == nil {
				t.Fatal("no error")
			}
			var ve *ValidationError
			if !errors.As(err, &ve) {
				t.Errorf("error %T %q is not a ValidationError", err, err)
			}
			for _, w := range tc.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error %q does not contain %q", err, w)
				}
			}
			if strings.Contains(err.Error(), "cannot unmarshal") {
				t.Errorf("error %q is yaml.v3's own", err)
			}
		})
	}
}

// Values yaml.v3 takes for each type are still taken.
func TestTypesAccepted(t *testing.T) {
	c, err := Parse([]byte("openstack:\n  refresh_interval: 90s\n  insecure: false\n  cloud: 123\nprobe:\n  icmp:\n    count: 5\n    interval: 1m30s\n    rtt_buckets: [1, 2.5]\n    networks: []\n    enabled: yes\n"))
	if err != nil {
		t.Fatal(err)
	}
	if c.OpenStack.RefreshInterval != 90*time.Second || c.OpenStack.Cloud != "123" || c.Probe.ICMP.Count != 5 ||
		c.Probe.ICMP.Interval != 90*time.Second || !reflect.DeepEqual(c.Probe.ICMP.RTTBuckets, []float64{1, 2.5}) || !c.Probe.ICMP.Enabled {
		t.Errorf("parsed %+v", c)
	}
}

func TestLoadNamesFile(t *testing.T) {
	_, err := Load("/nonexistent/config.yaml")
	if err == nil || !strings.Contains(err.Error(), "/nonexistent/config.yaml") {
		t.Errorf("error %v does not name the file", err)
	}
	path := t.TempDir() + "/c.yaml"
	if err := os.WriteFile(path, []byte("probe:\n  icmp:\n    count: -1\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	_, err = Load(path)
	if err == nil || !strings.Contains(err.Error(), path+": line 3: probe.icmp.count") {
		t.Errorf("error %v does not name file, line and key", err)
	}
}

// FuzzParse: whatever the file holds, Parse returns a valid configuration
// or an error, never panics.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"", "openstack:\n  scope: all\n", "probe:\n  icmp:\n    count: 3\n    statuses: [ACTIVE, ERROR]\n",
		"openstack: [\n", "probe:\n  icmp:\n    rtt_buckets: [0.1, 0.01]\n", "- a\n- b\n", "openstack:\n  timeout: 1h\n  page_size: 7\n",
		"&a [*a]", "probe: {icmp: {interval: 1s, timeout: 999ms}}",
	} {
		f.Add([]byte(seed))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(data)
		if err != nil {
			return
		}
		if err := c.validate(); err != nil {
			t.Fatalf("Parse accepted an invalid configuration: %v", err)
		}
	})
}
