package main

import (
	"bytes"
	"context"
	"errors"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"syscall"
	"testing"

	"github.com/sysupdate/sysupdate/internal/testbin"
	"github.com/sysupdate/sysupdate/stream"
)

// images writes an old and a new image that differ by a few edits.
func images(t *testing.T, dir string) (oldPath, newPath string, newData []byte) {
	t.Helper()
	r := rand.New(rand.NewPCG(1, 2))
	old := make([]byte, 3<<20)
	for i := 0; i < len(old); i += 64 {
		for j := 0; j < 40 && i+j < len(old); j++ {
			old[i+j] = byte(r.IntN(20))
		}
	}
	nw := bytes.Clone(old)
	copy(nw[100_000:], bytes.Repeat([]byte("new content "), 2000))
	nw = append(nw[:2<<20], append([]byte("inserted"), nw[2<<20:]...)...)
	oldPath, newPath = filepath.Join(dir, "old.img"), filepath.Join(dir, "new.img")
	if err := os.WriteFile(oldPath, old, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(newPath, nw, 0o644); err != nil {
		t.Fatal(err)
	}
	return oldPath, newPath, nw
}

func runCmd(t *testing.T, args ...string) (string, error) {
	t.Helper()
	var out, errb bytes.Buffer
	err := run(context.Background(), args, &out, &errb)
	return out.String() + errb.String(), err
}

func TestStreamCommands(t *testing.T) {
	dir := t.TempDir()
	oldPath, newPath, nw := images(t, dir)
	delta, full := filepath.Join(dir, "d.sus"), filepath.Join(dir, "f.sus")
	out, err := publishCmd(t, "delta", "--from", oldPath, "--to", newPath, "-o", delta)
	if err != nil {
		t.Fatalf("delta: %v\n%s", err, out)
	}
	hh := regexp.MustCompile(`header hash ([0-9a-f]{64})`).FindStringSubmatch(out)
	if hh == nil {
		t.Fatalf("delta output has no header hash:\n%s", out)
	}
	if out, err := publishCmd(t, "delta", "--to", newPath, "-o", full); err != nil {
		t.Fatalf("full: %v\n%s", err, out)
	}
	// Inspect shows the same header hash and the source it expects.
	out, err = runCmd(t, "inspect", delta)
	if err != nil || !strings.Contains(out, hh[1]) || !strings.Contains(out, "delta: apply only on this image") {
		t.Fatalf("inspect: %v\n%s", err, out)
	}
	// Apply the delta with the expected header, the full stream from stdin.
	target := filepath.Join(dir, "target.img")
	if out, err := runCmd(t, "apply", "--source", oldPath, "--target", target, "--expect-header", hh[1], delta); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(target); !bytes.Equal(got, nw) {
		t.Fatal("delta applied by the CLI differs from the new image")
	}
	f, err := os.Open(full)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	stdin = f
	defer func() { stdin = os.Stdin }()
	target2 := filepath.Join(dir, "target2.img")
	if out, err := runCmd(t, "apply", "--target", target2, "-"); err != nil {
		t.Fatalf("apply -: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(target2); !bytes.Equal(got, nw) {
		t.Fatal("full stream applied from stdin differs from the new image")
	}
	if out, err := runCmd(t, "verify", "--target", target2, full); err != nil || !strings.Contains(out, "match") {
		t.Fatalf("verify: %v\n%s", err, out)
	}
}

func TestApplyErrorsAreClear(t *testing.T) {
	dir := t.TempDir()
	oldPath, newPath, _ := images(t, dir)
	delta := filepath.Join(dir, "d.sus")
	if out, err := publishCmd(t, "delta", "--from", oldPath, "--to", newPath, "-o", delta); err != nil {
		t.Fatalf("delta: %v\n%s", err, out)
	}
	target := filepath.Join(dir, "t.img")
	cases := []struct {
		name string
		args []string
		want error
		text string
	}{
		{"no source", []string{"apply", "--target", target, delta}, stream.ErrNoSource, "pass the active slot as the source"},
		{"wrong source", []string{"apply", "--source", newPath, "--target", target, delta}, stream.ErrSourceMismatch, "install the full-image stream"},
		{"other header", []string{"apply", "--source", oldPath, "--target", target, "--expect-header", strings.Repeat("ab", 32), delta}, stream.ErrHeaderMismatch, "not the stream the signed index names"},
		{"not a stream", []string{"apply", "--target", target, oldPath}, stream.ErrFormat, "not a sysupdate stream"},
	}
	for _, c := range cases {
		out, err := runCmd(t, c.args...)
		if !errors.Is(err, c.want) || !strings.Contains(err.Error(), c.text) {
			t.Errorf("%s: want %v mentioning %q, got %v\n%s", c.name, c.want, c.text, err, out)
		}
	}
	if _, err := runCmd(t, "apply", delta); !errors.Is(err, errUsage) {
		t.Errorf("apply without --target: want a usage error, got %v", err)
	}
}

// TestApplyCreatesNoFiles runs the real binary with TMPDIR on a read-only
// filesystem, records every file-creating system call with strace, and
// checks that the only file written is the target.
func TestApplyCreatesNoFiles(t *testing.T) {
	for _, tool := range []string{"strace", "mount"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Fatalf("%s missing: run make deps", tool)
		}
	}
	bin := testbin.Build(t, testbin.Device, testbin.DeviceTags)
	work := t.TempDir()
	oldPath, newPath, nw := images(t, work)
	delta := filepath.Join(work, "d.sus")
	if out, err := publishCmd(t, "delta", "--from", oldPath, "--to", newPath, "-o", delta); err != nil {
		t.Fatalf("delta: %v\n%s", err, out)
	}
	ro := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "ro,size=1m", "tmpfs", ro).CombinedOutput(); err != nil {
		t.Fatalf("mount a read-only tmpfs for TMPDIR (needs root, as make test runs): %v\n%s", err, out)
	}
	defer exec.Command("umount", ro).Run()
	if err := os.WriteFile(filepath.Join(ro, "probe"), nil, 0o644); !errors.Is(err, syscall.EROFS) {
		t.Fatalf("TMPDIR %s is writable (%v): the test would prove nothing", ro, err)
	}
	before := tree(t, work)
	target := filepath.Join(work, "target.img")
	trace := filepath.Join(t.TempDir(), "trace")
	cmd := exec.Command("strace", "-f", "-qq", "-o", trace, "-e", "trace=open,openat,openat2,creat,mkdir,mkdirat,rename,renameat,renameat2,link,linkat,symlink,symlinkat,mknod,mknodat",
		bin, "apply", "--source", oldPath, "--target", target, delta)
	cmd.Dir = work
	cmd.Env = append(os.Environ(), "TMPDIR="+ro)
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("apply: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(target); !bytes.Equal(got, nw) {
		t.Fatal("apply under strace wrote the wrong image")
	}
	after := tree(t, work)
	want := append(before, "target.img")
	sort.Strings(want)
	if strings.Join(after, " ") != strings.Join(want, " ") {
		t.Fatalf("files after apply: %v, want %v", after, want)
	}
	if names := tree(t, ro); len(names) != 0 {
		t.Fatalf("TMPDIR holds %v", names)
	}
	raw, err := os.ReadFile(trace)
	if err != nil {
		t.Fatal(err)
	}
	creating := regexp.MustCompile(`(O_CREAT|O_WRONLY|O_RDWR)|^\d+\s+(creat|mkdir|rename|link|symlink|mknod)`)
	nCreate := 0
	for _, line := range strings.Split(string(raw), "\n") {
		if !creating.MatchString(line) {
			continue
		}
		if !strings.Contains(line, `"`+target+`"`) {
			t.Errorf("apply opened something else for writing: %s", line)
		}
		nCreate++
	}
	if nCreate == 0 {
		t.Fatalf("strace saw no open of the target for writing: the trace is not working\n%s", raw)
	}
}

func tree(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(p string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if p != dir {
			rel, _ := filepath.Rel(dir, p)
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	sort.Strings(names)
	return names
}

// TestApplyToBlockDevice applies a delta and a full stream to a real block
// device (a loop device over a file full of garbage), so that the
// block-device paths (capacity, BLKZEROOUT for zero ops) run for real.
func TestApplyToBlockDevice(t *testing.T) {
	if _, err := exec.LookPath("losetup"); err != nil {
		t.Fatalf("losetup missing: run make deps")
	}
	dir := t.TempDir()
	oldPath, _, _ := images(t, dir)
	// A new image with a long zero run, so the stream has a zero op.
	nw, _ := os.ReadFile(oldPath)
	copy(nw[512<<10:], make([]byte, 1<<20))
	newPath := filepath.Join(dir, "new-zeros.img")
	if err := os.WriteFile(newPath, nw, 0o644); err != nil {
		t.Fatal(err)
	}
	backing := filepath.Join(dir, "disk")
	garbage := bytes.Repeat([]byte{0xa5}, len(nw)+8192)
	if err := os.WriteFile(backing, garbage, 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("losetup", "--find", "--show", backing).Output()
	if err != nil {
		t.Fatalf("losetup (needs root, as make test runs): %v", err)
	}
	dev := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", dev).Run()

	delta, full := filepath.Join(dir, "d.sus"), filepath.Join(dir, "f.sus")
	for _, args := range [][]string{{"delta", "--from", oldPath, "--to", newPath, "-o", delta}, {"delta", "--to", newPath, "-o", full}} {
		if out, err := publishCmd(t, args...); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	info, err := stream.Inspect(context.Background(), mustOpen(t, delta))
	if err != nil || info.Ops[stream.OpZero] == 0 {
		t.Fatalf("the delta has no zero op (%v): the test would not exercise BLKZEROOUT", err)
	}
	for _, c := range [][]string{
		{"apply", "--source", oldPath, "--target", dev, delta},
		{"apply", "--target", dev, full},
	} {
		if err := os.WriteFile(backing, garbage, 0o644); err != nil { // garbage again
			t.Fatal(err)
		}
		exec.Command("blockdev", "--flushbufs", dev).Run()
		if out, err := runCmd(t, c...); err != nil {
			t.Fatalf("%v: %v\n%s", c, err, out)
		}
		f := mustOpen(t, dev)
		got := make([]byte, len(nw)+8192)
		if _, err := f.ReadAt(got, 0); err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got[:len(nw)], nw) {
			t.Fatalf("%v: the block device does not hold the new image", c)
		}
		if !bytes.Equal(got[len(nw):], garbage[len(nw):]) {
			t.Fatalf("%v: bytes past the image were touched", c)
		}
	}
	// A target smaller than the image is refused before anything is written.
	small := filepath.Join(dir, "small")
	os.WriteFile(small, make([]byte, 4096), 0o644)
	sout, err := exec.Command("losetup", "--find", "--show", small).Output()
	if err != nil {
		t.Fatal(err)
	}
	sdev := strings.TrimSpace(string(sout))
	defer exec.Command("losetup", "-d", sdev).Run()
	if _, err := runCmd(t, "apply", "--target", sdev, full); !errors.Is(err, stream.ErrTargetTooSmall) {
		t.Fatalf("apply to a 4 KiB device: want ErrTargetTooSmall, got %v", err)
	}
}

func mustOpen(t *testing.T, path string) *os.File {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	return f
}
