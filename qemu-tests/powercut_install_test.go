package qemutests

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/bootloaders"
	"github.com/sysupdate/sysupdate/bootloaders/android"
	"github.com/sysupdate/sysupdate/bootloaders/grub"
	"github.com/sysupdate/sysupdate/bootloaders/uboot"
)

// installCuts is how many times each install power-cut test kills QEMU
// during the stream (issue 10: at least 5 per backend).
const installCuts = 5

// cutDevice is a device of the power-cut scenarios, whatever its boot
// path: *machine (GRUB), *ubootMachine, *androidMachine.
type cutDevice interface {
	// boot is one boot run to its end and checked (the machine's own).
	boot(t *testing.T, script, want, version string) bootResult
	// wantSlot checks on the host that slot holds img and its version.
	wantSlot(t *testing.T, slot, img, version string)
	// bootState is the bootloader state as the host reads it from the
	// device's images, with the backend's own Status.
	bootState(t *testing.T) (bootloaders.Status, error)
	// startBoot writes script for the guest and returns QEMU's command
	// for one boot, and a clean-up to run after it exits.
	startBoot(ctx context.Context, t *testing.T, script string) (*exec.Cmd, func())
	// choice is the slot the bootloader said it chose on console.
	choice(console string) string
	// dataPart is the disk image and its data partition (the state dir).
	dataPart() (string, part)
}

func (m *machine) dataPart() (string, part)      { return m.Disk, layoutPart("data") }
func (m *ubootMachine) dataPart() (string, part) { return m.Disk, ubootPart("data") }

// hostCheckpoint is the part of the engine's checkpoint.json the test
// checks.
type hostCheckpoint struct {
	Version uint64 `json:"version"`
	At      struct {
		StreamOff int64 `json:"stream_off"`
		TargetOff int64 `json:"target_off"`
	} `json:"at"`
}

// cutCheckpoint reads checkpoint.json from the device's data partition as
// a cut left it: on a copy of the partition whose journal e2fsck replays
// first, as the kernel does at the next mount (the disk itself is not
// touched). nil when there is none.
func cutCheckpoint(t *testing.T, d cutDevice) *hostCheckpoint {
	t.Helper()
	disk, p := d.dataPart()
	img := filepath.Join(t.TempDir(), "data.ext4")
	if err := os.WriteFile(img, readPart(t, disk, p), 0o644); err != nil {
		t.Fatal(err)
	}
	// e2fsck exits 1 when it changed the filesystem (replayed the journal).
	if out, err := exec.Command("e2fsck", "-y", "-E", "journal_only", img).CombinedOutput(); err != nil && !isExit(err, 1) {
		t.Fatalf("e2fsck -E journal_only on a copy of the data partition: %v\n%s", err, out)
	}
	out, err := exec.Command("debugfs", "-R", "cat /checkpoint.json", img).Output()
	if err != nil {
		t.Fatalf("debugfs cat /checkpoint.json: %v", err)
	}
	if len(out) == 0 {
		return nil
	}
	var cp hostCheckpoint
	if err := json.Unmarshal(out, &cp); err != nil {
		t.Fatalf("checkpoint.json on the data partition after a cut: %v\n%s", err, out)
	}
	return &cp
}

// bootState reads the grubenv from the ESP with the grub backend.
func (m *machine) bootState(t *testing.T) (bootloaders.Status, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "grubenv")
	runCmd(t, "mcopy", "-o", "-i", espPath(m.Disk), "::/grubenv", p)
	be, err := grub.New(grub.Config{Path: p})
	if err != nil {
		return bootloaders.Status{}, err
	}
	return be.Status()
}

func (m *machine) startBoot(ctx context.Context, t *testing.T, script string) (*exec.Cmd, func()) {
	t.Helper()
	m.boots++
	putScript(t, espPath(m.Disk), script)
	return qemuX86(ctx, m.Disk, m.Stick), func() {}
}

func (m *machine) choice(console string) string {
	if mm := bootMarker.FindStringSubmatch(console); mm != nil {
		return mm[1]
	}
	return ""
}

// bootState reads the environment from the flash image with the uboot
// backend (RAUC scheme, as boot.cmd).
func (m *ubootMachine) bootState(t *testing.T) (bootloaders.Status, error) {
	t.Helper()
	return uboot.NewRAUC(m.hostStore(t)).Status()
}

func (m *ubootMachine) startBoot(ctx context.Context, t *testing.T, script string) (*exec.Cmd, func()) {
	t.Helper()
	m.boots++
	putScript(t, ubootESP(m.Disk), script)
	cmd, tmp, err := qemuARM(ctx, m.UBoot, m.Flash, m.Disk, m.Stick)
	if err != nil {
		t.Fatal(err)
	}
	return cmd, func() { os.RemoveAll(tmp) }
}

func (m *ubootMachine) choice(console string) string {
	if mm := ubootChoice.FindStringSubmatch(console); mm != nil {
		return strings.ToLower(mm[1])
	}
	return ""
}

// bootState reads bootloader_control from the misc partition with the
// android backend.
func (m *androidMachine) bootState(t *testing.T) (bootloaders.Status, error) {
	t.Helper()
	p := filepath.Join(t.TempDir(), "misc")
	if err := os.WriteFile(p, readPart(t, m.Disk, partOf(androidLayout, "misc")), 0o644); err != nil {
		t.Fatal(err)
	}
	be, err := android.New(android.Config{Path: p})
	if err != nil {
		return bootloaders.Status{}, err
	}
	return be.Status()
}

func (m *androidMachine) choice(console string) string {
	if mm := androidChoice.FindStringSubmatch(console); mm != nil {
		return mm[1]
	}
	return ""
}

// watchBoot runs one boot: every console line goes to onLine, which may
// call kill (the power cut) at once or later; it returns the console when
// QEMU has exited, and whether it was killed.
func watchBoot(cmd *exec.Cmd, onLine func(line string, kill func())) (string, bool, error) {
	out, err := cmd.StdoutPipe()
	if err != nil {
		return "", false, err
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		return "", false, err
	}
	var killed atomic.Bool
	var once sync.Once
	kill := func() {
		once.Do(func() {
			killed.Store(true)
			cmd.Process.Kill()
		})
	}
	var console strings.Builder
	sc := bufio.NewScanner(out)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		l := strings.TrimRight(sc.Text(), "\r")
		console.WriteString(l + "\n")
		onLine(l, kill)
	}
	werr := cmd.Wait()
	once.Do(func() {}) // no kill after QEMU is gone
	if killed.Load() {
		werr = nil
	}
	return console.String(), killed.Load(), werr
}

// guestEvent is one line of `sysupdate update --json-events` as the guest
// printed it (updater.Event; the last line is {"type":"result"}).
type guestEvent struct {
	Type    string         `json:"type"`
	Phase   string         `json:"phase"`
	Done    int64          `json:"done"`
	Total   int64          `json:"total"`
	Message string         `json:"message"`
	Err     string         `json:"error"`
	Result  *installResult `json:"result"`
}

// installResult is the part of the result line the power-cut test checks.
type installResult struct {
	Target   string `json:"target"`
	Version  uint64 `json:"version"`
	Switched bool   `json:"switched"`
	NextBoot string `json:"next_boot"`
	Error    string `json:"error"`
	Images   []struct {
		Stream   string `json:"stream"`
		Resumed  int64  `json:"resumed"`
		Bytes    int64  `json:"bytes"`
		Written  int64  `json:"written"`
		Skipped  int64  `json:"skipped"`
		Size     int64  `json:"size"`
		Verified bool   `json:"verified"`
	} `json:"images"`
}

// isExit reports whether err is an exit with status code.
func isExit(err error, code int) bool {
	ee, ok := err.(*exec.ExitError)
	return ok && ee.ExitCode() == code
}

// parseEvent decodes a console or step output line holding a
// --json-events object.
func parseEvent(line string) (guestEvent, bool) {
	var ev guestEvent
	j := strings.TrimPrefix(line, "SYSUPDATE-OUT ")
	if !strings.HasPrefix(j, "{") || json.Unmarshal([]byte(j), &ev) != nil || ev.Type == "" {
		return ev, false
	}
	return ev, true
}

// installLog is what one update run printed, as far as it got.
type installLog struct {
	resumedAt int64 // target offset of the checkpoint it continued from; -1: none
	restarted bool  // it said it dropped a checkpoint and started over
	progress  int   // progress events
	lastDone  int64 // target bytes written, by the last progress event
	total     int64
	ended     bool // the stream was done: verify, record, switch or the result
	result    *installResult
	errors    []string
	notes     []string // every event but progress, for failure messages
}

func readInstallLog(console string) installLog {
	l := installLog{resumedAt: -1}
	for _, line := range strings.Split(console, "\n") {
		ev, ok := parseEvent(line)
		if !ok {
			continue
		}
		if ev.Type != "progress" {
			l.notes = append(l.notes, strings.TrimPrefix(line, "SYSUPDATE-OUT "))
		}
		switch {
		case ev.Type == "resume":
			l.resumedAt = ev.Done
		case ev.Type == "progress":
			l.progress++
			l.lastDone, l.total = ev.Done, ev.Total
		case ev.Type == "phase" && ev.Phase != "download" && ev.Phase != "check" && ev.Phase != "open":
			l.ended = true
		case ev.Type == "result":
			l.ended, l.result = true, ev.Result
		case ev.Type == "error":
			l.errors = append(l.errors, ev.Err)
		case ev.Type == "message" && (strings.Contains(ev.Message, "starting over") || strings.Contains(ev.Message, "ignoring the checkpoint")):
			l.restarted = true
		}
	}
	return l
}

// installCutRun is one install power-cut scenario: the device boots slot
// a with release 1, the repository on the stick has release 2 (img) as a
// full stream only. (A delta from release 1 is mostly copies from the
// running slot, which take few stream bytes; checkpoints are spaced by
// stream bytes, so a cut there restarts at almost no cost and says little
// about resuming.)
type installCutRun struct {
	path string
	dev  cutDevice
	pre  string // script lines before the update on every boot of a
	img  string // release 2's image
}

// run kills QEMU installCuts times at a random point of the stream (on
// the progress line that passes a random percentage), then lets the
// update finish and b confirm itself. After every cut the host checks
// that the bootloader still boots a and that b is not bootable, and the
// next boot must be a; every run after a cut that landed mid-stream must
// continue from the engine's checkpoint.
func (s installCutRun) run(t *testing.T) {
	const update = "sysupdate update --json --json-events --no-reboot\n"
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 0))
	t.Logf("%s: install power cuts from seed %d", s.path, seed)
	row := cutRow{Path: s.path, Write: "install stream", Seed: seed}
	state := func(when string) bootloaders.Status {
		t.Helper()
		st, err := s.dev.bootState(t)
		if err != nil {
			t.Fatalf("%s: bootloader state: %v", when, err)
		}
		return st
	}
	stateString := func(st bootloaders.Status) string { return fmt.Sprintf("next %q, %s", st.Next, statusString(st)) }
	untouched := func(when string, st bootloaders.Status) {
		t.Helper()
		if st.Next != "a" || slotOf(st, "b").Bootable {
			t.Errorf("%s: the bootloader state is %s; want slot a next and the partial slot b not bootable", when, stateString(st))
		}
	}

	var prev installLog        // the run before this one, if it was cut mid-stream
	var prevCP *hostCheckpoint // the checkpoint that cut left
	prevCut := false
	account := func(run int, l installLog) {
		if !prevCut {
			return
		}
		redone := prev.lastDone
		switch {
		case prevCP != nil && (l.resumedAt != prevCP.At.TargetOff || l.restarted):
			row.Restarts++
			t.Errorf("run %d: the cut before it left a checkpoint at target byte %d (stream byte %d), but it resumed at %d (-1: not at all; said it started over: %v); its events:\n%s",
				run, prevCP.At.TargetOff, prevCP.At.StreamOff, l.resumedAt, l.restarted, strings.Join(l.notes, "\n"))
		case prevCP != nil:
			row.Resumes++
			redone -= l.resumedAt
			t.Logf("  run %d resumed from the checkpoint at target byte %d (stream byte %d); the cut run had reported %d of %d written", run, l.resumedAt, prevCP.At.StreamOff, prev.lastDone, prev.total)
		case l.resumedAt >= 0:
			t.Errorf("run %d resumed at target byte %d from a checkpoint the host did not find on the data partition after the cut", run, l.resumedAt)
		default:
			// The cut came before the first checkpoint (they are spaced
			// by stream bytes: a region of copies from the running slot
			// takes few).
			row.Restarts++
			t.Logf("  run %d started from zero: the cut run (%d of %d written) had taken no checkpoint yet", run, prev.lastDone, prev.total)
		}
		if redone > 0 {
			row.Refetch++
			row.RefetchBytes += redone
		}
	}

	// The cut points: random offsets into the part of the target that
	// holds data (the stream ends with one op zeroing the rest, after
	// which the stream is done), in rising order so that each cut lands
	// further on than the checkpoint the one before left.
	end := dataEnd(t, s.img)
	points := make([]int64, installCuts)
	for i := range points {
		points[i] = end/20 + rng.Int64N(end*9/10)
	}
	slices.Sort(points)
	t.Logf("release 2 holds data up to byte %d; cut points %v", end, points)
	if st := state("at the factory"); st.Next != "a" {
		t.Fatalf("at the factory the bootloader boots %s", stateString(st))
	}
	for cut := 1; cut <= installCuts; cut++ {
		before := state(fmt.Sprintf("before cut %d", cut))
		at := points[cut-1]
		ctx, cancel := context.WithTimeout(context.Background(), 300*time.Second)
		cmd, done := s.dev.startBoot(ctx, t, s.pre+update)
		start := time.Now()
		console, killed, err := watchBoot(cmd, func(line string, kill func()) {
			if ev, ok := parseEvent(line); ok && ev.Type == "progress" && ev.Total > 0 && ev.Done >= at {
				kill()
			}
		})
		cancel()
		done()
		row.Boots++
		row.Cuts++
		l := readInstallLog(console)
		chose := s.dev.choice(console)
		g := e2eBoot.FindStringSubmatch(console)
		after, aerr := s.dev.bootState(t)
		if chose != "a" || g == nil || g[1] != "a" || g[2] != "1" {
			row.Bricks++
			t.Errorf("cut %d: the boot did not reach slot a with version 1 (bootloader chose %q, guest %q, qemu: %v)\nstate before: %s\nstate after: %s (%v)\nconsole:\n%s",
				cut, chose, g, err, stateString(before), stateString(after), aerr, tail([]byte(console), 6000))
			prevCut = false
			continue
		}
		if !killed {
			t.Fatalf("cut %d: the update never reported %d bytes written (qemu: %v, errors %q)\nconsole:\n%s", cut, at, err, l.errors, tail([]byte(console), 6000))
		}
		account(cut, l)
		mid := l.progress > 0 && !l.ended && l.lastDone < l.total
		if mid {
			row.Inside++
		}
		t.Logf("cut %d: killed at the progress line passing byte %d, %.1fs after the boot began: %d of %d bytes reported written%s", cut, at, time.Since(start).Seconds(), l.lastDone, l.total,
			map[bool]string{true: ", mid-stream", false: ", NOT mid-stream"}[mid])
		if aerr != nil {
			t.Fatalf("after cut %d: bootloader state: %v", cut, aerr)
		}
		untouched(fmt.Sprintf("after cut %d", cut), after)
		prev, prevCut, prevCP = l, mid, cutCheckpoint(t, s.dev)
	}
	if row.Inside == 0 {
		t.Errorf("no cut landed mid-stream: the test proved nothing about resuming")
	}

	// The update runs to its end, continuing from the last checkpoint.
	r := s.dev.boot(t, s.pre+update, "a", "1")
	row.Boots++
	upd := r.Steps[len(r.Steps)-1]
	l := readInstallLog(upd.Out)
	account(installCuts+1, l)
	res := l.result
	if upd.RC != 0 || res == nil || res.Error != "" || !res.Switched || res.Target != "b" || res.NextBoot != "b" || res.Version != 2 ||
		len(res.Images) != 1 || !res.Images[0].Verified {
		t.Fatalf("the update after the cuts: rc %d, %+v\n%s", upd.RC, res, upd.Out)
	}
	im := res.Images[0]
	t.Logf("the last run: %s stream, resumed at target byte %d, read %d stream bytes, wrote %d, found %d in place, of %d", im.Stream, im.Resumed, im.Bytes, im.Written, im.Skipped, im.Size)
	if st := state("after the update"); st.Next != "b" {
		t.Fatalf("after the update the bootloader boots %q next, want b: %s", st.Next, stateString(st))
	}
	s.dev.wantSlot(t, "b", s.img, "2")

	// b boots on trial and confirms itself.
	r = s.dev.boot(t, "if-healthy sysupdate mark-good\nsysupdate status --json\n", "b", "2")
	row.Boots++
	if r.Steps[0].Skipped || r.Steps[0].RC != 0 {
		t.Fatalf("mark-good on b: %+v", r.Steps[0])
	}
	if st := guestStatusAll(t, r.Steps[1]); st.Active != "b" || st.Installed != 2 || st.Pending != nil || st.Rollback != nil {
		t.Fatalf("status on b after mark-good: %+v", st)
	}
	if st := state("after mark-good"); st.Next != "b" || !slotOf(st, "b").Successful {
		t.Fatalf("after mark-good the bootloader state is %s; want b next and confirmed", stateString(st))
	}
	recordCuts(t, row)
}

// dataEnd returns the offset after the last non-zero 4 KiB block of the
// image file.
func dataEnd(t *testing.T, img string) int64 {
	t.Helper()
	b, err := os.ReadFile(img)
	if err != nil {
		t.Fatal(err)
	}
	end := len(b)
	for end > 0 && b[end-1] == 0 {
		end--
	}
	return int64((end + 4095) &^ 4095)
}

// slotOf returns the named slot of st (a zero Slot if it is missing).
func slotOf(st bootloaders.Status, name string) bootloaders.Slot {
	for _, s := range st.Slots {
		if s.Name == name {
			return s
		}
	}
	return bootloaders.Slot{Name: name}
}

// TestGRUBInstallPowerCut is scenario 3 on the x86_64 GRUB device: QEMU is
// killed at random points of `sysupdate update`'s stream from the
// repository on the second disk; GRUB boots a every time, the next update
// continues from the checkpoint and at last completes, and b confirms.
func TestGRUBInstallPowerCut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g, p, bin := newX86Board(t, dir)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	v2 := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	p.publish(t, "1", v1)
	m := &machine{Disk: factoryDisk(t, dir, bin, p), Stick: filepath.Join(dir, "stick.ext4")}
	p.FullOnly = true
	p.publish(t, "2", v2)
	p.stick(t, m.Stick)
	installCutRun{path: "GRUB x86_64", dev: m, img: v2}.run(t)
}

// TestUBootInstallPowerCut is scenario 3 on the arm64 U-Boot device (the
// environment in flash). boot.cmd's RAUC scheme spends a try of A on
// every boot, so each boot of a confirms it first, as a healthy system
// does.
func TestUBootInstallPowerCut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g, p := newARMBoard(t, dir)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	v2 := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	p.publish(t, "1", v1)
	m := ubootFactory(t, dir, p.Device, p)
	p.FullOnly = true
	p.publish(t, "2", v2)
	p.stick(t, m.Stick)
	installCutRun{path: "U-Boot arm64", dev: m, pre: "sysupdate mark-good\n", img: v2}.run(t)
}

// TestAndroidInstallPowerCut is scenario 3 on the arm64 Android device:
// U-Boot's ab_select on the misc partition picks the slot.
func TestAndroidInstallPowerCut(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	g, p := newARMBoard(t, dir)
	g.Etc[0].Data = []byte(androidDeviceConf)
	v1 := g.slotImage(t, dir, "version=1\nhealthy=yes\n")
	v2 := g.slotImage(t, dir, "version=2\nhealthy=yes\n")
	p.publish(t, "1", v1)
	m := androidFactory(t, dir, p.Device, p)
	p.FullOnly = true
	p.publish(t, "2", v2)
	p.stick(t, m.Stick)
	installCutRun{path: "Android arm64", dev: m, img: v2}.run(t)
}
