package main

import (
	"bytes"
	"context"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"

	"github.com/sysupdate/sysupdate/manifest"
)

// Names the generated repository uses.
const (
	benchChannel = "stable"
	benchModel   = "fleet-board"
	benchImage   = "rootfs"
)

// Repo is a repository the devices update from: version 1 is installed on
// every device, version 2 is published with a delta from 1.
type Repo struct {
	// Dir is the repository root.
	Dir string
	// MasterPub is the armored master public key a device carries.
	MasterPub string
	// Source is version 1's image: the active slot of every device.
	Source []byte
	// ImageSize, DeltaSize and FullSize are version 2's image, its delta
	// from 1 and its full stream, in bytes.
	ImageSize, DeltaSize, FullSize int64
}

// makeImages returns two images of size bytes: v1 pseudo-random
// (incompressible, like a compressed root file system), v2 the same with
// a fraction changed of its 64 KiB blocks, chosen at random, rewritten.
func makeImages(size int64, changed float64) (v1, v2 []byte) {
	r := rand.New(rand.NewPCG(1, 2))
	v1 = make([]byte, size)
	fill(r, v1)
	v2 = bytes.Clone(v1)
	const block = 64 << 10
	for off := int64(0); off < size; off += block {
		if r.Float64() < changed {
			fill(r, v2[off:min(off+block, size)])
		}
	}
	return v1, v2
}

func fill(r *rand.Rand, b []byte) {
	for i := 0; i+8 <= len(b); i += 8 {
		v := r.Uint64()
		for j := range 8 {
			b[i+j] = byte(v >> (8 * j))
		}
	}
	for i := len(b) &^ 7; i < len(b); i++ {
		b[i] = byte(r.Uint32())
	}
}

// buildRepo makes a repository in dir with the real publisher binary:
// master and signing keys, the keyring (which also writes the revocation
// list), and versions 1 and 2 of one image on channel stable, so that 2
// has a delta from 1.
func buildRepo(ctx context.Context, publisher, dir string, size int64, changed float64) (*Repo, error) {
	keys, imgs, root := filepath.Join(dir, "keys"), filepath.Join(dir, "images"), filepath.Join(dir, "repo")
	for _, d := range []string{keys, imgs} {
		if err := os.MkdirAll(d, 0o755); err != nil {
			return nil, fmt.Errorf("fleet: repository: %w", err)
		}
	}
	v1, v2 := makeImages(size, changed)
	for v, b := range map[int][]byte{1: v1, 2: v2} {
		if err := os.WriteFile(filepath.Join(imgs, fmt.Sprintf("rootfs-%d.img", v)), b, 0o644); err != nil {
			return nil, fmt.Errorf("fleet: repository: %w", err)
		}
	}
	run := func(args ...string) error {
		cmd := exec.CommandContext(ctx, publisher, args...)
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("fleet: %s %v: %w\n%s", publisher, args, err, out)
		}
		return nil
	}
	steps := [][]string{
		{"keygen", "--out", keys, "--expires", "10y", "master"},
		{"keygen", "--out", keys, "signing"},
		{"keyring", "--repo", root, "--master", filepath.Join(keys, "master.key"), filepath.Join(keys, "signing.pub")},
	}
	for v := 1; v <= 2; v++ {
		steps = append(steps, []string{"publish", "--repo", root, "--channel", benchChannel, "--version", fmt.Sprint(v),
			"--key", filepath.Join(keys, "signing.key"), "--model", benchModel, benchImage + "=" + filepath.Join(imgs, fmt.Sprintf("rootfs-%d.img", v))})
	}
	for _, s := range steps {
		if err := run(s...); err != nil {
			return nil, err
		}
	}
	// The private keys are not needed any more: keep them out of what the
	// servers publish (they are in dir/keys, outside dir/repo, anyway).
	if err := os.Remove(filepath.Join(keys, "master.key")); err != nil {
		return nil, fmt.Errorf("fleet: repository: %w", err)
	}
	if err := os.Remove(filepath.Join(keys, "signing.key")); err != nil {
		return nil, fmt.Errorf("fleet: repository: %w", err)
	}
	r := &Repo{Dir: root, MasterPub: filepath.Join(keys, "master.pub"), Source: v1}
	if err := r.sizes(); err != nil {
		return nil, err
	}
	return r, nil
}

// sizes reads version 2's image, delta and full stream sizes from the
// channel index (unverified: only for the report; the devices verify).
func (r *Repo) sizes() error {
	p := filepath.Join(r.Dir, filepath.FromSlash(manifest.IndexPath(benchChannel)))
	b, err := os.ReadFile(p)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	idx, err := manifest.ParseIndex(p, b)
	if err != nil {
		return fmt.Errorf("fleet: %w", err)
	}
	for _, rel := range idx.Releases {
		if rel.Version != 2 || rel.Model != benchModel || len(rel.Images) != 1 {
			continue
		}
		im := rel.Images[0]
		d := im.Delta(1)
		if d == nil {
			return fmt.Errorf("fleet: %s: version 2 has no delta from 1", p)
		}
		r.ImageSize, r.DeltaSize, r.FullSize = im.Size, d.Size, im.Full.Size
		return nil
	}
	return fmt.Errorf("fleet: %s: no version 2 of %s with one image", p, benchModel)
}
