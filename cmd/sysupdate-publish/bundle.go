package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path"
	"path/filepath"
	"strings"

	"github.com/sysupdate/sysupdate/atomicfile"
	"github.com/sysupdate/sysupdate/bundle"
	"github.com/sysupdate/sysupdate/manifest"
	"github.com/sysupdate/sysupdate/repo"
	"github.com/sysupdate/sysupdate/trust"
)

func init() {
	register("bundle", "write one file holding a channel's signed metadata and a release's streams, for a USB stick or a factory line", runBundle)
}

func runBundle(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("bundle", "--repo DIR --channel CH --model M [--version V] [--with-deltas] -o OUT", stderr)
	dir := fs.String("repo", "", "repository root")
	channel := fs.String("channel", "", "channel whose signed index the bundle carries")
	model := fs.String("model", "", "hardware model")
	version := fs.Uint64("version", 0, "release to carry (default: the channel's newest for the model; a device installs an older one only with install --version)")
	withDeltas := fs.Bool("with-deltas", false, "also carry the release's deltas (a device with the source version then reads less)")
	out := fs.String("o", "", "output bundle file")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 0 || *dir == "" || *channel == "" || *model == "" || *out == "" {
		return usageError("bundle needs --repo, --channel, --model and -o OUT")
	}
	idx, err := repo.LoadIndex(*dir, *channel)
	if err != nil {
		return err
	}
	v := *version
	if v == 0 {
		v = idx.Newest(*model)
	}
	rel := idx.Find(v, *model)
	if rel == nil {
		return fmt.Errorf("bundle: channel %s has no version %d for model %s (newest: %d); publish it first", *channel, v, *model, idx.Newest(*model))
	}
	ip := manifest.IndexPath(*channel)
	files := []string{trust.KeyringPath, trust.KeyringPath + trust.SigSuffix, trust.RevocationsPath, trust.RevocationsPath + trust.SigSuffix, ip, ip + trust.SigSuffix}
	add := func(u string) error {
		p := path.Clean(path.Join(path.Dir(ip), u))
		if strings.HasPrefix(p, "../") {
			return fmt.Errorf("bundle: stream %s lies outside the repository", u)
		}
		files = append(files, p)
		return nil
	}
	for _, im := range rel.Images {
		if err := add(im.Full.URL); err != nil {
			return err
		}
		if *withDeltas {
			for _, d := range im.Deltas {
				if err := add(d.URL); err != nil {
					return err
				}
			}
		}
	}
	for _, f := range files {
		if _, err := os.Stat(filepath.Join(*dir, filepath.FromSlash(f))); err != nil {
			return fmt.Errorf("bundle: %w (is %s a complete repository?)", err, *dir)
		}
	}
	if err := atomicfile.Write(*out, 0o644, func(w io.Writer) error { return bundle.Write(w, *dir, files) }); err != nil {
		return err
	}
	st, _ := os.Stat(*out)
	fmt.Fprintf(stdout, "bundle %s: version %d %s for %s from channel %s, %d files, %d bytes\n", *out, rel.Version, rel.Label, *model, *channel, len(files), st.Size())
	return nil
}
