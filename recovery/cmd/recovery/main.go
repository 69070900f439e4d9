// Command recovery is the entry point (u-root's uinit) of the sysupdate
// recovery initramfs built by `make initramfs`. It looks for a USB stick:
// a block device whose ext2/3/4 or FAT filesystem carries the label given
// by -label (default SYSUPDATE) and holds a sysupdate repository (a
// directory with channels/, at the top of the stick or in repo/). It
// mounts it read-only at /mnt/usb, installs the newest release into the
// slot the bootloader would not boot next with
// `sysupdate update --repo DIR --slot KEEP --no-reboot` (which verifies,
// writes and switches the bootloader), then syncs and reboots. When no
// such stick appears within -wait, or the install fails, it prints what
// it looked for and returns, and u-root's init starts the shell (gosh).
//
// Nothing here is durable by itself: every write is sysupdate's.
package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"golang.org/x/sys/unix"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	defer stop()
	if err := run(ctx, os.Args[1:], os.Stdout); err != nil {
		fmt.Fprintf(os.Stdout, "sysupdate-recovery: %v\nsysupdate-recovery: dropping to the shell; to install by hand: mount the stick and run sysupdate install DIR-OR-BUNDLE --slot KEEP\n", err)
		os.Exit(1)
	}
}

func run(ctx context.Context, args []string, out io.Writer) error {
	fs := flag.NewFlagSet("recovery", flag.ContinueOnError)
	label := fs.String("label", "SYSUPDATE", "filesystem label of the USB stick")
	wait := fs.Duration("wait", 15*time.Second, "how long to wait for the stick to appear")
	bin := fs.String("sysupdate", "/bin/sysupdate", "the sysupdate binary")
	config := fs.String("config", "/etc/sysupdate/sysupdate.conf", "device configuration")
	keep := fs.String("keep", "", "slot to keep (default: the bootloader's next boot)")
	mnt := fs.String("mount", "/mnt/usb", "where to mount the stick")
	noReboot := fs.Bool("no-reboot", false, "do not reboot after installing")
	if err := fs.Parse(args); err != nil {
		return err
	}
	dev, fstype, err := findStick(ctx, *label, *wait)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(*mnt, 0o755); err != nil {
		return err
	}
	if err := unix.Mount(dev, *mnt, fstype, unix.MS_RDONLY, ""); err != nil {
		return fmt.Errorf("mount %s (%s) on %s: %w", dev, fstype, *mnt, err)
	}
	defer unix.Unmount(*mnt, 0)
	repo, err := findRepo(*mnt)
	if err != nil {
		return fmt.Errorf("stick %s labelled %s: %w", dev, *label, err)
	}
	slot := *keep
	if slot == "" {
		if slot, err = nextSlot(ctx, *bin, *config); err != nil {
			return err
		}
	}
	fmt.Fprintf(out, "sysupdate-recovery: installing from %s on %s, keeping slot %s\n", repo, dev, slot)
	// The engine's install: the same trust checks as an online update,
	// from the stick's repository directory or bundle file.
	cmd := exec.CommandContext(ctx, *bin, "install", repo, "--config", *config, "--slot", slot, "--no-reboot")
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("sysupdate install %s: %w", repo, err)
	}
	fmt.Fprintln(out, "sysupdate-recovery: installed; rebooting")
	unix.Sync()
	if *noReboot {
		return nil
	}
	return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
}

// findStick polls the block devices until one carries a filesystem
// labelled label, for at most wait.
func findStick(ctx context.Context, label string, wait time.Duration) (dev, fstype string, err error) {
	deadline := time.Now().Add(wait)
	var seen []string
	for {
		ents, _ := os.ReadDir("/sys/class/block")
		seen = seen[:0]
		for _, e := range ents {
			p := filepath.Join("/dev", e.Name())
			f, err := os.Open(p)
			if err != nil {
				continue
			}
			t, l, err := readLabel(f)
			f.Close()
			if err != nil {
				continue
			}
			seen = append(seen, fmt.Sprintf("%s=%s(%s)", e.Name(), l, t))
			if l == label {
				return p, t, nil
			}
		}
		if time.Now().After(deadline) {
			return "", "", fmt.Errorf("no filesystem labelled %s within %v (found: %v)", label, wait, seen)
		}
		select {
		case <-ctx.Done():
			return "", "", ctx.Err()
		case <-time.After(250 * time.Millisecond):
		}
	}
}

// findRepo returns the repository directory on the stick mounted at mnt:
// mnt itself or mnt/repo, whichever has channels/.
func findRepo(mnt string) (string, error) {
	for _, d := range []string{mnt, filepath.Join(mnt, "repo")} {
		if st, err := os.Stat(filepath.Join(d, "channels")); err == nil && st.IsDir() {
			return d, nil
		}
	}
	// A bundle file (sysupdate-publish bundle) at the top of the stick.
	if ents, err := os.ReadDir(mnt); err == nil {
		for _, e := range ents {
			if strings.HasSuffix(e.Name(), ".bundle") && e.Type().IsRegular() {
				return filepath.Join(mnt, e.Name()), nil
			}
		}
	}
	return "", errors.New("no repository (a directory with channels/, at its top or in repo/) and no *.bundle file at its top")
}

// nextSlot asks sysupdate which slot the bootloader boots next.
func nextSlot(ctx context.Context, bin, config string) (string, error) {
	var stdout bytes.Buffer
	cmd := exec.CommandContext(ctx, bin, "bootloader", "status", "--json", "--config", config)
	cmd.Stdout = &stdout
	cmd.Stderr = os.Stderr
	if err := cmd.Run(); err != nil {
		return "", fmt.Errorf("sysupdate bootloader status: %w (pass -keep SLOT)", err)
	}
	var st struct {
		Next string `json:"next"`
	}
	if err := json.Unmarshal(stdout.Bytes(), &st); err != nil || st.Next == "" {
		return "", fmt.Errorf("sysupdate bootloader status names no next slot (%v): pass -keep SLOT", err)
	}
	return st.Next, nil
}
