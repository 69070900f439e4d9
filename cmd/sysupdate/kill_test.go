package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sysupdate/sysupdate/bootloaders/grub"
	"github.com/sysupdate/sysupdate/internal/testbin"
	"github.com/sysupdate/sysupdate/partition"
)

// compressible returns n bytes that compress to about a third: tokens
// drawn from a small dictionary, as file systems full of code and text do.
func compressible(r *rand.Rand, n int) []byte {
	dict := make([][]byte, 512)
	for i := range dict {
		dict[i] = make([]byte, 8+r.IntN(24))
		for j := range dict[i] {
			dict[i][j] = byte(r.Uint32())
		}
	}
	b := make([]byte, 0, n+64)
	for len(b) < n {
		if r.IntN(4) == 0 {
			b = append(b, byte(r.Uint32()), byte(r.Uint32()))
		}
		b = append(b, dict[r.IntN(len(dict))]...)
	}
	return b[:n]
}

// meteredProxy serves a repository like a slow link (rate bytes per
// second), counts every stream byte it sends, and calls at(offset) as the
// stream offsets it sends advance, so a test can cut the device off at a
// point of the stream.
type meteredProxy struct {
	h    http.Handler
	rate int64
	sent atomic.Int64
	gen  atomic.Int64 // the current run; requests of earlier runs never call at
	mu   sync.Mutex
	at   func(off int64) // called with the next offset to send; may kill the client
}

func (p *meteredProxy) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if !strings.HasSuffix(r.URL.Path, ".sus") {
		p.h.ServeHTTP(w, r)
		return
	}
	var start int64
	if rg := r.Header.Get("Range"); strings.HasPrefix(rg, "bytes=") {
		start, _ = strconv.ParseInt(strings.TrimSuffix(strings.TrimPrefix(rg, "bytes="), "-"), 10, 64)
	}
	p.h.ServeHTTP(&meteredWriter{ResponseWriter: w, p: p, off: start, r: r, gen: p.gen.Load()}, r)
}

type meteredWriter struct {
	http.ResponseWriter
	p   *meteredProxy
	off int64
	r   *http.Request
	gen int64
}

func (w *meteredWriter) Write(b []byte) (int, error) {
	n := 0
	for len(b) > 0 {
		k := min(len(b), 16<<10)
		w.p.mu.Lock()
		at := w.p.at
		w.p.mu.Unlock()
		if at != nil && w.gen == w.p.gen.Load() {
			at(w.off)
		}
		if w.r.Context().Err() != nil {
			return n, w.r.Context().Err()
		}
		m, err := w.ResponseWriter.Write(b[:k])
		w.ResponseWriter.(http.Flusher).Flush()
		w.p.sent.Add(int64(m))
		w.off += int64(m)
		n += m
		if err != nil {
			return n, err
		}
		b = b[k:]
		select {
		case <-time.After(time.Duration(int64(k) * int64(time.Second) / w.p.rate)):
		case <-w.r.Context().Done():
			return n, w.r.Context().Err()
		}
	}
	return n, nil
}

// startServe runs `sysupdate-publish serve` on dir and returns its URL.
func startServe(t *testing.T, dir string) string {
	t.Helper()
	os.MkdirAll(dir, 0o755)
	cmd := exec.Command(testbin.Build(t, testbin.Publisher, ""), "serve", "--addr", "127.0.0.1:0", dir)
	pipe, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = cmd.Stdout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	sc := bufio.NewScanner(pipe)
	for sc.Scan() {
		if m := regexp.MustCompile(`http://127\.0\.0\.1:[0-9]+`).FindString(sc.Text()); m != "" {
			go io.Copy(io.Discard, pipe)
			return m
		}
	}
	t.Fatal("sysupdate-publish serve printed no address")
	return ""
}

// bigDevice is a device like newDevice's with slots of size bytes, a
// repository served through a metered proxy and its own binary.
type bigDevice struct {
	*device
	proxy *meteredProxy
	bin   string
}

func newBigDevice(t *testing.T, size int64) *bigDevice {
	d := newDevice(t)
	os.Truncate(d.disk, 0)
	os.Truncate(d.disk, 2*size+4<<20)
	cmd := exec.Command("sfdisk", "--quiet", d.disk)
	cmd.Stdin = strings.NewReader(fmt.Sprintf("label: gpt\nstart=2048, size=%dMiB, name=rootfs_a\nsize=%dMiB, name=rootfs_b\n", size>>20, size>>20))
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("sfdisk: %v: %s", err, out)
	}
	// The repository's server is the publisher's `serve`, behind a link
	// of 4 MB/s: slower than the device writes, as in the field, so that
	// what the server sent is what the device received.
	serveURL := startServe(t, d.repo)
	target, _ := url.Parse(serveURL)
	rp := httputil.NewSingleHostReverseProxy(target)
	rp.FlushInterval = -1
	p := &meteredProxy{h: rp, rate: 4 << 20}
	// A small send buffer keeps what the kernel holds in flight, which a
	// kill throws away, near one metered chunk however far a loaded
	// machine lets the device fall behind the link.
	srv := httptest.NewUnstartedServer(p)
	srv.Config.ConnState = func(c net.Conn, s http.ConnState) {
		if tc, ok := c.(*net.TCPConn); ok && s == http.StateNew {
			tc.SetWriteBuffer(64 << 10)
		}
	}
	srv.Start()
	t.Cleanup(srv.Close)
	conf, _ := os.ReadFile(d.conf)
	lines := strings.Split(string(conf), "\n")
	lines[0] = "repository = " + srv.URL
	os.WriteFile(d.conf, []byte(strings.Join(lines, "\n")), 0o644)
	return &bigDevice{device: d, proxy: p, bin: testbin.Build(t, testbin.Device, testbin.DeviceTags)}
}

func (d *bigDevice) publishImage(v int, img []byte, deltas int) {
	d.imgs[v] = img
	p := filepath.Join(d.dir, fmt.Sprintf("rootfs-%d.img", v))
	os.WriteFile(p, img, 0o644)
	publishOK(d.t, "publish", "--repo", d.repo, "--channel", "stable", "--version", fmt.Sprint(v), "--key", filepath.Join(d.keys, "signing.key"), "--model", "board", "--deltas", fmt.Sprint(deltas), "rootfs="+p)
}

func (d *bigDevice) slotBytes(name string, n int) []byte {
	dev, err := partition.Open("gpt:"+d.disk+"#rootfs_"+name, false)
	if err != nil {
		d.t.Fatal(err)
	}
	defer dev.Close()
	b := make([]byte, n)
	dev.ReadAt(b, 0)
	return b
}

func (d *bigDevice) bootable(slot string) bool {
	be, err := grub.New(grub.Config{Path: d.grubenv})
	if err != nil {
		d.t.Fatal(err)
	}
	st, err := be.Status()
	if err != nil {
		d.t.Fatal(err)
	}
	for _, s := range st.Slots {
		if s.Name == slot {
			return s.Bootable
		}
	}
	return false
}

// killedUpdate runs `sysupdate update` and SIGKILLs it once the stream
// reaches offset point (point < 0: let it finish). It returns the JSON
// result of a finished run.
func (d *bigDevice) killedUpdate(point int64, extra ...string) (killed bool, res updateResult, stderr string) {
	cmd := exec.Command(d.bin, append([]string{"update", "--config", d.conf, "--json", "--no-reboot"}, extra...)...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	var once sync.Once
	d.proxy.mu.Lock()
	d.proxy.gen.Add(1) // requests of earlier (killed) runs no longer count
	cpPath := filepath.Join(d.dir, "checkpoint.json")
	stale, _ := os.ReadFile(cpPath)
	d.proxy.at = func(off int64) {
		if point < 0 || off < point {
			return
		}
		once.Do(func() {
			// The link stops at point and the power goes once the device
			// has taken in what it received (its own checkpoint is within
			// 64 KiB of point, or has not moved for 300 ms: it waits inside
			// an op for the rest of it) or after 3 s: on a loaded machine
			// the device can lag the 4 MB/s link by megabytes of socket
			// buffers, and a kill then would measure the machine's load,
			// not what a resume fetches again.
			deadline := time.Now().Add(3 * time.Second)
			last, since := stale, time.Now()
			for time.Now().Before(deadline) {
				b, _ := os.ReadFile(cpPath)
				if !bytes.Equal(b, last) {
					last, since = b, time.Now()
				} else if !bytes.Equal(b, stale) && time.Since(since) > 300*time.Millisecond {
					break
				}
				var cp struct {
					At struct {
						StreamOff int64 `json:"stream_off"`
					} `json:"at"`
				}
				if !bytes.Equal(b, stale) && json.Unmarshal(b, &cp) == nil && cp.At.StreamOff >= point-64<<10 {
					break
				}
				time.Sleep(2 * time.Millisecond)
			}
			killed = true
			cmd.Process.Kill() // only this run's requests get here: it has started
		})
	}
	d.proxy.mu.Unlock()
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	err := cmd.Wait()
	d.proxy.mu.Lock()
	d.proxy.at = nil
	d.proxy.mu.Unlock()
	if killed {
		return true, res, errb.String()
	}
	if err != nil {
		d.t.Fatalf("update failed: %v\n%s\n%s", err, out.String(), errb.String())
	}
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		d.t.Fatalf("update output: %v\n%s", err, out.String())
	}
	return false, res, errb.String()
}

// killedLocal runs `sysupdate update` from the local repository directory
// and SIGKILLs it once its checkpoint says the stream reached point
// (point < 0: let it finish).
func (d *bigDevice) killedLocal(point int64) (killed bool, stderr string) {
	cmd := exec.Command(d.bin, "update", "--config", d.conf, "--repo", d.repo, "--json", "--no-reboot")
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Start(); err != nil {
		d.t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	cpPath := filepath.Join(d.dir, "checkpoint.json")
	// Only a checkpoint this run wrote counts: an earlier run's may
	// already be past point (its kill landed late on a loaded machine),
	// and killing this run on it would cut it before it resumed.
	stale, _ := os.ReadFile(cpPath)
	for {
		select {
		case err := <-done:
			if err != nil && !killed {
				d.t.Fatalf("update from the directory failed: %v\n%s", err, errb.String())
			}
			return killed, errb.String()
		case <-time.After(2 * time.Millisecond):
		}
		if point < 0 || killed {
			continue
		}
		var cp struct {
			At struct {
				StreamOff int64 `json:"stream_off"`
			} `json:"at"`
		}
		if b, err := os.ReadFile(cpPath); err == nil && !bytes.Equal(b, stale) && json.Unmarshal(b, &cp) == nil && cp.At.StreamOff >= point {
			killed = true
			cmd.Process.Kill()
		}
	}
}

// TestKillResumeLocal is TestKillResume from a local repository directory
// (a USB stick): 30 SIGKILLs at random stream points each resume, the slot
// is never bootable before its verification, and the result is exact.
func TestKillResumeLocal(t *testing.T) {
	for _, kind := range []string{"full", "delta"} {
		t.Run(kind, func(t *testing.T) {
			const size = 64 << 20
			d := newBigDevice(t, size+(1<<20))
			r := rand.New(rand.NewPCG(43, uint64(len(kind))))
			v1 := compressible(r, size)
			d.publishImage(1, v1, 0)
			if _, _, err := d.update("--slot", "b"); err != nil {
				t.Fatal(err)
			}
			runOK(t, "mark-good", "--config", d.conf, "--slot", "a")
			runOK(t, "bootloader", "--config", d.conf, "mark-good", "b")
			v2 := compressible(r, size)
			deltas, streamName := 0, "2.sus"
			if kind == "delta" {
				v2, deltas, streamName = bytes.Clone(v1), 1, "2-from-1.sus"
				for off := 0; off < size; off += 64 << 10 {
					copy(v2[off:], compressible(r, 16<<10))
				}
			}
			d.publishImage(2, v2, deltas)
			fi, err := os.Stat(filepath.Join(d.repo, "streams", "board", "rootfs", streamName))
			if err != nil {
				t.Fatal(err)
			}
			before := d.slotBytes("b", 1<<20)
			resumed, kills := 0, 0
			for i := 0; i < 30; i++ {
				pt := fi.Size() * int64(i+1) / 32
				killed, stderr := d.killedLocal(pt)
				if !killed {
					break
				}
				kills++
				if strings.Contains(stderr, "continuing from a checkpoint") {
					resumed++
				}
				if !bytes.Equal(d.slotBytes("b", 1<<20), before) && d.bootable("b") {
					t.Fatalf("after kill %d slot b is partly written and bootable", i)
				}
			}
			if _, stderr := d.killedLocal(-1); !strings.Contains(stderr, "switched") {
				t.Fatalf("final run did not switch:\n%s", stderr)
			}
			if !bytes.Equal(d.slotBytes("b", size), v2) || !d.bootable("b") {
				t.Fatal("slot b does not hold v2, bootable, after the resumed update")
			}
			t.Logf("%s from a directory: %d kills, %d reruns resumed from a checkpoint", kind, kills, resumed)
			if kills < 25 || resumed < kills-2 {
				t.Fatalf("%d kills, %d resumed: the cuts did not exercise resuming", kills, resumed)
			}
		})
	}
}

// TestKillResume (issue 7, acceptance 2): `sysupdate update` over HTTP is
// SIGKILLed at 30 random points of the stream, for a full stream and for a
// delta. Every rerun resumes from the checkpoint; the slot is never
// bootable before its read-back verification; the final slot is byte for
// byte the release; and the server sends under 1.1x the stream in total.
func TestKillResume(t *testing.T) {
	for _, kind := range []string{"full", "delta"} {
		t.Run(kind, func(t *testing.T) {
			// A resume continues between ops, so what a cut costs is about
			// half an op's blob: the images have enough ops (1024 full-stream
			// ops of 128 KiB, 512 delta ops of 512 KiB) that 30 cuts stay
			// well under a tenth of the stream.
			size := 128 << 20
			if kind == "delta" {
				size = 256 << 20
			}
			d := newBigDevice(t, int64(size)+(1<<20))
			r := rand.New(rand.NewPCG(42, uint64(len(kind))))
			v1 := compressible(r, size)
			d.publishImage(1, v1, 0)
			// Factory state: v1 in a, confirmed; b holds an older good
			// release the bootloader may fall back to.
			if _, _, err := d.update("--slot", "b"); err != nil {
				t.Fatal(err)
			}
			runOK(t, "mark-good", "--config", d.conf, "--slot", "a")
			runOK(t, "bootloader", "--config", d.conf, "mark-good", "b")
			streamName := "2.sus"
			v2 := bytes.Clone(v1)
			if kind == "full" {
				v2 = compressible(r, size)
			} else {
				streamName = "2-from-1.sus"
				for off := 0; off < size; off += 64 << 10 { // a quarter of every 64 KiB
					copy(v2[off:], compressible(r, 16<<10))
				}
			}
			deltas := 0
			if kind == "delta" {
				deltas = 1
			}
			d.publishImage(2, v2, deltas)
			fi, err := os.Stat(filepath.Join(d.repo, "streams", "board", "rootfs", streamName))
			if err != nil {
				t.Fatal(err)
			}
			streamSize := fi.Size()
			before := d.slotBytes("b", 1<<20)
			d.proxy.sent.Store(0)
			points := make([]int64, 30)
			for i := range points {
				points[i] = 1 + r.Int64N(streamSize-1)
			}
			sort.Slice(points, func(i, j int) bool { return points[i] < points[j] })
			// Points closer than a few proxy chunks would fall inside what
			// the previous run already received before its kill landed.
			for i := 1; i < len(points); i++ {
				points[i] = max(points[i], points[i-1]+256<<10)
			}
			if points[len(points)-1] >= streamSize {
				t.Fatalf("stream of %d bytes too short for 30 points 256 KiB apart", streamSize)
			}
			resumed := 0
			for i, pt := range points {
				killed, _, stderr := d.killedUpdate(pt)
				if !killed {
					t.Fatalf("run %d finished before the stream reached %d", i, pt)
				}
				if strings.Contains(stderr, "continuing from a checkpoint") {
					resumed++
				}
				changed := !bytes.Equal(d.slotBytes("b", 1<<20), before)
				if changed && d.bootable("b") {
					env, _ := os.ReadFile(d.grubenv)
					st, _ := os.ReadFile(d.state)
					t.Fatalf("after kill %d at stream byte %d slot b is partly written and bootable\ngrubenv: %q\nstate: %s\nstderr: %s", i, pt, bytes.TrimRight(env, "#"), st, stderr)
				}
			}
			_, res, stderr := d.killedUpdate(-1)
			if !res.Switched || len(res.Images) != 1 || !res.Images[0].Verified || res.Images[0].Resumed == 0 {
				t.Fatalf("final run: %+v\n%s", res, stderr)
			}
			if res.Images[0].Stream != kind {
				t.Fatalf("final run used a %s stream, want %s", res.Images[0].Stream, kind)
			}
			if !bytes.Equal(d.slotBytes("b", size), v2) {
				t.Fatal("slot b does not hold v2 after the resumed update")
			}
			if !d.bootable("b") {
				t.Fatal("slot b is not bootable after the verified update")
			}
			sent := d.proxy.sent.Load()
			ratio := float64(sent) / float64(streamSize)
			t.Logf("%s stream of %d bytes, 30 kills, %d runs resumed from a checkpoint: server sent %d bytes = %.3fx", kind, streamSize, resumed, sent, ratio)
			if resumed < 25 {
				t.Errorf("only %d of 30 reruns resumed from a checkpoint", resumed)
			}
			if ratio >= 1.1 {
				t.Errorf("server sent %.3fx the stream (want < 1.1x)", ratio)
			}
		})
	}
}
