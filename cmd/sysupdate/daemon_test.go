//go:build !nodaemon

package main

import (
	"encoding/json"
	"errors"
	"io/fs"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/sysupdate/sysupdate/bundle"
	"github.com/sysupdate/sysupdate/daemon"
	"github.com/sysupdate/sysupdate/internal/dbustest"
	"github.com/sysupdate/sysupdate/internal/testbin"
)

// buildBinary builds the device binary for tests that run it as a
// process (the daemon, signalled like systemd does).
func buildBinary(t testing.TB) string {
	t.Helper()
	return testbin.Build(t, testbin.Device, testbin.DeviceTags)
}

// daemonProc is `sysupdate daemon` running on a private bus.
type daemonProc struct {
	t      testing.TB
	bus    *dbustest.Bus
	cmd    *exec.Cmd
	stderr *syncBuffer
	done   chan error
}

func startDaemon(t testing.TB, bin string, bus *dbustest.Bus, conf string, extra ...string) *daemonProc {
	t.Helper()
	args := append([]string{"daemon", "--config", conf, "--settings", filepath.Join(filepath.Dir(conf), "daemon-settings.json"), "--reboot-command", "true"}, extra...)
	p := &daemonProc{t: t, bus: bus, cmd: exec.Command(bin, args...), stderr: &syncBuffer{}, done: make(chan error, 1)}
	p.cmd.Env = bus.Env()
	p.cmd.Stderr = p.stderr
	if err := p.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { p.done <- p.cmd.Wait() }()
	t.Cleanup(func() {
		p.cmd.Process.Kill()
		<-p.done
		p.done <- nil
	})
	c, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		var has bool
		if err := c.BusObject().Call("org.freedesktop.DBus.NameHasOwner", 0, daemon.RAUCName).Store(&has); err == nil && has {
			return p
		}
		select {
		case err := <-p.done:
			t.Fatalf("sysupdate daemon exited: %v\n%s", err, p.stderr.String())
		default:
		}
		if time.Now().After(deadline) {
			t.Fatalf("sysupdate daemon took no bus name within 10 s:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// term sends SIGTERM and returns how long the daemon took to exit.
func (p *daemonProc) term() time.Duration {
	p.t.Helper()
	start := time.Now()
	p.cmd.Process.Signal(syscall.SIGTERM)
	select {
	case err := <-p.done:
		p.done <- err
		if err != nil {
			p.t.Errorf("daemon exit after SIGTERM: %v\n%s", err, p.stderr.String())
		}
	case <-time.After(10 * time.Second):
		p.t.Fatalf("daemon still running 10 s after SIGTERM:\n%s", p.stderr.String())
	}
	return time.Since(start)
}

// rauc runs Debian's rauc CLI against the bus.
func rauc(t *testing.T, bus *dbustest.Bus, args ...string) (string, int) {
	t.Helper()
	c := exec.Command("rauc", args...)
	c.Env = bus.Env()
	out, err := c.CombinedOutput()
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return string(out), ee.ExitCode()
	} else if err != nil {
		t.Fatalf("rauc: %v (run make deps)", err)
	}
	return string(out), 0
}

// raucJSON is the part of `rauc status --detailed --output-format=json`
// the tests read.
type raucJSON struct {
	Compatible  string `json:"compatible"`
	Booted      string `json:"booted"`
	BootPrimary string `json:"boot_primary"`
	Slots       []map[string]struct {
		State      string `json:"state"`
		BootStatus string `json:"boot_status"`
		SlotStatus struct {
			Bundle struct {
				Version string `json:"version"`
			} `json:"bundle"`
		} `json:"slot_status"`
	} `json:"slots"`
}

// raucSlots returns "state/boot-status/version" per RAUC slot name.
func raucSlots(t *testing.T, bus *dbustest.Bus) (raucJSON, map[string]string) {
	t.Helper()
	out, code := rauc(t, bus, "status", "--detailed", "--output-format=json")
	var js raucJSON
	if code != 0 || json.Unmarshal([]byte(out), &js) != nil {
		t.Fatalf("rauc status --output-format=json (exit %d):\n%s", code, out)
	}
	m := map[string]string{}
	for _, s := range js.Slots {
		for n, v := range s {
			m[n] = v.State + "/" + v.BootStatus + "/" + v.SlotStatus.Bundle.Version
		}
	}
	return js, m
}

// corruptRepo copies the repository and flips a byte near the end of
// every stream: the headers still verify, the data does not.
func corruptRepo(t *testing.T, src, dst string) {
	t.Helper()
	if out, err := exec.Command("cp", "-a", src, dst).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	n := 0
	filepath.WalkDir(dst, func(p string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() || !strings.HasSuffix(p, ".sus") {
			return err
		}
		b, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		b[len(b)-100] ^= 0xff
		n++
		return os.WriteFile(p, b, 0o644)
	})
	if n == 0 {
		t.Fatal("no streams to corrupt")
	}
}

// writeBundle writes every file of a repository directory into a bundle
// file, the single-file form `rauc install` is given on a device.
func writeBundle(t *testing.T, repo, out string) string {
	t.Helper()
	var rel []string
	filepath.WalkDir(repo, func(p string, e fs.DirEntry, err error) error {
		if err == nil && !e.IsDir() {
			r, _ := filepath.Rel(repo, p)
			rel = append(rel, filepath.ToSlash(r))
		}
		return err
	})
	f, err := os.Create(out)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	if err := bundle.Write(f, repo, rel); err != nil {
		t.Fatal(err)
	}
	return out
}

// TestDaemonRAUCClient: Debian's rauc 1.8 CLI, unmodified, against
// `sysupdate daemon` and the real engine on a GPT disk image.
func TestDaemonRAUCClient(t *testing.T) {
	if _, err := exec.LookPath("rauc"); err != nil {
		t.Fatal("rauc missing: run make deps")
	}
	d := newDevice(t)
	d.publish(1)
	if res, _, err := d.update("--slot", "b"); err != nil || !res.Switched {
		t.Fatalf("factory flash: %+v %v", res, err)
	}
	d.boot()
	runOK(t, "mark-good", "--config", d.conf)
	d.publish(2)
	bin := buildBinary(t)
	bus := dbustest.Start(t)
	p := startDaemon(t, bin, bus, d.conf, "--variant", "test")

	out, code := rauc(t, bus, "status")
	if code != 0 || !strings.Contains(out, "Compatible:  board") || !strings.Contains(out, "Booted from: rootfs.0 (a)") || !strings.Contains(out, "Activated: rootfs.0 (a)") {
		t.Fatalf("rauc status (exit %d):\n%s", code, out)
	}
	js, slots := raucSlots(t, bus)
	if js.Booted != "a" || js.BootPrimary != "rootfs.0" || slots["rootfs.0"] != "booted/good/1" || slots["rootfs.1"] != "inactive/bad/" {
		t.Fatalf("rauc status json: %+v %v", js, slots)
	}

	// A corrupted bundle: exit 1, the engine's error as LastError,
	// nothing switched.
	badRepo := filepath.Join(d.dir, "bad-repo")
	corruptRepo(t, d.repo, badRepo)
	bad := writeBundle(t, badRepo, filepath.Join(d.dir, "bad.bundle"))
	out, code = rauc(t, bus, "install", bad)
	if code != 1 || !regexp.MustCompile(`LastError: .*nothing switched: the next boot is still slot a`).MatchString(out) {
		t.Fatalf("rauc install of a corrupted bundle (exit %d):\n%s", code, out)
	}
	st := d.status()
	if st.NextBoot != "a" || st.Pending != nil || st.Slots[1].Bootable {
		t.Fatalf("after the corrupted bundle: next %s, pending %+v, slots %+v", st.NextBoot, st.Pending, st.Slots)
	}

	// The good bundle: progress lines, exit 0, slot b next.
	good := writeBundle(t, d.repo, filepath.Join(d.dir, "good.bundle"))
	// Info reads the bundle's model and version without installing it.
	cli, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	var compat, ver string
	if err := cli.Object(daemon.RAUCName, daemon.RAUCPath).Call(daemon.RAUCIface+".Info", 0, good).Store(&compat, &ver); err != nil || compat != "board" || ver != "2" {
		t.Errorf("Info(%s): %q %q %v", good, compat, ver, err)
	}
	out, code = rauc(t, bus, "install", good)
	if code != 0 || !strings.Contains(out, "% Downloading and writing") || !strings.Contains(out, "100% Installing done.") {
		t.Fatalf("rauc install (exit %d):\n%s", code, out)
	}
	t.Logf("rauc install:\n%s", out)
	st = d.status()
	if st.NextBoot != "b" || st.Pending == nil || st.Pending.Version != 2 || !st.Slots[1].Bootable {
		t.Fatalf("after rauc install: next %s, pending %+v", st.NextBoot, st.Pending)
	}

	// mark-bad other, then mark-active other: the bootloader as status shows.
	if out, code := rauc(t, bus, "status", "mark-bad", "other"); code != 0 || !strings.Contains(out, "marked slot rootfs.1 as bad") {
		t.Fatalf("mark-bad other (exit %d):\n%s", code, out)
	}
	if st := d.status(); st.NextBoot != "a" || st.Slots[1].Bootable {
		t.Fatalf("after mark-bad other: next %s, slots %+v", st.NextBoot, st.Slots)
	}
	if out, code := rauc(t, bus, "status", "mark-active", "other"); code != 0 || !strings.Contains(out, "activated slot rootfs.1") {
		t.Fatalf("mark-active other (exit %d):\n%s", code, out)
	}
	if st := d.status(); st.NextBoot != "b" || !st.Slots[1].Bootable {
		t.Fatalf("after mark-active other: next %s, slots %+v", st.NextBoot, st.Slots)
	}
	_, slots = raucSlots(t, bus)
	if slots["rootfs.1"] != "inactive/good/2" {
		t.Errorf("rootfs.1 after the install: %s", slots["rootfs.1"])
	}

	// Reboot into b (the daemon restarts with the system) and confirm it.
	if d := p.term(); d > 5*time.Second {
		t.Errorf("daemon took %v to stop", d)
	}
	if s := d.boot(); s != "b" {
		t.Fatalf("booted %s, want b", s)
	}
	startDaemon(t, bin, bus, d.conf)
	if out, code := rauc(t, bus, "status", "mark-good"); code != 0 || !strings.Contains(out, "marked slot rootfs.1 as good") {
		t.Fatalf("mark-good (exit %d):\n%s", code, out)
	}
	st = d.status()
	if st.Installed != 2 || st.Active != "b" || st.Pending != nil || !st.Slots[1].Successful {
		t.Fatalf("after rauc mark-good: %+v", st)
	}
	js, slots = raucSlots(t, bus)
	if js.Booted != "b" || slots["rootfs.1"] != "booted/good/2" {
		t.Errorf("rauc status after mark-good: %+v %v", js, slots)
	}
}

// throttle serves a repository slowly, counting the stream bytes sent.
type throttle struct {
	h    http.Handler
	sent atomic.Int64
}

type slowWriter struct {
	http.ResponseWriter
	th     *throttle
	stream bool
}

func (w slowWriter) Write(p []byte) (int, error) {
	n := 0
	for len(p) > 0 {
		c := min(len(p), 4<<10)
		m, err := w.ResponseWriter.Write(p[:c])
		n += m
		if w.stream {
			w.th.sent.Add(int64(m))
		}
		if err != nil {
			return n, err
		}
		if f, ok := w.ResponseWriter.(http.Flusher); ok {
			f.Flush()
		}
		p = p[c:]
		time.Sleep(20 * time.Millisecond)
	}
	return n, nil
}

func (th *throttle) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	th.h.ServeHTTP(slowWriter{w, th, strings.HasSuffix(r.URL.Path, ".sus")}, r)
}

// TestDaemonBusyAndSIGTERM: an install from the RAUC side while the UI
// asks for a check gets one operation and one busy error; SIGTERM in the
// middle stops the daemon within 5 s, the slot is left unbootable with a
// checkpoint, and the next install resumes from it.
func TestDaemonBusyAndSIGTERM(t *testing.T) {
	if _, err := exec.LookPath("rauc"); err != nil {
		t.Fatal("rauc missing: run make deps")
	}
	d := newDevice(t)
	d.publish(1)
	th := &throttle{h: http.FileServer(http.Dir(d.repo))}
	srv := httptest.NewServer(th)
	t.Cleanup(srv.Close)
	conf, _ := os.ReadFile(d.conf)
	slow := filepath.Join(d.dir, "slow.conf")
	os.WriteFile(slow, regexp.MustCompile(`(?m)^repository = .*$`).ReplaceAll(conf, []byte("repository = "+srv.URL)), 0o644)
	full, err := os.Stat(filepath.Join(d.repo, "streams", "board", "rootfs", "1.sus"))
	if err != nil {
		t.Fatal(err)
	}

	bin := buildBinary(t)
	bus := dbustest.Start(t)
	p := startDaemon(t, bin, bus, slow)
	installDone := make(chan int, 1)
	// rauc install with the configured repository over the slow server.
	go func() {
		out, code := rauc(t, bus, "install", srv.URL)
		t.Logf("first rauc install (exit %d):\n%s", code, out)
		installDone <- code
	}()
	cli, err := dbus.Connect(bus.Address)
	if err != nil {
		t.Fatal(err)
	}
	defer cli.Close()
	// Wait until the engine wrote its first checkpoint (op boundaries:
	// this 600 KiB image has a 512 KiB first op), the install still running.
	deadline := time.Now().Add(20 * time.Second)
	for d.status().Checkpoint == nil {
		if time.Now().After(deadline) {
			t.Fatalf("no checkpoint after 20 s, %d bytes fetched:\n%s", th.sent.Load(), p.stderr.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if v, err := cli.Object(daemon.RAUCName, daemon.RAUCPath).GetProperty(daemon.RAUCIface + ".Operation"); err != nil || v.Value() != "installing" {
		t.Fatalf("Operation during the install: %v, %v", v, err)
	}
	// The UI checks meanwhile: one clear busy error, no second operation.
	call := cli.Object(daemon.SystemImageName, daemon.SystemImagePath).Call(daemon.SystemImageName+".CheckForUpdate", 0)
	var de dbus.Error
	if !errors.As(call.Err, &de) || de.Name != daemon.ErrNameBusy || !strings.Contains(de.Error(), "install (asked by rauc)") {
		t.Fatalf("CheckForUpdate during an install: %v", call.Err)
	}
	if out, code := rauc(t, bus, "install", srv.URL); code == 0 || !strings.Contains(out, "another operation is running") {
		t.Fatalf("a second rauc install (exit %d):\n%s", code, out)
	}

	took := p.term()
	t.Logf("daemon stopped %v after SIGTERM, %d of %d stream bytes sent", took, th.sent.Load(), full.Size())
	if took > 5*time.Second {
		t.Errorf("daemon took %v to stop after SIGTERM, want < 5 s", took)
	}
	if code := <-installDone; code == 0 {
		t.Error("the interrupted rauc install exited 0")
	}
	st := d.status()
	if st.Slots[1].Bootable || st.NextBoot != "a" || st.Checkpoint == nil || st.Checkpoint.Slot != "b" || st.Checkpoint.TargetOff == 0 {
		t.Fatalf("after SIGTERM: next %s, slot b %+v, checkpoint %+v", st.NextBoot, st.Slots[1], st.Checkpoint)
	}

	// The next install resumes: it fetches far less than the whole stream.
	sentBefore := th.sent.Load()
	startDaemon(t, bin, bus, slow)
	out, code := rauc(t, bus, "install", srv.URL)
	if code != 0 {
		t.Fatalf("resumed rauc install (exit %d):\n%s", code, out)
	}
	resumed := th.sent.Load() - sentBefore
	t.Logf("resumed install fetched %d of %d stream bytes", resumed, full.Size())
	if resumed >= full.Size()-st.Checkpoint.StreamOff/2 {
		t.Errorf("the resumed install fetched %d of %d stream bytes: it did not resume", resumed, full.Size())
	}
	if st := d.status(); st.NextBoot != "b" || st.Checkpoint != nil || st.Pending == nil || st.Pending.Version != 1 {
		t.Fatalf("after the resumed install: %+v", st)
	}
	if got := d.slot("b", len(d.imgs[1])); string(got) != string(d.imgs[1]) {
		t.Fatal("slot b does not hold version 1 after the resumed install")
	}
}

// TestDaemonSystemImageClient: the UBports System Updates page's client
// class, unmodified, through the UI's sequence against the real engine:
// Information, GetSetting, CheckForUpdate -> UpdateAvailableStatus,
// DownloadUpdate -> UpdateProgress... -> UpdateDownloaded (staged, not
// switched), ApplyUpdate -> the switch and Rebooting.
func TestDaemonSystemImageClient(t *testing.T) {
	qsi := dbustest.QSystemImage(t)
	d := newDevice(t)
	d.publish(1)
	if res, _, err := d.update("--slot", "b"); err != nil || !res.Switched {
		t.Fatalf("factory flash: %+v %v", res, err)
	}
	d.boot()
	runOK(t, "mark-good", "--config", d.conf)
	d.publish(2)
	bin := buildBinary(t)
	bus := dbustest.Start(t)
	marker := filepath.Join(d.dir, "rebooted")
	p := startDaemon(t, bin, bus, d.conf, "--reboot-command", "touch "+marker)
	c := exec.Command(qsi, "full")
	c.Env = bus.Env()
	out, err := c.CombinedOutput()
	t.Logf("qsystemimage full:\n%s", out)
	if err != nil {
		t.Fatalf("qsystemimage: %v\n%s", err, p.stderr.String())
	}
	for _, re := range []string{
		`info device=board channel=stable current=1 target=-1`,
		`(?s)updateAvailableStatus available=1 downloading=0 version=2 size=[1-9][0-9]* last_update=[0-9-]+ [0-9:]+ error=\n`,
		`(?s)downloadStarted.*updateProgress [1-9][0-9]* eta=.*updateProgress 100 eta=0\nupdateDownloaded\nupdateProcessing\nrebooting 1`,
	} {
		if !regexp.MustCompile(re).Match(out) {
			t.Errorf("qsystemimage output does not match %s", re)
		}
	}
	st := d.status()
	if st.NextBoot != "b" || st.Pending == nil || st.Pending.Version != 2 || !st.Pending.Switched {
		t.Fatalf("after ApplyUpdate: next %s, pending %+v", st.NextBoot, st.Pending)
	}
	deadline := time.Now().Add(5 * time.Second)
	for {
		if _, err := os.Stat(marker); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ApplyUpdate did not run the reboot command:\n%s", p.stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
}
