package main

import (
	"bytes"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/internal/testbin"
)

// The tests of issue 8 (hostile input, misuse) run the real binary: its
// signal handling, exit status and peak memory are what is checked.

// sysupdateBin is the device binary as shipped. SYSUPDATE_TEST_BIN names
// another binary instead (to check that these tests fail on an older
// build).
func sysupdateBin(t *testing.T) string {
	t.Helper()
	if p := os.Getenv("SYSUPDATE_TEST_BIN"); p != "" {
		return p
	}
	return testbin.Build(t, testbin.Device, testbin.DeviceTags)
}

// binFor is the binary that has the command args[0]: the publisher's
// commands (delta) run from sysupdate-publish.
func binFor(t *testing.T, args []string) string {
	t.Helper()
	if len(args) > 0 && args[0] == "delta" {
		return testbin.Build(t, testbin.Publisher, "")
	}
	return sysupdateBin(t)
}

// result is one run of the binary.
type result struct {
	out    string
	code   int
	maxRSS int64 // peak resident set, bytes
}

// runBin runs the binary to completion (at most 30 s) with stdin, under
// GNU time for its peak RSS. (The rusage Go gets from wait4 is no use here:
// a child started with vfork inherits the test process's own peak.)
func runBin(t *testing.T, stdin io.Reader, args ...string) result {
	t.Helper()
	return runBinFor(t, 30*time.Second, stdin, args...)
}

// runBinFor is runBin that kills the run (time and sysupdate both) after d.
func runBinFor(t *testing.T, d time.Duration, stdin io.Reader, args ...string) result {
	t.Helper()
	rss := filepath.Join(t.TempDir(), "rss")
	cmd := exec.Command("/usr/bin/time", append([]string{"-f", "%M", "-o", rss, binFor(t, args)}, args...)...)
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &out, stdin
	if err := cmd.Start(); err != nil {
		t.Fatalf("GNU time (make deps installs it): %v", err)
	}
	timer := time.AfterFunc(d, func() { syscall.Kill(-cmd.Process.Pid, syscall.SIGKILL) })
	defer timer.Stop()
	err := cmd.Wait()
	if _, ok := err.(*exec.ExitError); err != nil && !ok {
		t.Fatal(err)
	}
	b, err := os.ReadFile(rss)
	if err != nil {
		t.Fatalf("sysupdate %s: no peak RSS (%v): killed after %v?\n%s", strings.Join(args, " "), err, d, out.String())
	}
	lines := strings.Split(strings.TrimSpace(string(b)), "\n")
	if len(lines) > 1 { // "Command terminated by signal N" or "exited with non-zero status"
		if strings.Contains(lines[0], "signal") {
			t.Fatalf("sysupdate %s: %s (a crash, or it ran too long)\n%s", strings.Join(args, " "), lines[0], out.String())
		}
	}
	kib, err := strconv.ParseInt(lines[len(lines)-1], 10, 64)
	if err != nil {
		t.Fatalf("GNU time wrote %q", b)
	}
	return result{out: out.String(), code: cmd.ProcessState.ExitCode(), maxRSS: kib << 10}
}

// corpus reads the fuzz seed files of stream's fuzz target fuzz: each
// file's values, decoded from the Go fuzzing corpus format.
func corpus(t *testing.T, fuzz string) map[string][][]byte {
	t.Helper()
	dir := filepath.Join("..", "..", "stream", "testdata", "fuzz", fuzz)
	ents, err := os.ReadDir(dir)
	if err != nil || len(ents) == 0 {
		t.Fatalf("fuzz corpus %s: %v (%d files)", dir, err, len(ents))
	}
	seeds := map[string][][]byte{}
	for _, e := range ents {
		b, err := os.ReadFile(filepath.Join(dir, e.Name()))
		if err != nil {
			t.Fatal(err)
		}
		lines := strings.Split(strings.TrimSpace(string(b)), "\n")
		if lines[0] != "go test fuzz v1" {
			t.Fatalf("%s: not a corpus file", e.Name())
		}
		for _, l := range lines[1:] {
			q, ok := strings.CutPrefix(l, "[]byte(")
			q, ok2 := strings.CutSuffix(q, ")")
			v, err := strconv.Unquote(q)
			if !ok || !ok2 || err != nil {
				t.Fatalf("%s: cannot decode %.40q", e.Name(), l)
			}
			seeds[e.Name()] = append(seeds[e.Name()], []byte(v))
		}
	}
	return seeds
}

func writeFile(t *testing.T, p string, b []byte) string {
	t.Helper()
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
	return p
}

// hostile returns the crafted stream seed name as a file in dir.
func hostile(t *testing.T, dir, name string) string {
	t.Helper()
	s, ok := corpus(t, "FuzzInspect")[name]
	if !ok {
		t.Fatalf("no seed %s", name)
	}
	return writeFile(t, filepath.Join(dir, name+".sus"), s[0])
}

const rssBudget = 32 << 20

// zeros reads as endless zero bytes.
type zeros struct{}

func (zeros) Read(p []byte) (int, error) { clear(p); return len(p), nil }

// TestInspectRefusesOverBudgetHeader: the 269-byte stream declaring
// 0xffffffff limits is refused from its header, in bounded memory.
func TestInspectRefusesOverBudgetHeader(t *testing.T) {
	s := hostile(t, t.TempDir(), "hostile-huge-limits")
	r := runBin(t, nil, "inspect", s)
	if r.code != 1 || !strings.Contains(r.out, "budget") {
		t.Fatalf("inspect: exit %d, want 1 and a budget refusal:\n%s", r.code, r.out)
	}
	if r.maxRSS > rssBudget {
		t.Fatalf("inspect peaked at %d MiB", r.maxRSS>>20)
	}
}

// TestVerifyHugeTargetHeader: a header declaring a 2^62-byte target gives a
// clear error from the target's size, not an out-of-memory crash.
func TestVerifyHugeTargetHeader(t *testing.T) {
	dir := t.TempDir()
	s := hostile(t, dir, "hostile-zero-2p62")
	target := writeFile(t, filepath.Join(dir, "t.img"), make([]byte, 1<<20))
	r := runBin(t, nil, "verify", "--target", target, s)
	if r.code != 1 || !strings.Contains(r.out, "shorter than") {
		t.Fatalf("verify: exit %d, want 1 saying the target is shorter:\n%s", r.code, r.out)
	}
	if r.maxRSS > rssBudget {
		t.Fatalf("verify peaked at %d MiB", r.maxRSS>>20)
	}
}

// TestVerifySaysShortOrDiffers: verify of a short target says it is short
// (not "truncated stream"), of another image that it differs (not "write
// did not stick"); apply's read-back keeps that wording.
func TestVerifySaysShortOrDiffers(t *testing.T) {
	dir := t.TempDir()
	_, newPath, nw := images(t, dir)
	full := filepath.Join(dir, "f.sus")
	if r := runBin(t, nil, "delta", "--to", newPath, "-o", full); r.code != 0 {
		t.Fatalf("delta: %s", r.out)
	}
	short := writeFile(t, filepath.Join(dir, "short.img"), nw[:len(nw)/2])
	r := runBin(t, nil, "verify", "--target", short, full)
	if r.code != 1 || !strings.Contains(r.out, "shorter than") || strings.Contains(r.out, "truncated") {
		t.Errorf("short target: exit %d\n%s", r.code, r.out)
	}
	other := bytes.Clone(nw)
	other[12345] ^= 1
	wrong := writeFile(t, filepath.Join(dir, "wrong.img"), other)
	r = runBin(t, nil, "verify", "--target", wrong, full)
	if r.code != 1 || !strings.Contains(r.out, "different image") || strings.Contains(r.out, "did not stick") {
		t.Errorf("wrong target: exit %d\n%s", r.code, r.out)
	}
	if r := runBin(t, nil, "verify", "--target", newPath, full); r.code != 0 {
		t.Errorf("right target: exit %d\n%s", r.code, r.out)
	}
}

// TestApplyHugeZeroOpRefusedByCapacity: one zero op of 2^50 or 2^62 bytes
// into a regular file is refused from the file system's free space, at
// once, and leaves no file behind; an explicit --max-target bounds it too.
func TestApplyHugeZeroOpRefusedByCapacity(t *testing.T) {
	// A small tmpfs: whatever a faulty build does with the zero op (holes
	// or written zeros), it cannot fill the machine's disk.
	dir := t.TempDir()
	if out, err := exec.Command("mount", "-t", "tmpfs", "-o", "size=64m", "tmpfs", dir).CombinedOutput(); err != nil {
		t.Fatalf("mount a tmpfs (needs root, as make test runs): %v\n%s", err, out)
	}
	defer exec.Command("umount", dir).Run()
	for _, name := range []string{"hostile-zero-2p50", "hostile-zero-2p62"} {
		s := hostile(t, dir, name)
		target := filepath.Join(dir, "target.img")
		for _, extra := range [][]string{nil, {"--max-target", "1G"}} {
			start := time.Now()
			r := runBinFor(t, 10*time.Second, nil, append([]string{"apply", "--target", target, s}, extra...)...)
			if r.code != 1 || !strings.Contains(r.out, "target too small") {
				t.Errorf("%s %v: exit %d, want a capacity refusal:\n%s", name, extra, r.code, r.out)
			}
			if extra == nil && !strings.Contains(r.out, "--max-target") {
				t.Errorf("%s: the refusal does not mention --max-target:\n%s", name, r.out)
			}
			if d := time.Since(start); d > 5*time.Second {
				t.Errorf("%s %v: refused after %v", name, extra, d)
			}
			if _, err := os.Stat(target); !os.IsNotExist(err) {
				t.Errorf("%s %v: the refused apply left %s (%v)", name, extra, target, err)
				os.Remove(target)
			}
		}
	}
}

// startBin starts the binary with stdin and returns it running.
func startBin(t *testing.T, stdin io.Reader, args ...string) (*exec.Cmd, *bytes.Buffer) {
	t.Helper()
	cmd := exec.Command(binFor(t, args), args...)
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr, cmd.Stdin = &out, &out, stdin
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	return cmd, &out
}

// stopWithin sends sig after the command has run for a while and fails
// unless it exits, by itself, within a second of the signal.
func stopWithin(t *testing.T, cmd *exec.Cmd, out *bytes.Buffer, sig os.Signal) {
	t.Helper()
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case err := <-done:
		t.Fatalf("%v exited before the signal (%v):\n%s", cmd.Args, err, out)
	case <-time.After(500 * time.Millisecond):
	}
	if err := cmd.Process.Signal(sig); err != nil {
		t.Fatal(err)
	}
	sent := time.Now()
	select {
	case <-done:
		if d := time.Since(sent); d > time.Second {
			t.Fatalf("%v: exited %v after %v", cmd.Args, d, sig)
		}
		ws := cmd.ProcessState.Sys().(syscall.WaitStatus)
		if ws.Signaled() || cmd.ProcessState.ExitCode() != 1 {
			t.Fatalf("%v: %v after %v, want exit status 1 with a message:\n%s", cmd.Args, cmd.ProcessState, sig, out)
		}
	case <-time.After(time.Second):
		cmd.Process.Kill()
		<-done
		t.Fatalf("%v: still running 1 s after %v:\n%s", cmd.Args, sig, out)
	}
}

// TestApplyStopsOnSIGTERMDuringEndlessZeroOp: a 2^62-byte zero op into a
// sparse file (tmpfs takes files that large; --max-target lets it through)
// spins in the tree hash; SIGTERM must stop it within a second.
func TestApplyStopsOnSIGTERMDuringEndlessZeroOp(t *testing.T) {
	shm, err := os.MkdirTemp("/dev/shm", "sysupdate-test")
	if err != nil {
		t.Fatalf("tmpfs at /dev/shm: %v", err)
	}
	defer os.RemoveAll(shm)
	s := hostile(t, t.TempDir(), "hostile-zero-2p62")
	target := filepath.Join(shm, "target.img")
	for _, sig := range []os.Signal{syscall.SIGTERM, os.Interrupt} {
		cmd, out := startBin(t, nil, "apply", "--max-target", "4E", "--target", target, s)
		stopWithin(t, cmd, out, sig)
		os.Remove(target)
	}
}

// TestStreamCommandsStopOnSIGTERMWithStalledStdin: apply, inspect and
// verify reading "-" from a pipe nobody writes stop within a second.
func TestStreamCommandsStopOnSIGTERMWithStalledStdin(t *testing.T) {
	dir := t.TempDir()
	target := writeFile(t, filepath.Join(dir, "t.img"), make([]byte, 4096))
	for _, args := range [][]string{
		{"apply", "--target", filepath.Join(dir, "new.img"), "-"},
		{"inspect", "-"},
		{"verify", "--target", target, "-"},
	} {
		pr, pw, err := os.Pipe()
		if err != nil {
			t.Fatal(err)
		}
		pw.Write([]byte{0x89, 'S'}) // a few bytes, then nothing
		cmd, out := startBin(t, pr, args...)
		pr.Close()
		stopWithin(t, cmd, out, syscall.SIGTERM)
		pw.Close()
	}
}

// TestStreamCommandsBoundedRSS runs apply, inspect and verify on every
// fuzz seed of FuzzInspect and FuzzVerify (the crafted hostile streams
// among them) and checks each run's peak RSS against 32 MiB.
func TestStreamCommandsBoundedRSS(t *testing.T) {
	dir := t.TempDir()
	runs := 0
	for fuzz, seeds := range map[string]map[string][][]byte{"FuzzInspect": corpus(t, "FuzzInspect"), "FuzzVerify": corpus(t, "FuzzVerify")} {
		for name, vals := range seeds {
			s := writeFile(t, filepath.Join(dir, "s.sus"), vals[0])
			target := filepath.Join(dir, "target.img")
			if len(vals) > 1 {
				writeFile(t, target, vals[1])
			}
			for _, args := range [][]string{
				{"inspect", s},
				{"verify", "--target", target, s},
				{"apply", "--max-target", "64M", "--target", target, s},
			} {
				r := runBin(t, nil, args...)
				runs++
				t.Logf("%s/%s %s: exit %d, peak RSS %.1f MiB", fuzz, name, args[0], r.code, float64(r.maxRSS)/(1<<20))
				if r.maxRSS > rssBudget {
					t.Errorf("%s/%s: sysupdate %s peaked at %.1f MiB RSS (budget 32 MiB)", fuzz, name, strings.Join(args, " "), float64(r.maxRSS)/(1<<20))
				}
			}
			os.Remove(target)
		}
	}
	if runs < 20 {
		t.Fatalf("only %d runs: the corpus is missing seeds", runs)
	}
	// The huge-limits header followed by 256 MiB on stdin: a reader that
	// sized its op table from the header would fill it.
	seed := corpus(t, "FuzzInspect")["hostile-huge-limits"][0]
	for _, args := range [][]string{{"inspect", "-"}, {"apply", "--target", filepath.Join(dir, "x.img"), "-"}} {
		r := runBin(t, io.MultiReader(bytes.NewReader(seed), io.LimitReader(zeros{}, 256<<20)), args...)
		t.Logf("hostile-huge-limits + 256 MiB on stdin, %s: exit %d, peak RSS %.1f MiB", args[0], r.code, float64(r.maxRSS)/(1<<20))
		if r.code == 0 || r.maxRSS > rssBudget {
			t.Errorf("sysupdate %s on huge limits plus 256 MiB: exit %d, peak RSS %.1f MiB (budget 32 MiB)", strings.Join(args, " "), r.code, float64(r.maxRSS)/(1<<20))
		}
	}
	// And streams that apply: a delta and a full image, with read-back.
	oldPath, newPath, _ := images(t, dir)
	delta, full := filepath.Join(dir, "d.sus"), filepath.Join(dir, "f.sus")
	for _, args := range [][]string{
		{"delta", "--from", oldPath, "--to", newPath, "-o", delta},
		{"delta", "--to", newPath, "-o", full},
		{"apply", "--source", oldPath, "--target", filepath.Join(dir, "a.img"), delta},
		{"apply", "--target", filepath.Join(dir, "b.img"), full},
		{"inspect", delta},
		{"verify", "--target", newPath, full},
	} {
		r := runBin(t, nil, args...)
		if r.code != 0 {
			t.Fatalf("sysupdate %s: %s", strings.Join(args, " "), r.out)
		}
		if args[0] != "delta" && r.maxRSS > rssBudget {
			t.Errorf("sysupdate %s peaked at %.1f MiB RSS (budget 32 MiB)", strings.Join(args, " "), float64(r.maxRSS)/(1<<20))
		}
	}
}

// TestDeltaRefusesNonImageInputs: a directory (which seeks to 2^63-1 and
// used to panic), /dev/zero (which used to make an empty-image stream) or
// a FIFO as --to or --from is refused with a clear error, exit 1.
func TestDeltaRefusesNonImageInputs(t *testing.T) {
	dir := t.TempDir()
	_, newPath, _ := images(t, dir)
	fifo := filepath.Join(dir, "fifo")
	if err := syscall.Mkfifo(fifo, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		args []string
		what string
	}{
		{[]string{"--to", dir}, "directory"},
		{[]string{"--from", dir, "--to", newPath}, "directory"},
		{[]string{"--to", "/dev/zero"}, "character device"},
		{[]string{"--from", "/dev/zero", "--to", newPath}, "character device"},
		{[]string{"--to", fifo}, "FIFO"},
	} {
		out := filepath.Join(dir, "out.sus")
		r := runBin(t, nil, append(append([]string{"delta"}, tc.args...), "-o", out)...)
		if r.code != 1 || !strings.Contains(r.out, tc.what) || strings.Contains(r.out, "panic") {
			t.Errorf("delta %v: exit %d, want 1 naming a %s:\n%s", tc.args, r.code, tc.what, r.out)
		}
		if _, err := os.Stat(out); !os.IsNotExist(err) {
			t.Errorf("delta %v wrote %s", tc.args, out)
		}
	}
}

// TestApplyRefusesSameSourceAndTarget: --source and --target naming one
// file (directly, through a symlink or a hard link), one device (a second
// device node), or overlapping ranges of one device (a partition and its
// disk) are refused before anything is written; so is the stream file
// as the target.
func TestApplyRefusesSameSourceAndTarget(t *testing.T) {
	dir := t.TempDir()
	oldPath, newPath, _ := images(t, dir)
	delta := filepath.Join(dir, "d.sus")
	if r := runBin(t, nil, "delta", "--from", oldPath, "--to", newPath, "-o", delta); r.code != 0 {
		t.Fatal(r.out)
	}
	orig, _ := os.ReadFile(oldPath)
	link, hard := filepath.Join(dir, "link.img"), filepath.Join(dir, "hard.img")
	if err := os.Symlink(oldPath, link); err != nil {
		t.Fatal(err)
	}
	if err := os.Link(oldPath, hard); err != nil {
		t.Fatal(err)
	}
	cases := [][2]string{{oldPath, oldPath}, {oldPath, link}, {link, hard}}

	// A loop device and a second node for it. (Partition inside disk is
	// tested in package partition on a fake sysfs: this kernel has no
	// partition table support for loop devices.)
	backing := writeFile(t, filepath.Join(dir, "disk"), make([]byte, 8<<20))
	out, err := exec.Command("losetup", "--find", "--show", backing).Output()
	if err != nil {
		t.Fatalf("losetup (needs root, as make test runs): %v", err)
	}
	loop := strings.TrimSpace(string(out))
	defer exec.Command("losetup", "-d", loop).Run()
	var st syscall.Stat_t
	if err := syscall.Stat(loop, &st); err != nil {
		t.Fatal(err)
	}
	node := filepath.Join(dir, "second-node")
	if err := syscall.Mknod(node, syscall.S_IFBLK|0o600, int(st.Rdev)); err != nil {
		t.Fatal(err)
	}
	cases = append(cases, [2]string{loop, node}, [2]string{node, loop})

	for _, c := range cases {
		r := runBin(t, nil, "apply", "--source", c[0], "--target", c[1], delta)
		if r.code != 2 || !strings.Contains(r.out, "same file or overlapping") {
			t.Errorf("apply --source %s --target %s: exit %d, want 2 and a refusal:\n%s", c[0], c[1], r.code, r.out)
		}
	}
	if got, _ := os.ReadFile(oldPath); !bytes.Equal(got, orig) {
		t.Fatal("a refused apply changed the source")
	}
	r := runBin(t, nil, "apply", "--source", oldPath, "--target", delta, delta)
	if r.code != 2 || !strings.Contains(r.out, "same file or overlapping") {
		t.Errorf("apply with the stream as target: exit %d:\n%s", r.code, r.out)
	}
	// Different files still apply.
	if r := runBin(t, nil, "apply", "--source", oldPath, "--target", filepath.Join(dir, "new.img"), delta); r.code != 0 {
		t.Fatalf("apply to a new file: %s", r.out)
	}
}

// TestDeltaStopsOnSIGTERM: building a stream of a large image stops
// within a second of SIGTERM and leaves no output (nor temporary) file.
func TestDeltaStopsOnSIGTERM(t *testing.T) {
	dir := t.TempDir()
	img := filepath.Join(dir, "big.img")
	f, err := os.Create(img)
	if err != nil {
		t.Fatal(err)
	}
	// 1 GiB of incompressible-ish content: a few seconds of encoding.
	buf := make([]byte, 1<<20)
	for i := 0; i < 1024; i++ {
		for j := 0; j < len(buf); j += 8 {
			v := uint64(i*len(buf)+j) * 0x9E3779B97F4A7C15
			for k := 0; k < 8; k++ {
				buf[j+k] = byte(v >> (8 * k))
			}
		}
		f.Write(buf)
	}
	f.Close()
	out := filepath.Join(dir, "out.sus")
	cmd, log := startBin(t, nil, "delta", "--to", img, "-o", out)
	stopWithin(t, cmd, log, syscall.SIGTERM)
	ents, _ := os.ReadDir(dir)
	for _, e := range ents {
		if e.Name() != "big.img" {
			t.Errorf("interrupted delta left %s", e.Name())
		}
	}
}
