package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"hash"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"sync/atomic"
	"time"

	"github.com/sysupdate/sysupdate/client"
	"github.com/sysupdate/sysupdate/fetch"
	"github.com/sysupdate/sysupdate/manifest"
)

// env is what every simulated device shares.
type env struct {
	url, masterPub, ca, work string
	source                   []byte
	backoff                  time.Duration
}

// DeviceResult is one simulated device's outcome.
type DeviceResult struct {
	// Check and Download are the durations of client.Check and of
	// client.Download (drop, resume and apply included).
	Check, Download time.Duration
	// Err is the first failure, nil when the device ended on the right
	// image after exactly one drop and one resume.
	Err error
	// HashMismatch is set when the image written differs from the
	// SHA-256 the signed index names.
	HashMismatch bool
	// Received is the body bytes the device read off the network.
	Received int64
}

// errDrop is the simulated connection loss.
var errDrop = errors.New("fleet: connection dropped halfway (simulated)")

// dropper cuts the device's connection once, after the first half of the
// stream has been read: the fetch reader then resumes with Range and
// If-Range on a new connection, as after any dropped link.
type dropper struct {
	armed   atomic.Bool
	left    atomic.Int64
	dropped atomic.Bool
}

type dropConn struct {
	net.Conn
	d *dropper
}

func (c dropConn) Read(p []byte) (int, error) {
	d := c.d
	if d.armed.Load() && !d.dropped.Load() {
		if d.left.Load() <= 0 && d.dropped.CompareAndSwap(false, true) {
			c.Conn.Close()
			return 0, errDrop
		}
		// Never read past the halfway mark: one large read could
		// otherwise take the rest of the body, and the cut would hit
		// the idle connection after it.
		if left := d.left.Load(); int64(len(p)) > left {
			p = p[:left]
		}
		n, err := c.Conn.Read(p)
		d.left.Add(-int64(n))
		return n, err
	}
	return c.Conn.Read(p)
}

// hashTarget is the inactive slot of a simulated device: it keeps no
// bytes, it hashes them, and insists on the target order stream.Apply
// writes in.
type hashTarget struct {
	h hash.Hash
	n int64
}

func (t *hashTarget) WriteAt(p []byte, off int64) (int, error) {
	if off != t.n {
		return 0, fmt.Errorf("fleet: write at %d, expected the next byte %d: the simulated slot only takes writes in order", off, t.n)
	}
	t.h.Write(p)
	t.n += int64(len(p))
	return len(p), nil
}

func (t *hashTarget) ReadAt([]byte, int64) (int, error) {
	return 0, errors.New("fleet: the simulated slot cannot be read back")
}

// runDevice is one device: the real client checks the repository (the
// revocation list, the keyring and the channel index with their
// signatures, verified against the master key) and downloads the delta
// from version 1 with client.Download, applying it against version 1's
// image; the connection is cut once halfway through the stream. The
// image written is hashed and compared with the signed index.
func runDevice(ctx context.Context, i int, e *env) (res DeviceResult) {
	dir := filepath.Join(e.work, "devices", strconv.Itoa(i))
	if err := os.MkdirAll(dir, 0o755); err != nil {
		res.Err = fmt.Errorf("device %d: %w", i, err)
		return res
	}
	d := &dropper{}
	dialer := &net.Dialer{Timeout: fetch.DefaultTimeout, KeepAlive: 30 * time.Second}
	op, err := fetch.New(fetch.Options{
		UserAgent:    fetch.UserAgent("fleet-bench", benchModel, benchChannel, "1"),
		CABundle:     e.ca,
		OnlyCABundle: e.ca != "",
		Backoff:      e.backoff,
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			c, err := dialer.DialContext(ctx, network, addr)
			if err != nil {
				return nil, err
			}
			return dropConn{c, d}, nil
		},
	})
	if err != nil {
		res.Err = fmt.Errorf("device %d: %w", i, err)
		return res
	}
	defer func() {
		op.CloseIdleConnections()
		res.Received = op.Stats().Received
	}()
	c, err := client.New(client.Config{RepoURL: e.url, Channel: benchChannel, Model: benchModel, MasterKeys: e.masterPub,
		StatePath: filepath.Join(dir, "state.json"), MachineIDPath: filepath.Join(dir, "machine-id"), Installed: 1}, op)
	if err != nil {
		res.Err = fmt.Errorf("device %d: %w", i, err)
		return res
	}
	t0 := time.Now()
	plan, err := c.Check(ctx)
	res.Check = time.Since(t0)
	if err != nil {
		res.Err = fmt.Errorf("device %d: check: %w", i, err)
		return res
	}
	if plan.Release == nil || plan.Release.Version != 2 || len(plan.Images) != 1 || !plan.Images[0].Delta || plan.Images[0].From != 1 {
		res.Err = fmt.Errorf("device %d: check chose %+v, want the delta from 1 to 2: %v", i, plan.Release, plan.Reasons)
		return res
	}
	img := plan.Images[0]
	d.left.Store(img.Size / 2)
	d.armed.Store(true)
	t := &hashTarget{h: sha256.New()}
	t1 := time.Now()
	_, err = c.Download(ctx, img, t, bytes.NewReader(e.source), client.DownloadOptions{})
	res.Download = time.Since(t1)
	if err != nil {
		res.Err = fmt.Errorf("device %d: download: %w", i, err)
		return res
	}
	if got := manifest.Hash(t.h.Sum(nil)); got != img.TargetSHA256 || t.n != img.TargetSize {
		res.HashMismatch = true
		res.Err = fmt.Errorf("device %d: wrote %d bytes with SHA-256 %s, the signed index says %d bytes %s", i, t.n, got, img.TargetSize, img.TargetSHA256)
		return res
	}
	if st := op.Stats(); !d.dropped.Load() || st.Resumes != 1 {
		res.Err = fmt.Errorf("device %d: dropped %v, resumed %d times; want one drop and one resume", i, d.dropped.Load(), st.Resumes)
	}
	return res
}
