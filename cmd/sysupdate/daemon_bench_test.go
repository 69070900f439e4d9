//go:build !nodaemon

package main

import (
	"bufio"
	"fmt"
	"math/rand"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/godbus/dbus/v5"
	"github.com/sysupdate/sysupdate/daemon"
	"github.com/sysupdate/sysupdate/internal/dbustest"
	"github.com/sysupdate/sysupdate/internal/testbin"
)

// BenchmarkDaemonCheckRSS: the daemon's memory over many check cycles
// against `sysupdate serve` on loopback, driven as the UI drives it
// (CheckForUpdate, then UpdateAvailableStatus). Run with -benchtime 1000x
// for the figure in docs/dbus.md; it reports the resident set after 10
// warm-up cycles and after the last one, and the peak.
func BenchmarkDaemonCheckRSS(b *testing.B) {
	dir := b.TempDir()
	pub := testbin.Build(b, testbin.Publisher, "")
	inproc := func(args ...string) {
		if out, errOut, err := testbin.Run(pub, args...); err != nil {
			b.Fatalf("sysupdate-publish %s: %v\n%s%s", strings.Join(args, " "), err, out, errOut)
		}
	}
	disk, keys, repo := filepath.Join(dir, "disk.img"), filepath.Join(dir, "keys"), filepath.Join(dir, "repo")
	os.WriteFile(disk, nil, 0o644)
	os.Truncate(disk, 4<<20)
	sf := exec.Command("sfdisk", "--quiet", disk)
	sf.Stdin = strings.NewReader("label: gpt\nstart=2048, size=1MiB, name=rootfs_a\nsize=1MiB, name=rootfs_b\n")
	if out, err := sf.CombinedOutput(); err != nil {
		b.Fatalf("sfdisk (make deps): %v %s", err, out)
	}
	if out, err := exec.Command("grub-editenv", filepath.Join(dir, "grubenv"), "create").CombinedOutput(); err != nil {
		b.Fatalf("grub-editenv (make deps): %v %s", err, out)
	}
	inproc("keygen", "--out", keys, "--expires", "10y", "master")
	inproc("keygen", "--out", keys, "signing")
	inproc("keyring", "--repo", repo, "--master", filepath.Join(keys, "master.key"), filepath.Join(keys, "signing.pub"))
	img := make([]byte, 600<<10)
	rand.New(rand.NewSource(1)).Read(img)
	os.WriteFile(filepath.Join(dir, "rootfs.img"), img, 0o644)
	inproc("publish", "--repo", repo, "--channel", "stable", "--version", "1", "--key", filepath.Join(keys, "signing.key"), "--model", "board", "rootfs="+filepath.Join(dir, "rootfs.img"))

	bin := buildBinary(b)
	srv := exec.Command(pub, "serve", "--addr", "127.0.0.1:0", repo)
	pipe, _ := srv.StdoutPipe()
	srv.Stderr = srv.Stdout
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { srv.Process.Kill(); srv.Wait() })
	url := ""
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		if m := regexp.MustCompile(`(http://127\.0\.0\.1:[0-9]+)`).FindString(sc.Text()); m != "" {
			url = m
			break
		}
	}
	if url == "" {
		b.Fatal("sysupdate serve printed no URL")
	}
	go func() {
		for sc.Scan() {
		}
	}()
	os.WriteFile(filepath.Join(dir, "machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o644)
	os.WriteFile(filepath.Join(dir, "cmdline"), []byte("sysupdate.slot=a\n"), 0o644)
	conf := filepath.Join(dir, "sysupdate.conf")
	os.WriteFile(conf, []byte(fmt.Sprintf("repository = %s\nmodel = board\nmaster_keys = %s\nstate = %s\nmachine_id = %s\ncmdline = %s\nbootloader = grub\ngrubenv = %s\nslot.rootfs.a = gpt:%s#rootfs_a\nslot.rootfs.b = gpt:%s#rootfs_b\n",
		url, filepath.Join(keys, "master.pub"), filepath.Join(dir, "state.json"), filepath.Join(dir, "machine-id"), filepath.Join(dir, "cmdline"), filepath.Join(dir, "grubenv"), disk, disk)), 0o644)

	bus := dbustest.Start(b)
	p := startDaemon(b, bin, bus, conf)
	cli, err := dbus.Connect(bus.Address)
	if err != nil {
		b.Fatal(err)
	}
	defer cli.Close()
	cli.AddMatchSignal(dbus.WithMatchInterface(daemon.SystemImageName), dbus.WithMatchMember("UpdateAvailableStatus"))
	sigs := make(chan *dbus.Signal, 16)
	cli.Signal(sigs)
	o := cli.Object(daemon.SystemImageName, daemon.SystemImagePath)
	if err := o.Call(daemon.SystemImageName+".SetSetting", 0, "auto_download", "0").Err; err != nil {
		b.Fatal(err)
	}
	cycle := func() {
		if err := o.Call(daemon.SystemImageName+".CheckForUpdate", 0).Err; err != nil {
			b.Fatal(err)
		}
		select {
		case s := <-sigs:
			if len(s.Body) != 6 || s.Body[0] != true || s.Body[5] != "" {
				b.Fatalf("UpdateAvailableStatus %v", s.Body)
			}
		case <-time.After(10 * time.Second):
			b.Fatalf("no UpdateAvailableStatus in 10 s:\n%s", p.stderr.String())
		}
	}
	for range 10 {
		cycle()
	}
	start := procStatusKiB(b, p.cmd.Process.Pid, "VmRSS")
	b.ResetTimer()
	for range b.N {
		cycle()
	}
	b.StopTimer()
	b.ReportMetric(float64(start), "rss-after-10-KiB")
	b.ReportMetric(float64(procStatusKiB(b, p.cmd.Process.Pid, "VmRSS")), "rss-end-KiB")
	b.ReportMetric(float64(procStatusKiB(b, p.cmd.Process.Pid, "VmHWM")), "peak-rss-KiB")
}

// procStatusKiB reads a kB field of /proc/PID/status.
func procStatusKiB(b *testing.B, pid int, field string) int {
	st, err := os.ReadFile(fmt.Sprintf("/proc/%d/status", pid))
	if err != nil {
		b.Fatal(err)
	}
	for _, l := range strings.Split(string(st), "\n") {
		if f := strings.Fields(l); len(f) >= 2 && f[0] == field+":" {
			n, _ := strconv.Atoi(f[1])
			return n
		}
	}
	b.Fatalf("no %s in /proc/%d/status", field, pid)
	return 0
}
