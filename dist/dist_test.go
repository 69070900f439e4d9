// Package dist holds what a device installs besides the binary: systemd
// units, D-Bus files, the default configuration and the Debian packaging
// (scripts/deb.sh). Its test checks the units with systemd-analyze.
package dist

import (
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// TestUnitsVerify runs systemd-analyze verify on the units in a scratch
// root holding them, the device binary, busctl and the host's systemd
// units, as a device has them. It fails on any warning about a unit.
func TestUnitsVerify(t *testing.T) {
	for _, tool := range []string{"systemd-analyze", "busctl"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing: run make deps", tool)
		}
	}
	root := t.TempDir()
	unitDir := filepath.Join(root, "lib/systemd/system")
	for _, d := range []string{unitDir, filepath.Join(root, "usr/bin")} {
		os.MkdirAll(d, 0o755)
	}
	if out, err := exec.Command("cp", "-a", "/lib/systemd/system/.", unitDir).CombinedOutput(); err != nil {
		t.Fatalf("copy the host's units: %v %s", err, out)
	}
	if out, err := exec.Command("cp", "-a", "/usr/bin/busctl", filepath.Join(root, "usr/bin/")).CombinedOutput(); err != nil {
		t.Fatalf("%v %s", err, out)
	}
	build := exec.Command("go", "build", "-o", filepath.Join(root, "usr/bin/sysupdate"), "../cmd/sysupdate")
	build.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v %s", err, out)
	}
	units, _ := filepath.Glob("systemd/*")
	if len(units) < 4 {
		t.Fatalf("units: %v", units)
	}
	var args []string
	for _, u := range units {
		b, err := os.ReadFile(u)
		if err != nil {
			t.Fatal(err)
		}
		dst := filepath.Join(unitDir, filepath.Base(u))
		os.WriteFile(dst, b, 0o644)
		args = append(args, "lib/systemd/system/"+filepath.Base(u))
	}
	cmd := exec.Command("systemd-analyze", append([]string{"verify", "--root=" + root, "--man=no"}, args...)...)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "SYSTEMD_LOG_LEVEL=notice")
	out, err := cmd.CombinedOutput()
	if err != nil || strings.Contains(string(out), "sysupdate") {
		t.Fatalf("systemd-analyze verify: %v\n%s", err, out)
	}
	// A broken unit fails, so the check can fail.
	os.WriteFile(filepath.Join(unitDir, "broken.service"), []byte("[Service]\nExecStart=/usr/bin/nonexistent\n"), 0o644)
	cmd = exec.Command("systemd-analyze", "verify", "--root="+root, "--man=no", "lib/systemd/system/broken.service")
	cmd.Dir = root
	if out, err := cmd.CombinedOutput(); err == nil {
		t.Errorf("systemd-analyze verify accepted a unit running a missing binary:\n%s", out)
	}
}
