package daemon

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/internal/dbustest"
)

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
	bin := dbustest.QSystemImage(t)
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
	bin := dbustest.QSystemImage(t)
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
