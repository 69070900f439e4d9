package updater

import (
	"fmt"
	"os"
	"strconv"
	"strings"

	"github.com/sysupdate/sysupdate/bundle"
	"github.com/sysupdate/sysupdate/client"
	"github.com/sysupdate/sysupdate/config"
	"github.com/sysupdate/sysupdate/fetch"
)

// source is where an install reads the repository from.
type source struct {
	root  string
	op    client.Opener
	close func()
	// mirrors and mop are the configured mirrors and their fetcher, set
	// only for the configured repository (they are copies of it).
	mirrors []string
	mop     client.Opener
}

// mirrorRetries bounds a mirror's retries without progress: a LAN cache
// that is off should cost seconds before the next source, not minutes.
const mirrorRetries = 2

// openSource opens what Install's Source names: "" (the configured
// repository), a directory, a file://, http:// or https:// URL, or a
// bundle file.
func openSource(src string, cfg *config.Config, version string, req Request, obs Observer) (*source, error) {
	if src == "" {
		src = cfg.Repository
	}
	if src == "" {
		return nil, fmt.Errorf("updater: no repository: set repository in %s, or name a source (a directory, URL or bundle file)", cfg.Path)
	}
	if !strings.Contains(src, "://") {
		st, err := os.Stat(src)
		if err != nil {
			return nil, fmt.Errorf("updater: source %s: %w", src, err)
		}
		if st.Mode().IsRegular() {
			if !bundle.IsBundle(src) {
				return nil, fmt.Errorf("updater: %s is a file but not a sysupdate bundle (sysupdate-publish --bundle writes them); give a bundle, a repository directory or a URL", src)
			}
			b, err := bundle.Open(src)
			if err != nil {
				return nil, err
			}
			return &source{root: bundle.Root, op: b, close: func() { b.Close() }}, nil
		}
		if !st.IsDir() {
			return nil, fmt.Errorf("updater: source %s is neither a repository directory nor a bundle file", src)
		}
	}
	m := &emitter{obs: obs, now: nowFunc(nil)}
	fo := fetch.Options{CABundle: cfg.CABundle, UserAgent: userAgent(version, cfg), MinRate: cfg.MinRate,
		Logf: func(format string, a ...any) {
			m.emit(Event{Type: EventRetry, Message: fmt.Sprintf(format, a...)})
		}}
	op, err := fetch.New(fo)
	if err != nil {
		return nil, err
	}
	// Closing drops the kept-alive connections: a daemon checks for
	// years, one client per check.
	s := &source{root: src, op: op, close: op.CloseIdleConnections}
	if src == cfg.Repository && len(cfg.Mirrors) > 0 {
		fo.Retries = mirrorRetries
		mop, err := fetch.New(fo)
		if err != nil {
			op.CloseIdleConnections()
			return nil, err
		}
		s.mirrors, s.mop = cfg.Mirrors, mop
		s.close = func() { op.CloseIdleConnections(); mop.CloseIdleConnections() }
	}
	return s, nil
}

// userAgent is what the device tells the server: sysupdate's version, the
// model, the channel and the installed build (from the state file).
func userAgent(version string, cfg *config.Config) string {
	build := ""
	if st, err := client.LoadState(cfg.State); err == nil && st.Installed != 0 {
		build = strconv.FormatUint(st.Installed, 10)
	}
	return fetch.UserAgent(version, cfg.Model, cfg.Channel, build)
}
