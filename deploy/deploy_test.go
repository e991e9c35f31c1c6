// Package deploy holds the deployment files (systemd, Kubernetes, Prometheus
// scrape configs); its tests check them, and the Dockerfile at the root,
// against the real binary and the real schemas.
package deploy

import (
	"bytes"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/moby/buildkit/frontend/dockerfile/parser"
	monitoringv1 "github.com/prometheus-operator/prometheus-operator/pkg/apis/monitoring/v1"
	appsv1 "k8s.io/api/apps/v1"
	corev1 "k8s.io/api/core/v1"
	"sigs.k8s.io/yaml"

	"github.com/openstack-vm-exporter/openstack-vm-exporter/alerts"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/config"
	"github.com/openstack-vm-exporter/openstack-vm-exporter/internal/testenv"
)

var root = ".."

func TestMain(m *testing.M) { os.Exit(testenv.Main(m)) }

// binary is the built exporter.
func binary(t *testing.T) string { return testenv.Binary(t) }

// flagsOf lists every long flag the binary accepts, from --help-long.
func flagsOf(t *testing.T, bin string) map[string]bool {
	t.Helper()
	out, _ := exec.Command(bin, "--help-long").CombinedOutput()
	flags := map[string]bool{}
	for _, m := range regexp.MustCompile(`--(?:\[no-\])?([a-z][a-z0-9.-]+)`).FindAllStringSubmatch(string(out), -1) {
		flags[m[1]] = true
	}
	if !flags["config.file"] || !flags["web.listen-address"] {
		t.Fatalf("could not read the binary's flags:\n%s", out)
	}
	return flags
}

func checkFlags(t *testing.T, where string, args []string, flags map[string]bool) {
	t.Helper()
	for _, a := range args {
		if !strings.HasPrefix(a, "--") {
			continue
		}
		name := strings.SplitN(strings.TrimPrefix(a, "--"), "=", 2)[0]
		if !flags[name] {
			t.Errorf("%s passes --%s, which the binary does not have", where, name)
		}
	}
}

// dockerStage is one stage of the Dockerfile.
type dockerStage struct {
	from   string
	instrs map[string][]string // instruction → arguments joined
}

// parseDockerfile reads the Dockerfile's stages and its go build line.
func parseDockerfile(t *testing.T) (stages []*dockerStage, goBuild string) {
	t.Helper()
	f, err := os.Open(filepath.Join(root, "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	res, err := parser.Parse(f)
	if err != nil {
		t.Fatal(err)
	}
	for _, n := range res.AST.Children {
		instr := strings.ToLower(n.Value)
		var args []string
		for a := n.Next; a != nil; a = a.Next {
			args = append(args, a.Value)
		}
		if instr == "from" {
			stages = append(stages, &dockerStage{from: args[0], instrs: map[string][]string{}})
			continue
		}
		if len(stages) == 0 {
			continue
		}
		s := stages[len(stages)-1]
		s.instrs[instr] = append(s.instrs[instr], strings.Join(args, " "))
		if instr == "run" && strings.Contains(n.Original, "go build") {
			goBuild = strings.Join(args, " ")
		}
		if instr == "entrypoint" || instr == "cmd" {
			if !n.Attributes["json"] {
				t.Errorf("%s is not in exec (JSON) form: signals would not reach the exporter", strings.ToUpper(instr))
			}
		}
	}
	if goBuild == "" {
		t.Fatal("no go build line in the Dockerfile")
	}
	return stages, goBuild
}

func TestDockerfile(t *testing.T) {
	stages, goBuild := parseDockerfile(t)
	if len(stages) != 2 {
		t.Fatalf("%d stages, want a build and a runtime stage", len(stages))
	}
	final := stages[1]
	if !strings.Contains(final.from, "distroless") && !strings.Contains(final.from, "scratch") {
		t.Errorf("runtime image %q is not minimal", final.from)
	}
	if u := final.instrs["user"]; len(u) != 1 || strings.HasPrefix(u[0], "0") || strings.HasPrefix(u[0], "root") {
		t.Errorf("runtime USER %v is not an unprivileged user", u)
	}
	if e := final.instrs["expose"]; len(e) != 1 || e[0] != "9735" {
		t.Errorf("EXPOSE %v, want the default port 9735", e)
	}
	if c := strings.Join(final.instrs["copy"], " "); !strings.Contains(c, "config.example.yaml") {
		t.Errorf("config.example.yaml is not copied as the default config: %v", c)
	}
	if !strings.Contains(strings.Join(stages[0].instrs["run"], " "), "setcap cap_net_raw+ep") {
		t.Error("the binary gets no CAP_NET_RAW file capability")
	}
	bin := binary(t)
	flags := flagsOf(t, bin)
	entry := strings.Join(final.instrs["entrypoint"], " ") + " " + strings.Join(final.instrs["cmd"], " ")
	checkFlags(t, "Dockerfile ENTRYPOINT/CMD", strings.Fields(entry), flags)
	if !strings.Contains(entry, "--config.file=/etc/openstack-vm-exporter/config.yaml") {
		t.Errorf("CMD does not use the copied config: %s", entry)
	}

	// The Makefile builds the same way.
	mk, _ := os.ReadFile(filepath.Join(root, "Makefile"))
	if !bytes.Contains(mk, []byte("-trimpath -tags netgo,osusergo -buildvcs=false")) || !strings.Contains(goBuild, "-trimpath -tags netgo,osusergo -buildvcs=false") {
		t.Error("the Dockerfile and the Makefile build differently")
	}
}

// The build context leaves out the history and the build output: the image
// builds from the sources alone, and a large context slows every build.
func TestDockerignore(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(root, ".dockerignore"))
	if err != nil {
		t.Fatal(err)
	}
	lines := map[string]bool{}
	for _, l := range strings.Split(string(b), "\n") {
		lines[strings.TrimSpace(l)] = true
	}
	for _, want := range []string{".git", "dist/", "/openstack-vm-exporter"} {
		if !lines[want] {
			t.Errorf(".dockerignore does not exclude %s", want)
		}
	}
}

// splitYAML splits a multi-document YAML file.
func splitYAML(t *testing.T, path string) [][]byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var docs [][]byte
	for _, d := range regexp.MustCompile(`(?m)^---\s*$`).Split(string(b), -1) {
		if strings.TrimSpace(regexp.MustCompile(`(?m)^#.*$`).ReplaceAllString(d, "")) != "" {
			docs = append(docs, []byte(d))
		}
	}
	return docs
}

func TestKubernetesManifests(t *testing.T) {
	flags := flagsOf(t, binary(t))
	kinds := map[string]int{}
	for _, file := range []string{"kubernetes/daemonset.yaml", "kubernetes/servicemonitor.yaml", "kubernetes/prometheusrule.yaml"} {
		for _, doc := range splitYAML(t, file) {
			var meta struct{ Kind string }
			if err := yaml.Unmarshal(doc, &meta); err != nil {
				t.Fatalf("%s: %v", file, err)
			}
			kinds[meta.Kind]++
			// Strict decoding into the API types: an unknown or misplaced
			// field is an error, as it is for the API server.
			var obj any
			switch meta.Kind {
			case "DaemonSet":
				ds := &appsv1.DaemonSet{}
				obj = ds
				if err := yaml.UnmarshalStrict(doc, ds); err != nil {
					t.Fatalf("%s DaemonSet: %v", file, err)
				}
				spec := ds.Spec.Template.Spec
				if !spec.HostNetwork {
					t.Error("DaemonSet without host network: ICMP would leave from the pod, not the hypervisor")
				}
				c := spec.Containers[0]
				checkFlags(t, "DaemonSet args", c.Args, flags)
				// NET_RAW for raw sockets, SYS_ADMIN to enter the Neutron
				// namespaces, nothing else.
				if c.SecurityContext == nil || c.SecurityContext.Capabilities == nil ||
					fmt.Sprint(c.SecurityContext.Capabilities.Add) != "[NET_RAW SYS_ADMIN]" ||
					fmt.Sprint(c.SecurityContext.Capabilities.Drop) != "[ALL]" {
					t.Errorf("container capabilities %+v, want all dropped but NET_RAW and SYS_ADMIN", c.SecurityContext)
				}
				netnsMounted := false
				for _, m := range c.VolumeMounts {
					if m.MountPath != "/run/netns" {
						continue
					}
					for _, v := range spec.Volumes {
						if v.Name == m.Name && v.HostPath != nil && v.HostPath.Path == "/run/netns" &&
							m.MountPropagation != nil && *m.MountPropagation == corev1.MountPropagationHostToContainer {
							netnsMounted = true
						}
					}
				}
				if !netnsMounted {
					t.Error("the node's /run/netns is not mounted at /run/netns with HostToContainer propagation: " +
						"namespaces the agents create after the pod started would stay invisible")
				}
				if !strings.Contains(strings.Join(c.Args, " "), "--openstack.host=$(NODE_NAME)") {
					t.Error("the node name is not passed as the Nova host")
				}
				if ds.Spec.Selector == nil || ds.Spec.Selector.MatchLabels["app.kubernetes.io/name"] != ds.Spec.Template.Labels["app.kubernetes.io/name"] {
					t.Error("selector does not match the pod template")
				}
				if want := ":v" + changelogVersion(t); !strings.HasSuffix(c.Image, want) {
					t.Errorf("DaemonSet image %s, want the released version (tag %s, CHANGELOG.md)", c.Image, want)
				}
			case "ConfigMap":
				cm := &corev1.ConfigMap{}
				obj = cm
				if err := yaml.UnmarshalStrict(doc, cm); err != nil {
					t.Fatalf("%s ConfigMap: %v", file, err)
				}
				if _, err := config.Parse([]byte(cm.Data["config.yaml"])); err != nil {
					t.Errorf("ConfigMap config.yaml: %v", err)
				}
			case "Service":
				obj = &corev1.Service{}
			case "ServiceAccount":
				obj = &corev1.ServiceAccount{}
			case "ServiceMonitor":
				sm := &monitoringv1.ServiceMonitor{}
				obj = sm
				if err := yaml.UnmarshalStrict(doc, sm); err != nil {
					t.Fatalf("%s ServiceMonitor: %v", file, err)
				}
				hostLabel := false
				for _, r := range sm.Spec.Endpoints[0].RelabelConfigs {
					if len(r.SourceLabels) == 1 && r.SourceLabels[0] == "__meta_kubernetes_pod_node_name" && r.TargetLabel == "host" {
						hostLabel = true
					}
				}
				// The servers' host label must survive the target's.
				if !hostLabel || !sm.Spec.Endpoints[0].HonorLabels {
					t.Errorf("ServiceMonitor: host label from the node name %v, honorLabels %v; want both", hostLabel, sm.Spec.Endpoints[0].HonorLabels)
				}
			case "PrometheusRule":
				obj = &monitoringv1.PrometheusRule{}
			default:
				t.Errorf("%s: unexpected kind %q", file, meta.Kind)
				continue
			}
			if err := yaml.UnmarshalStrict(doc, obj); err != nil {
				t.Errorf("%s %s: %v", file, meta.Kind, err)
			}
		}
	}
	for _, k := range []string{"DaemonSet", "ConfigMap", "Service", "ServiceAccount", "ServiceMonitor", "PrometheusRule"} {
		if kinds[k] != 1 {
			t.Errorf("%d %s manifests, want 1", kinds[k], k)
		}
	}
}

// changelogVersion is the version of CHANGELOG.md's newest heading,
// "## 0.1.0 - 2026-12-01" or "## 0.1.0 - Unreleased".
func changelogVersion(t *testing.T) string {
	t.Helper()
	b, err := os.ReadFile(filepath.Join(root, "CHANGELOG.md"))
	if err != nil {
		t.Fatal(err)
	}
	m := regexp.MustCompile(`(?m)^## (\d+\.\d+\.\d+) - (\d{4}-\d{2}-\d{2}|Unreleased)$`).FindSubmatch(b)
	if m == nil {
		t.Fatal("CHANGELOG.md has no heading \"## X.Y.Z - YYYY-MM-DD\" (or \"- Unreleased\")")
	}
	return string(m[1])
}

// The PrometheusRule is generated from alerts/, never edited by hand.
func TestPrometheusRuleInSync(t *testing.T) {
	want, err := alerts.PrometheusRule(alerts.DefaultParams())
	if err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile("kubernetes/prometheusrule.yaml")
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(got, want) {
		t.Error("deploy/kubernetes/prometheusrule.yaml differs from the alert rules: run `go generate ./alerts`")
	}
}
