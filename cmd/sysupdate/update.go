package main

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"os/exec"
	"strings"

	"github.com/sysupdate/sysupdate/updater"
)

func init() {
	register("update", "check, write the inactive slot, verify it, and switch the bootloader to it", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return runInstallCmd(ctx, "update", args, stdout, stderr)
	})
	register("install", "install from a repository directory (USB stick), a URL or a bundle file: update's checks, another source", func(ctx context.Context, args []string, stdout, stderr io.Writer) error {
		return runInstallCmd(ctx, "install", args, stdout, stderr)
	})
}

// rebootCommand is run after a successful update unless --no-reboot.
var rebootCommand = []string{"reboot"}

func rebootFunc(ctx context.Context) error {
	out, err := exec.CommandContext(ctx, rebootCommand[0], rebootCommand[1:]...).CombinedOutput()
	if err != nil {
		return fmt.Errorf("%s failed: %w: %s", strings.Join(rebootCommand, " "), err, strings.TrimSpace(string(out)))
	}
	return nil
}

// updateResult is what update and install print with --json
// (docs/updating.md).
type updateResult struct {
	*updater.Result
	Rebooting bool   `json:"rebooting,omitempty"`
	Error     string `json:"error,omitempty"`
	Refusal   string `json:"refusal,omitempty"`
}

const installSynopsis = `[--config FILE] [--slot S] [--check-only] [--stage] [--allow-downgrade] [--version V]
                 [--json] [--json-events] [--no-reboot]`

// runInstallCmd is update (the configured repository) and install SOURCE.
func runInstallCmd(ctx context.Context, name string, args []string, stdout, stderr io.Writer) error {
	synopsis := installSynopsis
	if name == "install" {
		synopsis = "SOURCE " + synopsis + "\n  SOURCE: a repository directory (a USB stick), a file://, http:// or https:// URL, or a bundle file"
	}
	fs := newFlagSet(name, synopsis, stderr)
	df := addDeviceFlags(fs)
	var req updater.Request
	fs.BoolVar(&req.AllowDowngrade, "allow-downgrade", false, "accept an older release or one below the floor")
	fs.Uint64Var(&req.Version, "version", 0, "install this version instead of the newest")
	fs.BoolVar(&req.CheckOnly, "check-only", false, "say what would be installed and stop")
	fs.BoolVar(&req.NoSwitch, "stage", false, "write and verify the slot, but do not switch the bootloader (activate later)")
	noReboot := fs.Bool("no-reboot", false, "do not reboot after switching")
	asJSON := fs.Bool("json", false, "print the outcome as JSON on stdout")
	jsonEvents := fs.Bool("json-events", false, "write every event (phases, progress, retries, messages) as one JSON object per line on stdout")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	switch {
	case name == "update" && len(pos) != 0:
		return usageError("update takes no arguments (install SOURCE installs from elsewhere)")
	case name == "install" && len(pos) != 1:
		return usageError("install takes one SOURCE: a repository directory, a URL or a bundle file")
	case name == "install":
		req.Source = pos[0]
	}
	applyMemorySettings()
	e, err := df.engine(fs, true)
	if err != nil {
		return err
	}
	log := stdout
	if *asJSON || *jsonEvents {
		log = stderr
	}
	r := newRenderer(log, stderr, *jsonEvents, stdout)
	res, err := e.Install(ctx, req, r.event)
	out := updateResult{Result: res}
	if err == nil && res.Switched && !*noReboot {
		out.Rebooting = true
	}
	if err != nil {
		out.Error, out.Refusal = err.Error(), refusalCode(err)
	}
	if *asJSON {
		if *jsonEvents {
			b, _ := json.Marshal(map[string]any{"type": "result", "result": out})
			fmt.Fprintf(stdout, "%s\n", b)
		} else {
			enc := json.NewEncoder(stdout)
			enc.SetIndent("", "  ")
			if jerr := enc.Encode(out); jerr != nil && err == nil {
				err = jerr
			}
		}
	}
	if err != nil {
		return err
	}
	if out.Rebooting {
		fmt.Fprintf(log, "rebooting into slot %s\n", res.Target)
		if err := rebootFunc(ctx); err != nil {
			return fmt.Errorf("the update is installed and slot %s is next, but %w; reboot by hand", res.Target, err)
		}
	}
	return nil
}
