package main

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"github.com/sysupdate/sysupdate/manifest"
	"github.com/sysupdate/sysupdate/repo"
)

func init() {
	register("publish", "add a signed release (full stream + deltas) to a channel", runPublish)
}

func runPublish(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("publish", "--repo DIR --channel CH --version V --key SIGNING.key --model M [NAME=]IMAGE...\n       sysupdate publish --repo DIR --channel CH --key SIGNING.key --resign", stderr)
	dir := fs.String("repo", "", "repository root")
	channel := fs.String("channel", "", "channel to publish to")
	versionStr := fs.String("version", "", "build number (an integer; higher is newer)")
	label := fs.String("label", "", "human-readable release name")
	keyPath := fs.String("key", "", "signing private key")
	models := fs.String("model", "", "hardware model(s) the images target, comma-separated")
	deltas := fs.Int("deltas", 2, "deltas from this many most recent releases of the model")
	phased := fs.Int("phased", 100, "rollout percentage")
	floor := fs.Uint64("floor", 0, "raise the channel's lowest installable version")
	expires := fs.String("expires", "30d", "index lifetime")
	resign := fs.Bool("resign", false, "only re-sign the channel's index (fresh timestamp and expiry)")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" || *channel == "" || *keyPath == "" {
		return usageError("publish needs --repo, --channel and --key")
	}
	life, err := parseLifetime(*expires)
	if err != nil || life == 0 {
		return usageError("--expires: an index must expire (e.g. 30d)")
	}
	key, err := readKey(*keyPath, true)
	if err != nil {
		return err
	}
	// Before anything is built: an index signed by a key the keyring
	// does not list (the master key, say) is refused by every device.
	if err := repo.CheckSigner(*dir, key, time.Now()); err != nil {
		return err
	}
	o := repo.Options{Dir: *dir, Key: key, IndexLifetime: life, Deltas: *deltas, Logf: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }}
	if *resign {
		if len(pos) != 0 || *versionStr != "" {
			return usageError("--resign takes no version or images")
		}
		res, err := repo.Resign(o, *channel)
		if err != nil {
			return err
		}
		fmt.Fprintf(stdout, "re-signed %s: generated %s\n", manifest.IndexPath(*channel), res.Index.Generated.Format("2006-01-02T15:04:05Z"))
		return nil
	}
	v, err := strconv.ParseUint(*versionStr, 10, 64)
	if err != nil || v == 0 {
		return usageError("--version must be a build number > 0, got %q", *versionStr)
	}
	if *models == "" || len(pos) == 0 {
		return usageError("publish needs --model and at least one image")
	}
	if *phased < 1 || *phased > 100 {
		return usageError("--phased must be 1..100 (promote can stage at 0)")
	}
	req := repo.PublishRequest{Channel: *channel, Version: v, Label: *label, Models: strings.Split(*models, ","), Phased: *phased, Floor: *floor}
	for _, p := range pos {
		name, path, ok := strings.Cut(p, "=")
		if !ok {
			path = p
			name = strings.TrimSuffix(filepath.Base(p), filepath.Ext(p))
		}
		req.Images = append(req.Images, repo.ImageFile{Name: name, Path: path})
	}
	res, err := repo.Publish(ctx, o, req)
	if err != nil {
		return err
	}
	if !res.Changed {
		fmt.Fprintf(stdout, "version %d already published in %s; nothing changed\n", v, *channel)
		return nil
	}
	fmt.Fprintf(stdout, "published version %d to %s: %d stream(s)\n", v, *channel, len(res.Streams))
	return nil
}
