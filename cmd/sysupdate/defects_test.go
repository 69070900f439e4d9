package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/client"
)

// The tests of issue 7's defects, each failing on the code before the
// engine, and of `install SOURCE`.

// factory puts v1 in slot a, confirmed, with slot b an older good slot.
func (d *device) factory() {
	d.t.Helper()
	d.publish(1)
	if _, _, err := d.update("--slot", "b"); err != nil {
		d.t.Fatal(err)
	}
	runOK(d.t, "mark-good", "--config", d.conf, "--slot", "a")
	runOK(d.t, "bootloader", "--config", d.conf, "mark-good", "b")
}

func (d *device) runErr(args ...string) (string, error) {
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String() + errb.String(), err
}

// TestEveryWriterTakesTheLock: while an update holds the device lock,
// mark-good, bootloader changes, check and rollback are refused as busy and
// change nothing; no flag or config key points the lock elsewhere.
func TestEveryWriterTakesTheLock(t *testing.T) {
	d := newDevice(t)
	d.factory()
	d.publish(2)
	unlock, err := lockFile(filepath.Join(d.dir, "sysupdate.lock")) // the update's lock, beside the state
	if err != nil {
		t.Fatal(err)
	}
	env0, _ := os.ReadFile(d.grubenv)
	state0, _ := os.ReadFile(d.state)
	for _, args := range [][]string{
		{"mark-good", "--config", d.conf},
		{"bootloader", "--config", d.conf, "mark-good", "b"},
		{"bootloader", "--config", d.conf, "set-next", "b"},
		{"check", "--config", d.conf},
		{"rollback", "--config", d.conf, "--no-reboot"},
		{"update", "--config", d.conf, "--no-reboot"},
	} {
		out, err := d.runErr(args...)
		if err == nil || refusalCode(err) != "busy" {
			t.Errorf("%s while an update runs: %v (%s), want busy", args[0], err, out)
		}
	}
	if _, err := d.runErr("mark-good", "--config", d.conf, "--lock", filepath.Join(d.dir, "other.lock")); err == nil {
		t.Error("mark-good --lock elsewhere was accepted")
	}
	env1, _ := os.ReadFile(d.grubenv)
	state1, _ := os.ReadFile(d.state)
	if !bytes.Equal(env0, env1) || !bytes.Equal(state0, state1) {
		t.Fatal("a refused command changed the bootloader or the state")
	}
	unlock()
}

// TestCheckDoesNotLosePending: a check after an update keeps the update's
// pending record (it loads and saves under the lock, never a stale copy).
func TestCheckDoesNotLosePending(t *testing.T) {
	d := newDevice(t)
	d.factory()
	d.publish(2)
	if res, _, err := d.update(); err != nil || !res.Switched {
		t.Fatalf("update: %+v %v", res, err)
	}
	runOK(t, "check", "--config", d.conf)
	st, err := client.LoadState(d.state)
	if err != nil || st.Pending == nil || st.Pending.Version != 2 {
		t.Fatalf("after check: %+v, %v; the pending record is gone", st, err)
	}
	d.boot()
	runOK(t, "mark-good", "--config", d.conf)
	if st := d.status(); st.Installed != 2 {
		t.Fatalf("confirmed as version %d, want 2", st.Installed)
	}
}

// TestUpdateOnTrialRefused: an update while the booted slot is still on
// trial would overwrite the last confirmed slot; refused unless on_trial
// = confirm, which confirms first.
func TestUpdateOnTrialRefused(t *testing.T) {
	d := newDevice(t)
	d.factory()
	d.publish(2)
	if _, _, err := d.update(); err != nil {
		t.Fatal(err)
	}
	if s := d.boot(); s != "b" {
		t.Fatalf("booted %s", s)
	}
	d.publish(3)
	env0, _ := os.ReadFile(d.grubenv)
	a0 := d.slot("a", partSize)
	res, _, err := d.update()
	if err == nil || res.Refusal != "on-trial" || !strings.Contains(err.Error(), "mark-good") {
		t.Fatalf("update on trial: %+v, %v", res, err)
	}
	env1, _ := os.ReadFile(d.grubenv)
	if !bytes.Equal(env0, env1) || !bytes.Equal(a0, d.slot("a", partSize)) {
		t.Fatal("the refused update changed the bootloader or slot a")
	}
	res, _, err = d.update("--on-trial", "confirm")
	if err != nil || !res.Switched || res.Target != "a" {
		t.Fatalf("update with on_trial = confirm: %+v, %v", res, err)
	}
	if st, _ := client.LoadState(d.state); st.Installed != 2 {
		t.Fatalf("on_trial = confirm did not confirm version 2 first: installed %d", st.Installed)
	}
}

// TestNoFalseRollbackReport: after an earlier rollback, an update stopped
// between recording pending and the switch (a staged install is exactly
// that state) is not blamed for the old failure.
func TestNoFalseRollbackReport(t *testing.T) {
	d := newDevice(t)
	d.factory()
	d.publish(2)
	if _, _, err := d.update(); err != nil {
		t.Fatal(err)
	}
	for range 4 { // b never confirms: GRUB falls back to a
		d.boot()
	}
	if st := d.status(); st.Rollback == nil || st.Rollback.Version != 2 {
		t.Fatalf("first rollback not reported: %+v", st.Rollback)
	}
	runOK(t, "mark-good", "--config", d.conf)
	d.publish(3)
	res, _, err := d.update("--stage")
	if err != nil || !res.Staged || res.Switched {
		t.Fatalf("staged update: %+v, %v", res, err)
	}
	st := d.status()
	if st.Pending == nil || st.Pending.Version != 3 || st.Pending.Switched {
		t.Fatalf("pending after the stop: %+v", st.Pending)
	}
	if st.Rollback != nil && (st.Rollback.Version == 3 || strings.Contains(st.Rollback.Message, "version 3")) {
		t.Fatalf("status blames version 3 for a rollback it never had: %+v", st.Rollback)
	}
}

// TestFetchErrorKeepsFallback: a 404 before any byte is written leaves the
// other slot bootable, and the message says nothing was written.
func TestFetchErrorKeepsFallback(t *testing.T) {
	d := newDevice(t)
	d.factory()
	d.publish(2)
	// Both streams gone (a missing delta alone falls back to the full one).
	os.Remove(filepath.Join(d.repo, "streams", "board", "rootfs", "2-from-1.sus"))
	os.Remove(filepath.Join(d.repo, "streams", "board", "rootfs", "2.sus"))
	res, _, err := d.update()
	if err == nil || res.Refusal != "unavailable" || strings.Contains(err.Error(), "partial image") || !strings.Contains(err.Error(), "nothing switched") {
		t.Fatalf("404: %+v, %v", res, err)
	}
	st := d.status()
	if len(st.Bootloader.Slots) != 2 || !st.Bootloader.Slots[1].Bootable {
		t.Fatalf("slot b (the fallback) is no longer bootable after a 404: %+v", st.Bootloader)
	}
}

// TestTooNewDeltaFallsBack: a delta in a format version this device does
// not read (a newer publisher) is refused before a byte is written, and
// the update installs the full image instead.
func TestTooNewDeltaFallsBack(t *testing.T) {
	d := newDevice(t)
	d.factory()
	d.publish(2)
	p := filepath.Join(d.repo, "streams", "board", "rootfs", "2-from-1.sus")
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	b[8], b[9] = 0xff, 0x7f // the preamble's format version
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	res, stderr, err := d.update()
	if err != nil || !res.Switched || len(res.Images) != 1 || res.Images[0].Stream != "full" || !res.Images[0].FellBack || !res.Images[0].Verified {
		t.Fatalf("update with a too-new delta: %+v, %v\n%s", res, err, stderr)
	}
	if !strings.Contains(stderr, "needs a newer sysupdate") {
		t.Fatalf("no message saying why the delta was not used:\n%s", stderr)
	}
}

// TestBrokenStateFile: a corrupt, empty or null state file does not stop
// mark-good from confirming a working slot; it says what was wrong and
// rebuilds; status reports it instead of failing.
func TestBrokenStateFile(t *testing.T) {
	for name, content := range map[string]string{"corrupt": "{\"schema\": 1, \"installed\": ", "empty": "", "null": "null"} {
		t.Run(name, func(t *testing.T) {
			d := newDevice(t)
			d.factory()
			os.WriteFile(d.state, []byte(content), 0o644)
			out := runOK(t, "status", "--config", d.conf)
			if !strings.Contains(out, "STATE FILE PROBLEM") {
				t.Fatalf("status with a %s state file: %s", name, out)
			}
			runOK(t, "bootloader", "--config", d.conf, "set-next", "a") // a on trial again
			var stdout, stderr bytes.Buffer
			if err := run(context.Background(), []string{"mark-good", "--config", d.conf}, &stdout, &stderr); err != nil {
				t.Fatalf("mark-good with a %s state file: %v\n%s", name, err, stderr.String())
			}
			if !strings.Contains(stderr.String(), "state file is unusable") {
				t.Errorf("mark-good did not say what was wrong: %s", stderr.String())
			}
			if st := d.status(); !st.Bootloader.Slots[0].Successful || st.StateError != "" {
				t.Fatalf("after mark-good: slot a %+v, state error %q", st.Bootloader.Slots[0], st.StateError)
			}
			if _, err := os.Stat(d.state + ".broken"); err != nil {
				t.Errorf("the broken state was not kept aside: %v", err)
			}
		})
	}
}

// TestInstallSources (issue 7, acceptance 4): install from a directory, a
// URL and a bundle file, each refusing as update does with nothing
// written.
func TestInstallSources(t *testing.T) {
	d := newDevice(t)
	d.factory()
	d.publish(2)
	conf, _ := os.ReadFile(d.conf)
	url := strings.TrimPrefix(strings.Split(string(conf), "\n")[0], "repository = ")
	bundlePath := filepath.Join(d.dir, "v2.bundle")
	publishOK(t, "bundle", "--repo", d.repo, "--channel", "stable", "--model", "board", "-o", bundlePath)
	for _, src := range []struct{ name, source string }{{"directory", d.repo}, {"url", url}, {"bundle", bundlePath}} {
		t.Run(src.name, func(t *testing.T) {
			install := func(args ...string) (updateResult, error) {
				var stdout, stderr bytes.Buffer
				err := run(context.Background(), append([]string{"install", src.source, "--config", d.conf, "--json", "--no-reboot", "--slot", "a"}, args...), &stdout, &stderr)
				var res updateResult
				if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil {
					t.Fatalf("install output: %v\n%s\n%s", jerr, stdout.String(), stderr.String())
				}
				return res, err
			}
			env0, _ := os.ReadFile(d.grubenv)
			b0 := d.slot("b", partSize)
			for _, r := range []struct {
				args []string
				code string
			}{
				{[]string{"--model", "other-board"}, "wrong-model"},
				{[]string{"--master-keys", filepath.Join(d.keys, "signing.pub")}, "untrusted-key"},
				{[]string{"--floor", "3"}, "below-floor"},
			} {
				res, err := install(r.args...)
				env1, _ := os.ReadFile(d.grubenv)
				if err == nil || res.Refusal != r.code || !bytes.Equal(env0, env1) || !bytes.Equal(b0, d.slot("b", partSize)) {
					t.Fatalf("install %v from a %s: %+v, %v; want %s and nothing written", r.args, src.name, res, err, r.code)
				}
			}
			res, err := install()
			if err != nil || !res.Switched || res.Version != 2 || !res.Images[0].Verified {
				t.Fatalf("install from a %s: %+v, %v", src.name, res, err)
			}
			if !bytes.Equal(d.slot("b", len(d.imgs[2])), d.imgs[2]) {
				t.Fatal("slot b does not hold v2")
			}
			// Back to the factory state for the next source.
			runOK(t, "bootloader", "--config", d.conf, "set-next", "a")
			runOK(t, "mark-good", "--config", d.conf, "--slot", "a")
			st, _ := client.LoadState(d.state)
			st.Pending = nil
			st.Save(d.state)
			devB, _ := os.OpenFile(d.disk, os.O_RDWR, 0)
			devB.Close()
		})
	}
	// A corrupted bundle is refused and nothing is switched.
	b, _ := os.ReadFile(bundlePath)
	b[len(b)/2] ^= 0xff
	bad := filepath.Join(d.dir, "bad.bundle")
	os.WriteFile(bad, b, 0o644)
	env0, _ := os.ReadFile(d.grubenv)
	out, err := d.runErr("install", bad, "--config", d.conf, "--no-reboot", "--slot", "a")
	env1, _ := os.ReadFile(d.grubenv)
	if err == nil || !strings.Contains(out+err.Error(), "nothing switched") || bytes.Contains(env1, []byte("SYSUPDATE_ORDER=b")) && !bytes.Equal(env0, env1) {
		t.Fatalf("corrupted bundle: %v %s", err, out)
	}
	if _, err := d.runErr("install", filepath.Join(d.dir, "rootfs-2.img"), "--config", d.conf, "--slot", "a"); err == nil || !strings.Contains(err.Error(), "not a sysupdate bundle") {
		t.Fatalf("a plain file as SOURCE: %v", err)
	}
}

// TestProgressBarInATerminal (issue 7, acceptance 6): under a real
// pseudo-terminal (script(1)) update draws a bar rewritten in place with
// rate and ETA; on a pipe it prints one line per 10 %.
func TestProgressBarInATerminal(t *testing.T) {
	if _, err := exec.LookPath("script"); err != nil {
		t.Fatal("script (util-linux) missing: run make deps")
	}
	d := newBigDevice(t, 16<<20)
	d.proxy.rate = 2 << 20
	img := compressible(newRand(), 15<<20)
	d.publishImage(1, img, 0)
	cmd := exec.Command("script", "-q", "-e", "-c", fmt.Sprintf("%s update --config %s --slot b --no-reboot", d.bin, d.conf), "/dev/null")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("update under script: %v\n%q", err, out)
	}
	s := string(out)
	if !strings.Contains(s, "\r\x1b[Krootfs [") || !strings.Contains(s, "#") || !strings.Contains(s, "/s, ETA ") || !strings.Contains(s, "100%") {
		t.Fatalf("no progress bar with rate and ETA on the terminal:\n%q", s)
	}
	// On a pipe: lines per 10 %, no carriage returns.
	runOK(t, "bootloader", "--config", d.conf, "set-next", "b")
	cmd = exec.Command(d.bin, "update", "--config", d.conf, "--slot", "a", "--no-reboot", "--allow-downgrade", "--version", "1")
	out, _ = cmd.CombinedOutput()
	if strings.Contains(string(out), "\r") {
		t.Fatalf("carriage returns on a pipe:\n%q", out)
	}
}

func newRand() *rand.Rand { return rand.New(rand.NewPCG(7, 7)) }

// TestUpdateStopsOnSIGTERMWithTricklingServer (issue 8, acceptance 3): an
// update held by a server that trickles a byte now and then stops within a
// second of SIGTERM (fetch's TestTricklingServerHitsTheDeadline shows the
// whole-file deadline ending such a transfer without any signal).
func TestUpdateStopsOnSIGTERMWithTricklingServer(t *testing.T) {
	d := newBigDevice(t, 4<<20)
	d.publishImage(1, compressible(newRand(), 2<<20), 0)
	d.proxy.rate = 2 // bytes per second: a byte now and then
	for _, sig := range []os.Signal{syscall.SIGTERM, os.Interrupt} {
		d.proxy.sent.Store(0)
		cmd, out := startBin(t, nil, "update", "--config", d.conf, "--slot", "b", "--no-reboot")
		// Wait until the trickle has begun: the update is inside the stream.
		for deadline := time.Now().Add(30 * time.Second); d.proxy.sent.Load() == 0; {
			if time.Now().After(deadline) {
				cmd.Process.Kill()
				t.Fatalf("update never reached the stream:\n%s", out.String())
			}
			time.Sleep(10 * time.Millisecond)
		}
		stopWithin(t, cmd, out, sig)
	}
}
