package main

import (
	"bufio"
	"bytes"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/sysupdate/sysupdate/internal/testbin"
	"github.com/sysupdate/sysupdate/stream"
	"github.com/sysupdate/sysupdate/updater"
)

// TestUpdateFromMirrors runs the device binary with two mirrors in its
// configuration: the first a stale copy of the repository (it stops
// before release 2), the second serving release 2's streams with a byte
// flipped in the middle of their first data blob; the origin last. The
// update must end on the origin's bytes, say which mirror failed and why
// (without the corrupt mirror's password), and report the source in use
// on its progress events.
func TestUpdateFromMirrors(t *testing.T) {
	d := newDevice(t)
	d.publish(1)
	if res, _, err := d.update("--slot", "b"); err != nil || !res.Switched || res.Target != "a" {
		t.Fatalf("factory flash: %+v, %v", res, err)
	}
	runOK(t, "mark-good", "--config", d.conf, "--slot", "a")

	staleDir := filepath.Join(d.dir, "stale")
	if out, err := exec.Command("cp", "-a", d.repo, staleDir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	d.publish(2)
	corruptDir := filepath.Join(d.dir, "corrupt")
	if out, err := exec.Command("cp", "-a", d.repo, corruptDir).CombinedOutput(); err != nil {
		t.Fatalf("cp: %v %s", err, out)
	}
	streams, _ := filepath.Glob(filepath.Join(corruptDir, "streams", "board", "rootfs", "2*.sus"))
	if len(streams) < 2 {
		t.Fatalf("release 2 streams: %q, want the full stream and a delta", streams)
	}
	for _, p := range streams {
		flipMidBlob(t, p)
	}
	stale := httptest.NewServer(http.FileServer(http.Dir(staleDir)))
	defer stale.Close()
	corrupt := httptest.NewServer(http.FileServer(http.Dir(corruptDir)))
	defer corrupt.Close()
	cu, _ := url.Parse(corrupt.URL)
	cu.User = url.UserPassword("cache", "s3cret")
	conf, err := os.ReadFile(d.conf)
	if err != nil {
		t.Fatal(err)
	}
	origin := ""
	for _, l := range strings.Split(string(conf), "\n") {
		if v, ok := strings.CutPrefix(l, "repository = "); ok {
			origin = v
		}
	}
	if err := os.WriteFile(d.conf, append(conf, []byte("mirrors = "+stale.URL+" "+cu.String()+"\n")...), 0o644); err != nil {
		t.Fatal(err)
	}

	bin := testbin.Build(t, testbin.Device, testbin.DeviceTags)
	out, errOut, err := testbin.Run(bin, "update", "--config", d.conf, "--no-reboot", "--json-events")
	if err != nil {
		t.Fatalf("update: %v\n%s\n%s", err, out, errOut)
	}
	if !bytes.Equal(d.slot("b", len(d.imgs[2])), d.imgs[2]) {
		t.Fatal("slot b does not hold the origin's release 2")
	}
	if strings.Contains(out+errOut, "s3cret") {
		t.Fatalf("the output shows the mirror's password:\n%s%s", out, errOut)
	}
	var sources []updater.Event
	var progress []updater.Event
	sc := bufio.NewScanner(strings.NewReader(out))
	for sc.Scan() {
		var ev updater.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			t.Fatalf("event line %q: %v", sc.Text(), err)
		}
		switch ev.Type {
		case updater.EventSource:
			sources = append(sources, ev)
			t.Logf("%s", ev.Message)
		case updater.EventProgress:
			progress = append(progress, ev)
		}
	}
	want := []struct {
		source string
		mirror bool
		err    string // "" for a start
	}{
		{stale.URL + "/", true, ""}, {stale.URL + "/", true, "404 Not Found"},
		{corrupt.URL + "/", true, ""}, {corrupt.URL + "/", true, "does not match its authenticated hash"},
		{origin + "/", false, ""},
	}
	if len(sources) != len(want) {
		t.Fatalf("%d source events, want %d:\n%s", len(sources), len(want), out)
	}
	for i, w := range want {
		ev := sources[i]
		if ev.Source != w.source || ev.Mirror != w.mirror || !strings.Contains(ev.Err, w.err) || (w.err == "") != (ev.Err == "") || !strings.Contains(ev.Message, w.source) {
			t.Errorf("source event %d: %+v; want source %s mirror %v error %q", i, ev, w.source, w.mirror, w.err)
		}
		if w.err != "" && !strings.Contains(ev.Message, "mirror "+w.source+" failed") {
			t.Errorf("source event %d says %q; want it to name the failed mirror", i, ev.Message)
		}
	}
	if len(progress) == 0 || progress[len(progress)-1].Source != origin+"/" || progress[len(progress)-1].Mirror {
		t.Errorf("the last progress event does not name the origin as its source: %+v", progress)
	}

	// The same lines for people: the renderer names the failed mirrors.
	var r bytes.Buffer
	rend := newRenderer(&r, &r, false, nil)
	for _, ev := range sources {
		rend.event(ev)
	}
	if s := r.String(); !strings.Contains(s, "mirror "+stale.URL+"/ failed") || !strings.Contains(s, "mirror "+corrupt.URL+"/ failed") || !strings.Contains(s, "from the repository "+origin+"/") {
		t.Errorf("rendered:\n%s", s)
	}
}

// flipMidBlob flips one byte in the middle of the first data blob of the
// stream file at p: the header and op tables stay intact, so only the
// blob's hash check can catch it.
func flipMidBlob(t *testing.T, p string) {
	t.Helper()
	b, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	h, err := stream.ReadHeader(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	seg := h.Segments[0]
	if seg.DataLen == 0 {
		t.Fatalf("%s: first segment has no data", p)
	}
	b[h.HeaderLen+int64(seg.TableLen)+int64(seg.DataLen)/2] ^= 0x01
	if err := os.WriteFile(p, b, 0o644); err != nil {
		t.Fatal(err)
	}
}

// TestMirrorsFlagAndProgress: --mirrors overrides the key with the
// file's checks, and a progress line names the source in use.
func TestMirrorsFlagAndProgress(t *testing.T) {
	cfg, err := os.CreateTemp(t.TempDir(), "conf")
	if err != nil {
		t.Fatal(err)
	}
	cfg.WriteString("mirrors = http://a.lan/repo\n")
	cfg.Close()
	fs := newFlagSet("update", "", new(bytes.Buffer))
	df := addDeviceFlags(fs)
	if _, err := parseFlags(fs, []string{"--config", cfg.Name(), "--mirrors", "http://b.lan/repo /srv/copy"}); err != nil {
		t.Fatal(err)
	}
	c, err := df.load(fs, true)
	if err != nil {
		t.Fatal(err)
	}
	if strings.Join(c.Mirrors, " ") != "http://b.lan/repo /srv/copy" {
		t.Fatalf("--mirrors: %q", c.Mirrors)
	}
	fs = newFlagSet("update", "", new(bytes.Buffer))
	df = addDeviceFlags(fs)
	if _, err := parseFlags(fs, []string{"--config", cfg.Name(), "--mirrors", "relative/dir"}); err != nil {
		t.Fatal(err)
	}
	if _, err := df.load(fs, true); err == nil || !strings.Contains(err.Error(), "--mirrors") || !strings.Contains(err.Error(), "absolute directory") {
		t.Fatalf("--mirrors relative/dir: %v", err)
	}

	var out bytes.Buffer
	r := newRenderer(&out, &out, false, nil)
	r.event(updater.Event{Type: updater.EventProgress, Image: "rootfs", Done: 50, Total: 100, Source: "http://b.lan/repo/", Mirror: true})
	if !strings.Contains(out.String(), "rootfs: 50% 50/100 bytes, from http://b.lan/repo/") {
		t.Fatalf("progress line %q does not name the source", out.String())
	}
}
