package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"github.com/sysupdate/sysupdate/client"
	"github.com/sysupdate/sysupdate/fetch"
	"github.com/sysupdate/sysupdate/trust"
)

func init() {
	register("check", "say what update is available and why it would (not) be installed", runCheck)
}

// refusalCode names a refusal for scripts (--json "refusal").
func refusalCode(err error) string {
	for _, r := range []struct {
		err  error
		code string
	}{
		{trust.ErrNoSignature, "missing-signature"}, {trust.ErrBadSignature, "bad-signature"},
		{trust.ErrUnknownKey, "untrusted-key"}, {trust.ErrRevoked, "revoked-key"}, {trust.ErrExpired, "expired-key"},
		{client.ErrIndexExpired, "index-expired"}, {client.ErrReplayed, "replayed-metadata"},
		{client.ErrWrongChannel, "wrong-channel"}, {client.ErrRollback, "rollback"}, {client.ErrBelowFloor, "below-floor"},
		{client.ErrWrongModel, "wrong-model"}, {client.ErrNoSuchVersion, "no-such-version"},
		{client.ErrNotInPhase, "not-in-phase"}, {client.ErrStreamSize, "size-mismatch"}, {client.ErrStreamMismatch, "stream-mismatch"},
	} {
		if errors.Is(err, r.err) {
			return r.code
		}
	}
	return ""
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", "[--config FILE] --repo URL --channel CH --model M --master-keys FILE --state FILE [--json]", stderr)
	var cfg client.Config
	fs.StringVar(&cfg.RepoURL, "repo", "", "repository: https://, http://, file:// or a directory")
	fs.StringVar(&cfg.Channel, "channel", "stable", "channel to follow")
	fs.StringVar(&cfg.Model, "model", "", "this device's hardware model")
	fs.StringVar(&cfg.MasterKeys, "master-keys", "/etc/sysupdate/master.pub", "master public keys baked into the image")
	fs.StringVar(&cfg.StatePath, "state", "/var/lib/sysupdate/state.json", "device state file")
	fs.StringVar(&cfg.MachineIDPath, "machine-id", "/etc/machine-id", "machine ID file (phased rollouts)")
	fs.Uint64Var(&cfg.Installed, "installed", 0, "installed version (default: from the state file)")
	fs.Uint64Var(&cfg.Floor, "floor", 0, "lowest version to accept")
	fs.BoolVar(&cfg.AllowDowngrade, "allow-downgrade", false, "accept an older release or one below the floor")
	fs.Uint64Var(&cfg.Version, "version", 0, "ask for this version instead of the newest")
	caBundle := fs.String("ca-bundle", "", "extra CA certificates (PEM) for https://")
	asJSON := fs.Bool("json", false, "print the plan as JSON")
	confPath := addConfigFlag(fs)
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if _, err := applyConfig(fs, *confPath, false); err != nil {
		return err
	}
	if len(pos) != 0 {
		return usageError("check takes no arguments")
	}
	if cfg.RepoURL == "" || cfg.Model == "" {
		return usageError("check needs --repo and --model")
	}
	op, err := fetch.New(fetch.Options{CABundle: *caBundle, UserAgent: userAgent(cfg)})
	if err != nil {
		return err
	}
	c, err := client.New(cfg, op)
	if err != nil {
		return err
	}
	plan, err := c.Check(ctx)
	if *asJSON {
		out := struct {
			*client.Plan
			Error   string `json:"error,omitempty"`
			Refusal string `json:"refusal,omitempty"`
		}{Plan: plan}
		if err != nil {
			out.Error, out.Refusal = err.Error(), refusalCode(err)
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		if jerr := enc.Encode(out); jerr != nil {
			return jerr
		}
		return err
	}
	if plan != nil {
		fmt.Fprintf(stdout, "channel %s, model %s, installed %d; index generated %s, expires %s, signed by %s\n",
			plan.Channel, plan.Model, plan.Installed, plan.Generated.Format("2006-01-02T15:04:05Z"), plan.Expires.Format("2006-01-02T15:04:05Z"), plan.SignedBy)
		for _, r := range plan.Reasons {
			fmt.Fprintf(stdout, "  %s\n", r)
		}
		if plan.Release != nil {
			fmt.Fprintf(stdout, "update available: version %d %s\n", plan.Release.Version, plan.Release.Label)
		} else if err == nil {
			fmt.Fprintln(stdout, "up to date")
		}
	}
	if err != nil {
		return fmt.Errorf("refusing: %w", err)
	}
	return nil
}
