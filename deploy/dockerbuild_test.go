package deploy

import (
	"os/exec"
	"regexp"
	"strings"
	"testing"
)

// TestDockerfileBuild builds with the Dockerfile's own line, as the image
// would. scripts/test.sh runs it in the Go-only tier (as nobody), in the
// build cache where the release build, vet and the tier's own tests
// compiled every package with the release's flags already, and leaves it
// out of the lab tier (-skip): that cache holds race builds only, and this
// build would cost about 140 CPU-seconds more there on a fresh machine.
func TestDockerfileBuild(t *testing.T) {
	_, goBuild := parseDockerfile(t)
	line := strings.NewReplacer("${VERSION}", "9.9.9-test", "${REVISION}", "abc", "${BRANCH}", "main", "/out/", t.TempDir()+"/").Replace(goBuild)
	cmd := exec.Command("sh", "-c", line)
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("the Dockerfile's build line fails: %v\n%s\n%s", err, line, out)
	}
	out := regexp.MustCompile(`-o (\S+)`).FindStringSubmatch(line)[1]
	v, err := exec.Command(out, "--version").CombinedOutput()
	if err != nil || !strings.Contains(string(v), "9.9.9-test") || !strings.Contains(string(v), "abc") {
		t.Errorf("binary built by the Dockerfile's line reports %q (%v)", v, err)
	}
}
