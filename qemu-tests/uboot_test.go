package qemutests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"
)

// TestUBootScript runs bootloaders/uboot/boot.cmd in real U-Boot
// (qemu_arm64, TCG) on several environments and checks that the slot it
// boots, and the counters it leaves, are what `sysupdate bootloader status`
// predicts from the same environment. U-Boot's saveenv to pflash fails
// under this QEMU, so each case is one boot, read from the console.
func TestUBootScript(t *testing.T) {
	for _, tool := range []string{"qemu-system-aarch64", "mkimage", "mkenvimage"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing: run make deps", tool)
		}
	}
	const ubootBin = "/usr/lib/u-boot/qemu_arm64/u-boot.bin"
	if _, err := os.Stat(ubootBin); err != nil {
		t.Fatalf("%s missing (package u-boot-qemu): run make deps", ubootBin)
	}
	sysupdate, err := filepath.Abs("../bin/sysupdate")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(sysupdate); err != nil {
		t.Fatalf("%s missing: run make build", sysupdate)
	}
	dir := t.TempDir()
	scr := filepath.Join(dir, "boot.scr")
	if out, err := exec.Command("mkimage", "-A", "arm64", "-T", "script", "-C", "none", "-n", "sysupdate", "-d", "../bootloaders/uboot/boot.cmd", scr).CombinedOutput(); err != nil {
		t.Fatalf("mkimage: %v: %s", err, out)
	}
	line := regexp.MustCompile(`sysupdate: booting slot ([AB]) \(A left (\S+), B left (\S+)\)`)
	for i, vars := range []string{
		"BOOT_ORDER=B A\nBOOT_A_LEFT=3\nBOOT_B_LEFT=3\n",
		"BOOT_ORDER=B A\nBOOT_A_LEFT=3\nBOOT_B_LEFT=0\n",
		"BOOT_ORDER=A B\nBOOT_A_LEFT=0\nBOOT_B_LEFT=0\n",
		"BOOT_ORDER=X Y\nBOOT_A_LEFT=zz\n",
		"",
		// A recovery request this U-Boot cannot clear (its saveenv fails
		// here) is dropped: the slot boots as predicted.
		"BOOT_ORDER=B A\nBOOT_A_LEFT=3\nBOOT_B_LEFT=2\nsysupdate_recovery=1\nsysupdate_part_recovery=6\n",
	} {
		t.Run(fmt.Sprint(i), func(t *testing.T) {
			txt := filepath.Join(dir, "env.txt")
			img := filepath.Join(dir, fmt.Sprintf("env%d.bin", i))
			if err := os.WriteFile(txt, []byte("bootdelay=0\nbootcmd=source 0x50000000\n"+vars), 0o644); err != nil {
				t.Fatal(err)
			}
			if out, err := exec.Command("mkenvimage", "-s", "0x40000", "-p", "0", "-o", img, txt).CombinedOutput(); err != nil {
				t.Fatalf("mkenvimage: %v: %s", err, out)
			}
			conf := filepath.Join(dir, "fw_env.config")
			if err := os.WriteFile(conf, []byte(img+" 0 0x40000\n"), 0o644); err != nil {
				t.Fatal(err)
			}
			out, err := exec.Command(sysupdate, "bootloader", "status", "--bootloader", "uboot", "--fw-env-config", conf, "--json").Output()
			if err != nil {
				t.Fatalf("sysupdate status: %v", err)
			}
			var st struct {
				Next  string `json:"next"`
				Slots []struct {
					Name      string `json:"name"`
					TriesLeft int    `json:"tries_left"`
				} `json:"slots"`
			}
			if err := json.Unmarshal(out, &st); err != nil {
				t.Fatal(err)
			}
			if err := os.Truncate(img, 64<<20); err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
			defer cancel()
			q := exec.CommandContext(ctx, "qemu-system-aarch64", "-machine", "virt", "-cpu", "cortex-a57", "-m", "512",
				"-nographic", "-bios", ubootBin, "-drive", "if=pflash,format=raw,index=1,file="+img,
				"-device", "loader,file="+scr+",addr=0x50000000,force-raw=on", "-monitor", "none", "-serial", "stdio")
			stdout, err := q.StdoutPipe()
			if err != nil {
				t.Fatal(err)
			}
			if err := q.Start(); err != nil {
				t.Fatal(err)
			}
			defer func() { q.Process.Kill(); q.Wait() }()
			var console strings.Builder
			sc := bufio.NewScanner(stdout)
			for sc.Scan() {
				console.WriteString(sc.Text() + "\n")
				m := line.FindStringSubmatch(sc.Text())
				if m == nil {
					continue
				}
				if strings.Contains(vars, "sysupdate_recovery=1") && !strings.Contains(console.String(), "sysupdate: cannot clear sysupdate_recovery (saveenv failed); booting a slot") {
					t.Fatalf("recovery request: no \"cannot clear\" line before the slot:\n%s", console.String())
				}
				slot := strings.ToLower(m[1])
				if slot != st.Next {
					t.Fatalf("U-Boot booted %s, sysupdate status predicted %s", slot, st.Next)
				}
				// The chosen counter is one less than status reported, or
				// 3-1 when the script had to reset all counters.
				left := map[string]string{"a": m[2], "b": m[3]}[slot]
				var want int
				for _, s := range st.Slots {
					if s.Name == slot {
						want = s.TriesLeft - 1
					}
				}
				if want < 0 {
					want = 2
				}
				if left != fmt.Sprintf("%x", want) {
					t.Errorf("slot %s left %s tries, want %x", slot, left, want)
				}
				return
			}
			t.Fatalf("no boot decision on the console:\n%s", console.String())
		})
	}
}
