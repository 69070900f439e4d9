package dbustest

import (
	"crypto/sha256"
	"encoding/hex"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
)

// QSystemImage returns testdata/qsystemimage.cpp built (once per source version,
// into /var/cache/sysupdate-tests): a small Qt program that drives the
// system-image API through the UBports System Updates page's own client
// class, QSystemImage from liblomirisystemsettingsprivate, unmodified. Run
// it with Bus.Env and a scenario (full, pause, cancel, fail); it prints
// each signal the class re-emits, one per line, and exits 0 when the
// scenario's last signal arrived.
func QSystemImage(t testing.TB) string {
	t.Helper()
	_, here, _, _ := runtime.Caller(0)
	src := filepath.Join(filepath.Dir(here), "testdata", "qsystemimage.cpp")
	b, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(b)
	dir := filepath.Join("/var/cache/sysupdate-tests/qsystemimage", hex.EncodeToString(sum[:8]))
	bin := filepath.Join(dir, "qsystemimage")
	if _, err := os.Stat(bin); err == nil {
		return bin
	}
	if _, err := os.Stat("/usr/include/LomiriSystemSettings/private/systemimage.h"); err != nil {
		t.Fatal("liblomirisystemsettingsprivate-dev missing: run make deps (scripts/install-deps.sh)")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	flags, err := exec.Command("pkg-config", "--cflags", "--libs", "Qt5DBus", "Qt5Core").Output()
	if err != nil {
		t.Fatalf("pkg-config Qt5DBus: %v: run make deps", err)
	}
	tmp := bin + ".tmp"
	args := append([]string{"-std=c++17", "-fPIC", "-o", tmp, src}, strings.Fields(string(flags))...)
	args = append(args, "-lLomiriSystemSettingsPrivate")
	if out, err := exec.Command("g++", args...).CombinedOutput(); err != nil {
		t.Fatalf("g++: %v\n%s", err, out)
	}
	if err := os.Rename(tmp, bin); err != nil {
		t.Fatal(err)
	}
	return bin
}
