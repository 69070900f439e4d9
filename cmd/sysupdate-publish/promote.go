package main

import (
	"context"
	"fmt"
	"io"
	"strconv"
	"time"

	"github.com/sysupdate/sysupdate/repo"
)

func init() {
	register("promote", "move a tested release to another channel, optionally phased", runPromote)
}

func runPromote(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("promote", "--repo DIR --from testing --to stable --key SIGNING.key [--phased PERCENT] VERSION", stderr)
	dir := fs.String("repo", "", "repository root")
	from := fs.String("from", "", "source channel")
	to := fs.String("to", "", "destination channel")
	keyPath := fs.String("key", "", "signing private key")
	phased := fs.Int("phased", -1, "rollout percentage 0..100 in the destination (default: 100 for a new release, unchanged otherwise)")
	deltas := fs.Int("deltas", 2, "deltas from this many most recent releases of the destination channel")
	expires := fs.String("expires", "30d", "index lifetime")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if *dir == "" || *from == "" || *to == "" || *keyPath == "" || len(pos) != 1 {
		return usageError("promote needs --repo, --from, --to, --key and one VERSION")
	}
	v, err := strconv.ParseUint(pos[0], 10, 64)
	if err != nil || v == 0 {
		return usageError("VERSION must be a build number > 0, got %q", pos[0])
	}
	if *phased < -1 || *phased > 100 {
		return usageError("--phased must be 0..100")
	}
	life, err := parseLifetime(*expires)
	if err != nil || life == 0 {
		return usageError("--expires: an index must expire (e.g. 30d)")
	}
	key, err := readKey(*keyPath, true)
	if err != nil {
		return err
	}
	if err := repo.CheckSigner(*dir, key, time.Now()); err != nil {
		return err
	}
	o := repo.Options{Dir: *dir, Key: key, IndexLifetime: life, Deltas: *deltas, Logf: func(f string, a ...any) { fmt.Fprintf(stderr, f+"\n", a...) }}
	res, err := repo.Promote(ctx, o, repo.PromoteRequest{From: *from, To: *to, Version: v, Phased: *phased})
	if err != nil {
		return err
	}
	if !res.Changed {
		fmt.Fprintf(stdout, "version %d already in %s as requested; nothing changed\n", v, *to)
		return nil
	}
	fmt.Fprintf(stdout, "promoted version %d from %s to %s\n", v, *from, *to)
	return nil
}
