package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/bootloaders"
)

// TestBootloaderUboot drives the uboot backend through the CLI on a
// redundant environment file and checks the result with fw_printenv.
func TestBootloaderUboot(t *testing.T) {
	fwPrintenv, err := exec.LookPath("fw_printenv")
	if err != nil {
		t.Fatal("fw_printenv missing: run make deps")
	}
	dir := t.TempDir()
	env := filepath.Join(dir, "uboot.env")
	conf := filepath.Join(dir, "fw_env.config")
	if err := os.WriteFile(env, make([]byte, 0x8000), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(conf, []byte(env+" 0x0 0x4000\n"+env+" 0x4000 0x4000\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if out, err := exec.Command("fw_setenv", "-c", conf, "-f", "/dev/null", "BOOT_ORDER", "A B").CombinedOutput(); err != nil {
		t.Fatalf("fw_setenv: %v: %s", err, out)
	}
	sysupdate := func(args ...string) (bootloaders.Status, string, error) {
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), append([]string{"bootloader", "--bootloader", "uboot", "--fw-env-config", conf}, args...), &stdout, &stderr)
		var st bootloaders.Status
		if err == nil && strings.Contains(strings.Join(args, " "), "--json") {
			if jerr := json.Unmarshal(stdout.Bytes(), &st); jerr != nil {
				t.Fatalf("%v: bad JSON %q: %v", args, stdout.String(), jerr)
			}
		}
		return st, stdout.String(), err
	}
	st, _, err := sysupdate("set-next", "b", "--tries", "2", "--json")
	if err != nil {
		t.Fatal(err)
	}
	if st.Scheme != "rauc" || st.Next != "b" || st.Slots[1].TriesLeft != 2 || st.Slots[1].Successful {
		t.Errorf("after set-next: %+v", st)
	}
	for name, want := range map[string]string{"BOOT_ORDER": "B A", "BOOT_B_LEFT": "2", "sysupdate_trial": "B"} {
		out, err := exec.Command(fwPrintenv, "-c", conf, "-n", name).Output()
		if err != nil || string(out) != want+"\n" {
			t.Errorf("fw_printenv -n %s = %q, %v; want %q", name, out, err, want)
		}
	}
	if _, out, err := sysupdate("status"); err != nil || !strings.Contains(out, "next boot: b") {
		t.Errorf("status: %q, %v", out, err)
	}
	if _, _, err := sysupdate("mark-good", "c"); !errors.Is(err, bootloaders.ErrUnknownSlot) {
		t.Errorf("mark-good c: %v", err)
	}
	if _, _, err := sysupdate("status", "--uboot-scheme", "nope"); !errors.Is(err, errUsage) {
		t.Errorf("bad scheme: %v, want a usage error", err)
	}
	if _, _, err := sysupdate("status", "--uboot-scheme", "mender"); err == nil || !strings.Contains(err.Error(), "mender_boot_part") {
		t.Errorf("mender scheme on a RAUC env: %v", err)
	}
}
