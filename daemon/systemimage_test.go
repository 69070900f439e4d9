package daemon

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"
)

// qsystemimage builds testdata/qsystemimage (the UBports page's client
// class QSystemImage, driven through one scenario) once per source
// version into /var/cache/sysupdate-tests.
func qsystemimage(t *testing.T) string {
	t.Helper()
	src := "testdata/qsystemimage/main.cpp"
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
	abs, _ := filepath.Abs(src)
	args := append([]string{"-std=c++17", "-fPIC", "-o", bin + ".tmp", abs}, strings.Fields(string(flags))...)
	args = append(args, "-lLomiriSystemSettingsPrivate")
	if out, err := exec.Command("g++", args...).CombinedOutput(); err != nil {
		t.Fatalf("g++: %v\n%s", err, out)
	}
	if err := os.Rename(bin+".tmp", bin); err != nil {
		t.Fatal(err)
	}
	return bin
}

// lines runs the client and returns its output lines.
func (r *running) client(bin, scenario string) ([]string, int) {
	r.t.Helper()
	out, code := r.cmd(bin, scenario)
	r.t.Logf("qsystemimage %s (exit %d):\n%s", scenario, code, out)
	var ls []string
	for _, l := range strings.Split(out, "\n") {
		// Qt's own warnings go to stderr, interleaved: keep our lines.
		if l != "" && !strings.HasPrefix(l, "QSystemImage") && !strings.Contains(l, "Q_FUNC_INFO") {
			ls = append(ls, l)
		}
	}
	return ls, code
}

// inOrder checks that each of want is a prefix of some line, in order.
func inOrder(t *testing.T, got []string, want ...string) {
	t.Helper()
	i := 0
	for _, l := range got {
		if i < len(want) && strings.HasPrefix(l, want[i]) {
			i++
		}
	}
	if i < len(want) {
		t.Errorf("signal %q missing or out of order in:\n%s", want[i], strings.Join(got, "\n"))
	}
}

// TestSystemImageClient: the UBports System Updates page's client class,
// unmodified, through its call sequence: Information, GetSetting,
// CheckForUpdate -> UpdateAvailableStatus, DownloadUpdate ->
// UpdateProgress... -> UpdateDownloaded, ApplyUpdate -> Rebooting.
func TestSystemImageClient(t *testing.T) {
	bin := qsystemimage(t)
	eng := newFakeEngine()
	var rebooted atomic.Bool
	r := serve(t, eng, Config{Reboot: func() error { rebooted.Store(true); return nil }, SettingsPath: filepath.Join(t.TempDir(), "settings.json")})
	got, code := r.client(bin, "full")
	if code != 0 {
		t.Fatalf("full sequence: exit %d", code)
	}
	inOrder(t, got,
		"info device=board channel=stable current=1 target=-1 mode=1 failures_before_warning=3",
		"downloadModeChanged 0",
		"updateAvailableStatus available=1 downloading=0 version=2 size=12345",
		"downloadStarted", "updateProgress 0", "updateProgress 10 eta=0.9", "updateProgress 100",
		"updateDownloaded", "updateProcessing", "rebooting 1")
	c := strings.Join(eng.Calls(), ";")
	if c != "check;install  noswitch=true;activate" {
		t.Errorf("engine calls: %s", c)
	}
	deadline := time.Now().Add(2 * time.Second)
	for !rebooted.Load() && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	if !rebooted.Load() {
		t.Error("ApplyUpdate did not reboot")
	}
	// The setting persisted.
	if b, err := os.ReadFile(r.d.cfg.SettingsPath); err != nil || !strings.Contains(string(b), `"auto_download": "0"`) {
		t.Errorf("settings file: %s, %v", b, err)
	}
}

// TestSystemImagePauseCancelFail: pausing gives UpdatePaused and resumes
// where it stopped; cancelling and a failed download give UpdateFailed
// with a growing count.
func TestSystemImagePauseCancelFail(t *testing.T) {
	bin := qsystemimage(t)
	eng := newFakeEngine()
	eng.stepDelay = 50 * time.Millisecond
	r := serve(t, eng, Config{Reboot: func() error { return nil }})

	got, code := r.client(bin, "pause")
	if code != 0 {
		t.Fatalf("pause: exit %d", code)
	}
	inOrder(t, got, "updateProgress 10", `pauseDownload -> ""`, "updatePaused", "downloadStarted", "updateDownloaded")
	if c := strings.Join(eng.Calls(), ";"); c != "check;install  noswitch=true;install  noswitch=true;activate" {
		t.Errorf("engine calls: %s", c)
	}

	eng2 := newFakeEngine()
	eng2.stepDelay = 50 * time.Millisecond
	r2 := serve(t, eng2, Config{})
	got, code = r2.client(bin, "cancel")
	if code != 0 {
		t.Fatalf("cancel: exit %d", code)
	}
	inOrder(t, got, "updateProgress 10", `cancelUpdate -> ""`, "updateFailed 1 Canceled")

	eng2.mu.Lock()
	eng2.failWith = errors.New("rootfs: fetch https://updates.example/2.sus: connection refused")
	eng2.mu.Unlock()
	got, code = r2.client(bin, "fail")
	if code != 0 {
		t.Fatalf("fail: exit %d", code)
	}
	inOrder(t, got, "downloadStarted", "updateFailed 1 rootfs: fetch https://updates.example/2.sus: connection refused")
}
