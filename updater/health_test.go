package updater

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/bootloaders/android"
	"github.com/sysupdate/sysupdate/bootloaders/grub"
	"github.com/sysupdate/sysupdate/bootloaders/uboot"
	"github.com/sysupdate/sysupdate/client"
	"github.com/sysupdate/sysupdate/config"
)

// board is a device with one of the three backends, its bootloader state
// in files, and the bootloader's boot-time rule as the simulator each
// backend package documents: GRUB's shipped grub.cfg rule
// (grub.Scheme.Boot), U-Boot's android_ab (android.Select), and for the
// U-Boot environment the backend's own prediction of boot.cmd's choice
// (Status.Next, checked against the real boot.cmd in the QEMU tests).
type board struct {
	t   *testing.T
	cfg *config.Config
	dir string
}

func newBoard(t *testing.T, backend string) *board {
	t.Helper()
	dir := t.TempDir()
	cfg := config.Default()
	cfg.Path = filepath.Join(dir, "sysupdate.conf")
	cfg.State = filepath.Join(dir, "state", "state.json")
	cfg.Cmdline = filepath.Join(dir, "cmdline")
	cfg.HealthDir = filepath.Join(dir, "health.d")
	cfg.Bootloader = backend
	for _, s := range []string{"a", "b"} {
		p := filepath.Join(dir, "rootfs_"+s)
		if err := os.WriteFile(p, make([]byte, 4096), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	cfg.Slots = []config.Group{{Image: "rootfs", Devices: map[string]string{"a": filepath.Join(dir, "rootfs_a"), "b": filepath.Join(dir, "rootfs_b")}}}
	switch backend {
	case "grub":
		cfg.GrubEnv = filepath.Join(dir, "grubenv")
		if out, err := exec.Command("grub-editenv", cfg.GrubEnv, "create").CombinedOutput(); err != nil {
			t.Fatalf("grub-editenv (make deps installs grub-common): %v %s", err, out)
		}
	case "uboot":
		env := filepath.Join(dir, "uboot.env")
		var img []byte
		for _, flag := range []byte{1, 0} {
			b, err := uboot.Encode(uboot.NewEnv(uboot.Var{Name: "BOOT_ORDER", Value: "A B"}, uboot.Var{Name: "BOOT_A_LEFT", Value: "3"}, uboot.Var{Name: "BOOT_B_LEFT", Value: "3"}), uboot.Layout{Size: 0x4000, Redundant: true}, flag)
			if err != nil {
				t.Fatal(err)
			}
			img = append(img, b...)
		}
		os.WriteFile(env, img, 0o644)
		cfg.FwEnvConfig = filepath.Join(dir, "fw_env.config")
		os.WriteFile(cfg.FwEnvConfig, []byte(env+" 0x0 0x4000\n"+env+" 0x4000 0x4000\n"), 0o644)
	case "android":
		cfg.Misc = filepath.Join(dir, "misc")
		f, err := os.Create(cfg.Misc)
		if err != nil {
			t.Fatal(err)
		}
		f.Truncate(64 << 10)
		if err := android.WriteAt(f, cfg.Misc, android.AOSPDefault(2, 0)); err != nil {
			t.Fatal(err)
		}
		f.Close()
	}
	b := &board{t: t, cfg: cfg, dir: dir}
	b.setBooted("a")
	return b
}

func (b *board) setBooted(slot string) {
	line := "quiet sysupdate.slot=" + slot
	if b.cfg.Bootloader == "android" {
		line = "androidboot.slot_suffix=_" + slot
	}
	os.WriteFile(b.cfg.Cmdline, []byte(line+"\n"), 0o644)
}

func (b *board) engine() *Engine {
	b.t.Helper()
	e, err := New(b.cfg, Options{Reboot: func(context.Context) error { return errors.New("no reboot in tests") }})
	if err != nil {
		b.t.Fatal(err)
	}
	return e
}

// boot runs the bootloader's rule once and returns the slot it boots.
func (b *board) boot() string {
	b.t.Helper()
	be, err := OpenBootloader(b.cfg, "")
	if err != nil {
		b.t.Fatal(err)
	}
	var slot string
	switch b.cfg.Bootloader {
	case "grub":
		env, err := grub.ReadFile(b.cfg.GrubEnv)
		if err != nil {
			b.t.Fatal(err)
		}
		dec := grub.SchemeSysupdate.Boot(env, []string{"a", "b"})
		for _, v := range dec.Save {
			env.Set(v.Name, v.Value)
		}
		if err := grub.WriteFile(b.cfg.GrubEnv, env); err != nil {
			b.t.Fatal(err)
		}
		slot = dec.Slot
	case "android":
		f, err := os.OpenFile(b.cfg.Misc, os.O_RDWR, 0)
		if err != nil {
			b.t.Fatal(err)
		}
		c, err := android.ReadAt(f, b.cfg.Misc)
		if err != nil {
			b.t.Fatal(err)
		}
		c, i, ok := android.Select(c)
		if !ok {
			b.t.Fatal("android_ab finds no bootable slot")
		}
		android.WriteAt(f, b.cfg.Misc, c)
		f.Close()
		slot = android.SlotName(i)
	default:
		st, err := be.Status()
		if err != nil {
			b.t.Fatal(err)
		}
		slot = st.Next
	}
	b.setBooted(slot)
	return slot
}

func (b *board) status() bootloaders.Status {
	be, err := OpenBootloader(b.cfg, "")
	if err != nil {
		b.t.Fatal(err)
	}
	st, err := be.Status()
	if err != nil {
		b.t.Fatal(err)
	}
	return st
}

// updated puts the board where an update leaves it: v1 confirmed in a,
// v2 written to b, the bootloader switched to b, and b booted on trial.
func (b *board) updated() {
	b.t.Helper()
	e := b.engine()
	if _, err := e.MarkGood(context.Background(), nil); err != nil {
		b.t.Fatal(err)
	}
	st := &client.State{Schema: 1, Installed: 1, Pending: &client.Pending{Version: 2, Slot: "b", From: "a", Switched: true},
		Slots: map[string]*client.SlotRecord{"a": {Version: 1, Confirmed: true}, "b": {Version: 2}}}
	if err := st.Save(b.cfg.State); err != nil {
		b.t.Fatal(err)
	}
	if err := e.SetNext(context.Background(), "b", 3); err != nil {
		b.t.Fatal(err)
	}
	if s := b.boot(); s != "b" {
		b.t.Fatalf("after the switch the bootloader boots %s, want b", s)
	}
}

func (b *board) check(name, script string) {
	os.MkdirAll(b.cfg.HealthDir, 0o755)
	if err := os.WriteFile(filepath.Join(b.cfg.HealthDir, name), []byte("#!/bin/sh\n"+script+"\n"), 0o755); err != nil {
		b.t.Fatal(err)
	}
}

func slotState(st bootloaders.Status, name string) bootloaders.Slot {
	for _, s := range st.Slots {
		if s.Name == name {
			return s
		}
	}
	return bootloaders.Slot{}
}

// TestHealthChecks (issue 7, acceptance 5): with every backend, a failing
// health check leaves the slot unconfirmed and status names it; with
// health_failure = mark-bad the bootloader falls back on the next boot;
// with stay it falls back once the tries run out; passing checks confirm.
func TestHealthChecks(t *testing.T) {
	for _, backend := range []string{"grub", "uboot", "android"} {
		t.Run(backend+"/mark-bad", func(t *testing.T) {
			b := newBoard(t, backend)
			b.cfg.HealthFailure = config.HealthMarkBad
			b.updated()
			b.check("10-services", "exit 0")
			b.check("20-network", "echo starting; echo 'eth0: no carrier' >&2; exit 3")
			_, err := b.engine().MarkGood(context.Background(), nil)
			if !errors.Is(err, ErrHealth) || !strings.Contains(err.Error(), "20-network") {
				t.Fatalf("MarkGood with a failing check: %v", err)
			}
			if s := slotState(b.status(), "b"); s.Successful || s.Bootable {
				t.Fatalf("slot b after a failed check with mark-bad: %+v", s)
			}
			st, err := b.engine().Status(context.Background())
			if err != nil {
				t.Fatal(err)
			}
			if st.Health == nil || st.Health.Check != "20-network" || !strings.Contains(st.Health.Output, "eth0: no carrier") || st.Installed != 1 {
				t.Fatalf("status after the failed check: %+v, health %+v", st, st.Health)
			}
			if s := b.boot(); s != "a" {
				t.Fatalf("next boot after mark-bad: %s, want a", s)
			}
		})
		t.Run(backend+"/stay", func(t *testing.T) {
			b := newBoard(t, backend)
			b.updated()
			b.check("20-network", "exit 1")
			if _, err := b.engine().MarkGood(context.Background(), nil); !errors.Is(err, ErrHealth) {
				t.Fatalf("MarkGood with a failing check: %v", err)
			}
			if s := slotState(b.status(), "b"); s.Successful || !s.Bootable {
				t.Fatalf("slot b after a failed check with stay: %+v, want on trial", s)
			}
			if backend == "uboot" {
				return // the countdown is boot.cmd's (QEMU tests)
			}
			var boots []string
			for range 8 {
				boots = append(boots, b.boot())
				if boots[len(boots)-1] == "a" {
					break
				}
			}
			if boots[len(boots)-1] != "a" {
				t.Fatalf("unconfirmed slot b never fell back: boots %v", boots)
			}
		})
		t.Run(backend+"/pass", func(t *testing.T) {
			b := newBoard(t, backend)
			b.updated()
			b.check("10-services", "exit 0")
			res, err := b.engine().MarkGood(context.Background(), nil)
			if err != nil || !res.Promoted || res.Version != 2 || fmt.Sprint(res.Checks) != "[10-services]" {
				t.Fatalf("MarkGood with passing checks: %+v, %v", res, err)
			}
			if s := slotState(b.status(), "b"); !s.Successful {
				t.Fatalf("slot b after passing checks: %+v", s)
			}
		})
	}
}

// TestHealthCheckTimeout: a check that overruns its timeout has failed.
func TestHealthCheckTimeout(t *testing.T) {
	b := newBoard(t, "grub")
	b.updated()
	b.cfg.HealthTimeout = 200e6
	b.check("10-hang", "sleep 30")
	_, err := b.engine().MarkGood(context.Background(), nil)
	if !errors.Is(err, ErrHealth) || !strings.Contains(err.Error(), "did not finish") {
		t.Fatalf("hanging check: %v", err)
	}
}
