//go:build !nodaemon

package main

import (
	"context"
	"fmt"
	"io"
	"os/exec"
	"strings"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/sysupdate/sysupdate/daemon"
	"github.com/sysupdate/sysupdate/updater"
)

func init() {
	register("daemon", "serve the RAUC- and system-image-compatible D-Bus APIs: checks on a timer, one operation at a time", runDaemon)
}

const daemonSynopsis = "[--config FILE] [--policy check|download|install] [--check-interval D] [--check-delay D] [--bus system|session]"

func runDaemon(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("daemon", daemonSynopsis, stderr)
	df := addDeviceFlags(fs)
	policy := fs.String("policy", "check", "what a periodic check (or sysupdate-check.timer) does with an available update: check (only report it), download (stage it: write and verify the inactive slot, switch when the user applies it) or install (switch too; the reboot is left to the user)")
	interval := fs.Duration("check-interval", 0, "check this often (e.g. 6h); 0 leaves timing to sysupdate-check.timer")
	delay := fs.Duration("check-delay", time.Hour, "random delay added to each periodic wait, so that a fleet does not check at the same second")
	bus := fs.String("bus", "system", "the bus to serve on: system, or session (to try the APIs by hand, docs/dbus.md)")
	settings := fs.String("settings", "/var/lib/sysupdate/daemon-settings.json", "where system-image's settings (auto_download, min_battery, the chosen channel) persist")
	channels := fs.String("channels", "", "comma-separated channels system-image clients may switch to, besides the configured one")
	variant := fs.String("variant", "", "RAUC's Variant property")
	reboot := fs.String("reboot-command", "reboot", `command ApplyUpdate runs to reboot into the update ("" refuses to reboot)`)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError("daemon takes no arguments")
	}
	pol, err := daemon.ParsePolicy(*policy)
	if err != nil {
		return usageError("--policy: %v", err)
	}
	if *interval < 0 || *delay < 0 {
		return usageError("--check-interval and --check-delay must not be negative")
	}
	cfg, err := df.load(fs, true)
	if err != nil {
		return err
	}
	if err := cfg.RequireSlots(); err != nil {
		return err
	}
	eng, err := newDaemonEngine(cfg, updater.Options{Version: version, Slot: df.slot, Reboot: rebootFunc})
	if err != nil {
		return err
	}
	logf := func(format string, a ...any) { fmt.Fprintf(stderr, format+"\n", a...) }
	dc := daemon.Config{Policy: pol, Interval: *interval, RandomDelay: *delay, Variant: *variant,
		SettingsPath: *settings, Logf: logf}
	if *channels != "" {
		dc.Channels = strings.Split(*channels, ",")
	}
	if cmd := strings.Fields(*reboot); len(cmd) > 0 {
		dc.Reboot = func() error {
			out, err := exec.Command(cmd[0], cmd[1:]...).CombinedOutput()
			if err != nil {
				return fmt.Errorf("%s: %w: %s", *reboot, err, out)
			}
			return nil
		}
	}
	d, err := daemon.New(eng, dc)
	if err != nil {
		return err
	}
	var conn *dbus.Conn
	switch *bus {
	case "system":
		conn, err = dbus.ConnectSystemBus()
	case "session":
		conn, err = dbus.ConnectSessionBus()
	default:
		return usageError("--bus %q: use system or session", *bus)
	}
	if err != nil {
		return fmt.Errorf("connect to the %s bus: %w", *bus, err)
	}
	defer conn.Close()
	return d.Run(ctx, conn)
}
