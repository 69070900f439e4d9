package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"math/rand"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/sysupdate/sysupdate/bootloaders/grub"
	"github.com/sysupdate/sysupdate/client"
	"github.com/sysupdate/sysupdate/partition"
)

// device is a test device: a GPT disk image with rootfs_a and rootfs_b, a
// grubenv, a kernel command line file and a config, updating from a
// repository served over HTTP.
type device struct {
	t                      *testing.T
	dir, repo, keys, conf  string
	disk, grubenv, cmdline string
	state                  string
	imgs                   map[int][]byte
	userAgent              atomic.Value // the last User-Agent the server saw
}

const partSize = 1 << 20

func newDevice(t *testing.T) *device {
	t.Helper()
	for _, tool := range []string{"sfdisk", "grub-editenv"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing: run make deps", tool)
		}
	}
	dir := t.TempDir()
	d := &device{t: t, dir: dir, repo: filepath.Join(dir, "repo"), keys: filepath.Join(dir, "keys"),
		disk: filepath.Join(dir, "disk.img"), grubenv: filepath.Join(dir, "grubenv"),
		cmdline: filepath.Join(dir, "cmdline"), state: filepath.Join(dir, "state.json"), imgs: map[int][]byte{}}
	os.WriteFile(d.disk, nil, 0o644)
	os.Truncate(d.disk, 4*partSize)
	cmd := exec.Command("sfdisk", "--quiet", d.disk)
	cmd.Stdin = strings.NewReader("label: gpt\nstart=2048, size=1MiB, name=rootfs_a\nsize=1MiB, name=rootfs_b\n")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	if out, err := exec.Command("grub-editenv", d.grubenv, "create").CombinedOutput(); err != nil {
		t.Fatalf("grub-editenv: %v: %s", err, out)
	}
	runOK(t, "keygen", "--out", d.keys, "--expires", "10y", "master")
	runOK(t, "keygen", "--out", d.keys, "signing")
	runOK(t, "keyring", "--repo", d.repo, "--master", filepath.Join(d.keys, "master.key"), filepath.Join(d.keys, "signing.pub"))
	h := serveHandler(d.repo)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		d.userAgent.Store(r.UserAgent())
		h.ServeHTTP(w, r)
	}))
	t.Cleanup(srv.Close)
	os.WriteFile(filepath.Join(dir, "machine-id"), []byte("0123456789abcdef0123456789abcdef\n"), 0o644)
	d.setCmdline("a")
	d.conf = filepath.Join(dir, "sysupdate.conf")
	conf := fmt.Sprintf(`repository = %s
model = board
master_keys = %s
state = %s
machine_id = %s
lock = %s
cmdline = %s
bootloader = grub
grubenv = %s
slot.rootfs.a = gpt:%s#rootfs_a
slot.rootfs.b = gpt:%s#rootfs_b
`, srv.URL, filepath.Join(d.keys, "master.pub"), d.state, filepath.Join(dir, "machine-id"), filepath.Join(dir, "lock"), d.cmdline, d.grubenv, d.disk, d.disk)
	os.WriteFile(d.conf, []byte(conf), 0o644)
	return d
}

// publish adds version v: a 600 KiB image, each version changing a little.
func (d *device) publish(v int) {
	r := rand.New(rand.NewSource(1))
	img := make([]byte, 600<<10)
	r.Read(img)
	for i := 2; i <= v; i++ {
		copy(img[i*50000:], bytes.Repeat([]byte{byte(i)}, 3000))
	}
	d.imgs[v] = img
	p := filepath.Join(d.dir, fmt.Sprintf("rootfs-%d.img", v))
	os.WriteFile(p, img, 0o644)
	runOK(d.t, "publish", "--repo", d.repo, "--channel", "stable", "--version", fmt.Sprint(v), "--key", filepath.Join(d.keys, "signing.key"), "--model", "board", "rootfs="+p)
}

func (d *device) setCmdline(slot string) {
	os.WriteFile(d.cmdline, []byte("quiet sysupdate.slot="+slot+"\n"), 0o644)
}

// update runs sysupdate update --json and decodes its result.
func (d *device) update(args ...string) (updateResult, string, error) {
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), append([]string{"update", "--config", d.conf, "--json", "--no-reboot"}, args...), &stdout, &stderr)
	var res updateResult
	if jerr := json.Unmarshal(stdout.Bytes(), &res); jerr != nil {
		d.t.Fatalf("update output: %v\n%s\n%s", jerr, stdout.String(), stderr.String())
	}
	return res, stderr.String(), err
}

func (d *device) status() statusResult {
	var res statusResult
	if err := json.Unmarshal([]byte(runOK(d.t, "status", "--config", d.conf, "--json")), &res); err != nil {
		d.t.Fatal(err)
	}
	return res
}

// slot returns the first n bytes of a slot.
func (d *device) slot(name string, n int) []byte {
	dev, err := partition.Open("gpt:"+d.disk+"#rootfs_"+name, false)
	if err != nil {
		d.t.Fatal(err)
	}
	defer dev.Close()
	b := make([]byte, n)
	if _, err := dev.ReadAt(b, 0); err != nil {
		d.t.Fatal(err)
	}
	return b
}

// boot applies the shipped grub.cfg's boot rule once, as GRUB would, and
// "boots" the chosen slot.
func (d *device) boot() string {
	env, err := grub.ReadFile(d.grubenv)
	if err != nil {
		d.t.Fatal(err)
	}
	dec := grub.SchemeSysupdate.Boot(env, []string{"a", "b"})
	for _, v := range dec.Save {
		if err := env.Set(v.Name, v.Value); err != nil {
			d.t.Fatal(err)
		}
	}
	if err := grub.WriteFile(d.grubenv, env); err != nil {
		d.t.Fatal(err)
	}
	d.setCmdline(dec.Slot)
	return dec.Slot
}

// TestUpdateFlow drives a device through factory flash, a delta update,
// mark-good, a source-mismatch fallback, refusals and a rollback.
func TestUpdateFlow(t *testing.T) {
	d := newDevice(t)
	d.publish(1)

	// Factory flash: pretend b runs, so v1 goes into a in full.
	res, _, err := d.update("--slot", "b")
	if err != nil || !res.Switched || res.Target != "a" || res.NextBoot != "a" || len(res.Images) != 1 || res.Images[0].Stream != "full" || !res.Images[0].Verified {
		t.Fatalf("factory flash: %+v, %v", res, err)
	}
	if !bytes.Equal(d.slot("a", len(d.imgs[1])), d.imgs[1]) {
		t.Fatal("slot a does not hold v1")
	}
	if out := runOK(t, "mark-good", "--config", d.conf, "--slot", "a"); !strings.Contains(out, "version 1") {
		t.Fatalf("mark-good: %s", out)
	}

	// Up to date: nothing to do, nothing switched.
	if res, _, err := d.update(); err != nil || !res.UpToDate || res.Switched {
		t.Fatalf("up to date: %+v, %v", res, err)
	}
	// The server learns the version, model, channel and installed build.
	if ua, _ := d.userAgent.Load().(string); !strings.HasPrefix(ua, "sysupdate/") ||
		!strings.Contains(ua, "model=board") || !strings.Contains(ua, "channel=stable") || !strings.Contains(ua, "build=1") {
		t.Fatalf("User-Agent %q lacks version, model, channel or build", ua)
	}

	// Delta path: v2 from a into b over HTTP, with progress lines.
	d.publish(2)
	res, progress, err := d.update()
	if err != nil || !res.Switched || res.Active != "a" || res.Target != "b" || res.NextBoot != "b" || res.Images[0].Stream != "delta" || res.Images[0].From != 1 || res.Images[0].FellBack || !res.Images[0].Verified {
		t.Fatalf("delta update: %+v, %v", res, err)
	}
	if res.Images[0].Bytes >= int64(len(d.imgs[2]))/4 {
		t.Errorf("delta fetched %d bytes for a %d-byte image", res.Images[0].Bytes, len(d.imgs[2]))
	}
	if !strings.Contains(progress, "rootfs: 100% ") {
		t.Errorf("no progress lines on stderr: %q", progress)
	}
	if !bytes.Equal(d.slot("b", len(d.imgs[2])), d.imgs[2]) {
		t.Fatal("slot b does not hold v2")
	}
	st := d.status()
	if st.Installed != 1 || st.Pending == nil || st.Pending.Version != 2 || st.Pending.Slot != "b" || st.NextBoot != "b" || st.Rollback != nil {
		t.Fatalf("status before reboot: %+v", st)
	}

	// Reboot into b and confirm.
	if s := d.boot(); s != "b" {
		t.Fatalf("GRUB booted %s, want b", s)
	}
	runOK(t, "mark-good", "--config", d.conf)
	st = d.status()
	if st.Installed != 2 || st.Pending != nil || st.Active != "b" || st.NextBoot != "b" {
		t.Fatalf("status after mark-good: %+v", st)
	}

	// Refusal: another model's release. The bootloader is not touched.
	before, _ := os.ReadFile(d.grubenv)
	d.publish(3)
	res, _, err = d.update("--model", "other-board")
	after, _ := os.ReadFile(d.grubenv)
	if err == nil || res.Refusal != "wrong-model" || !strings.Contains(err.Error(), "nothing switched") || res.Switched || !bytes.Equal(before, after) {
		t.Fatalf("refusal: %+v, %v (grubenv changed: %v)", res, err, !bytes.Equal(before, after))
	}
	// Refusal: another update holds the lock.
	unlock, err := lockFile(filepath.Join(d.dir, "sysupdate.lock"))
	if err != nil {
		t.Fatal(err)
	}
	if _, _, err := d.update(); err == nil || !strings.Contains(err.Error(), "another sysupdate operation is running") {
		t.Fatalf("locked: %v", err)
	}
	unlock()

	// Source mismatch: slot b (running) no longer is v2's image, so the
	// delta 2->3 fails and update falls back to the full image.
	dev, err := partition.Open("gpt:"+d.disk+"#rootfs_b", true)
	if err != nil {
		t.Fatal(err)
	}
	dev.WriteAt([]byte("tampered"), 100000)
	dev.Close()
	res, _, err = d.update()
	if err != nil || !res.Switched || res.Target != "a" || res.Images[0].Stream != "full" || !res.Images[0].FellBack || !res.Images[0].Verified {
		t.Fatalf("fallback: %+v, %v", res, err)
	}
	if !bytes.Equal(d.slot("a", len(d.imgs[3])), d.imgs[3]) {
		t.Fatal("slot a does not hold v3 after the fallback")
	}

	// Rollback: slot a never confirms itself; after its tries GRUB falls
	// back to b and status says so.
	var booted []string
	for range 4 {
		booted = append(booted, d.boot())
	}
	if strings.Join(booted, "") != "aaab" {
		t.Fatalf("boots: %v, want a a a b", booted)
	}
	st = d.status()
	want := "update to version 3 in slot a did not confirm itself and the bootloader fell back to b"
	if st.Rollback == nil || st.Rollback.Version != 3 || st.Rollback.Slot != "a" || st.Rollback.FellBackTo != "b" || st.Rollback.Message != want || st.Installed != 2 {
		t.Fatalf("rollback report: %+v %+v", st, st.Rollback)
	}
	if out := runOK(t, "status", "--config", d.conf); !strings.Contains(out, "ROLLBACK: "+want) {
		t.Fatalf("human status: %s", out)
	}
	// mark-good on the fallback slot keeps the report's record.
	runOK(t, "mark-good", "--config", d.conf)
	if st := d.status(); st.Pending == nil || st.Installed != 2 {
		t.Fatalf("mark-good on the fallback slot: %+v", st)
	}
}

// TestUpdateBrokenStream: a stream that fails mid-way leaves the bootloader
// pointing at the running slot and the target unbootable.
func TestUpdateBrokenStream(t *testing.T) {
	d := newDevice(t)
	d.publish(1)
	// Corrupt the full stream after its header: the header hash still
	// matches, the data does not.
	s := filepath.Join(d.repo, "streams", "board", "rootfs", "1.sus")
	b, err := os.ReadFile(s)
	if err != nil {
		t.Fatal(err)
	}
	b[len(b)-100] ^= 0xff
	os.WriteFile(s, b, 0o644)
	runOK(t, "bootloader", "--config", d.conf, "mark-good", "a")
	runOK(t, "bootloader", "--config", d.conf, "mark-good", "b")
	res, _, err := d.update()
	if err == nil || res.Switched || !strings.Contains(err.Error(), "slot b holds a partial image and is not bootable; nothing switched: the next boot is still slot a") {
		t.Fatalf("broken stream: %+v, %v", res, err)
	}
	st := d.status()
	if st.NextBoot != "a" || st.Bootloader.Slots[1].Bootable || st.Pending != nil {
		t.Fatalf("after a failed write: %+v", st)
	}
	// The state file was not given a pending version.
	state, err := client.LoadState(d.state)
	if err != nil || state.Pending != nil {
		t.Fatalf("state: %+v, %v", state, err)
	}
}

// TestUpdateRefusesBadConfig: problems found before anything is written.
func TestUpdateRefusesBadConfig(t *testing.T) {
	d := newDevice(t)
	d.publish(1)
	conf, _ := os.ReadFile(d.conf)
	for _, tc := range []struct {
		name, conf, args, want string
	}{
		{"same bytes", strings.Replace(string(conf), "#rootfs_b", "#rootfs_a", 1), "", "are the same bytes"},
		{"no slots for image", strings.ReplaceAll(string(conf), "slot.rootfs", "slot.boot"), "", `has no slot.rootfs.* devices`},
		{"unreadable command line", string(conf), "--cmdline /nonexistent", "read the kernel command line /nonexistent"},
		{"no active slot", string(conf), "--cmdline /dev/null", "cannot tell which slot is running"},
		{"bad --slot", string(conf), "--slot c", "--slot c"},
		{"typo", string(conf) + "bootlader = grub\n", "", ":12: unknown key"},
	} {
		p := filepath.Join(d.dir, "bad.conf")
		os.WriteFile(p, []byte(tc.conf), 0o644)
		before, _ := os.ReadFile(d.grubenv)
		args := []string{"update", "--config", p, "--no-reboot"}
		if tc.args != "" {
			args = append(args, strings.Fields(tc.args)...)
		}
		var stdout, stderr bytes.Buffer
		err := run(context.Background(), args, &stdout, &stderr)
		after, _ := os.ReadFile(d.grubenv)
		if err == nil || !strings.Contains(err.Error(), tc.want) || !bytes.Equal(before, after) {
			t.Errorf("%s: %v; want %q and the grubenv untouched", tc.name, err, tc.want)
		}
	}
	if err := run(context.Background(), []string{"update", "--config", filepath.Join(d.dir, "none.conf")}, &bytes.Buffer{}, &bytes.Buffer{}); err == nil || !strings.Contains(err.Error(), "no configuration file") {
		t.Errorf("missing config: %v", err)
	}
}

// TestConfigOverride: check and bootloader take their settings from the
// config file, and explicit flags win.
func TestConfigOverride(t *testing.T) {
	d := newDevice(t)
	d.publish(1)
	out := runOK(t, "check", "--config", d.conf)
	if !strings.Contains(out, "update available: version 1") {
		t.Fatalf("check --config: %s", out)
	}
	var stdout, stderr bytes.Buffer
	err := run(context.Background(), []string{"check", "--config", d.conf, "--model", "nope"}, &stdout, &stderr)
	if err == nil || !strings.Contains(err.Error(), "hardware model") {
		t.Fatalf("--model should override the file: %v", err)
	}
	runOK(t, "bootloader", "--config", d.conf, "set-next", "b")
	other := filepath.Join(d.dir, "other.grubenv")
	exec.Command("grub-editenv", other, "create").Run()
	runOK(t, "bootloader", "--config", d.conf, "--grubenv", other, "set-next", "a")
	env, _ := grub.ReadFile(d.grubenv)
	env2, _ := grub.ReadFile(other)
	if o, _ := env.Get("SYSUPDATE_ORDER"); !strings.HasPrefix(o, "b") {
		t.Errorf("config grubenv order %q", o)
	}
	if o, _ := env2.Get("SYSUPDATE_ORDER"); !strings.HasPrefix(o, "a") {
		t.Errorf("--grubenv order %q", o)
	}
}
