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
	"github.com/sysupdate/sysupdate/updater"
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
		{client.ErrBadIndex, "bad-index"}, {client.ErrIndexSchema, "index-schema"}, {client.ErrTooLarge, "too-large"},
		{fetch.ErrTooSlow, "too-slow"}, {client.ErrUnavailable, "unavailable"},
		{updater.ErrBusy, "busy"}, {updater.ErrOnTrial, "on-trial"}, {updater.ErrHealth, "health-check"},
		{updater.ErrNoConfirmedOther, "no-confirmed-slot"},
	} {
		if errors.Is(err, r.err) {
			return r.code
		}
	}
	return ""
}

func runCheck(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := newFlagSet("check", "[--config FILE] [--repo URL --channel CH --model M --master-keys FILE --state FILE] [--json] [SOURCE]", stderr)
	df := addDeviceFlags(fs)
	var req updater.Request
	fs.BoolVar(&req.AllowDowngrade, "allow-downgrade", false, "accept an older release or one below the floor")
	fs.Uint64Var(&req.Version, "version", 0, "ask for this version instead of the newest")
	fs.Uint64Var(&req.Installed, "installed", 0, "installed version (default: from the state file)")
	asJSON := fs.Bool("json", false, "print the plan as JSON")
	pos, err := parseFlags(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 1 {
		return usageError("check takes at most one SOURCE (a repository directory, URL or bundle file)")
	}
	if len(pos) == 1 {
		req.Source = pos[0]
	}
	e, err := df.engine(fs, false)
	if err != nil {
		return err
	}
	if cfg := e.Config(); (cfg.Repository == "" && req.Source == "") || cfg.Model == "" {
		return usageError("check needs a repository and a model: set them in the configuration file or pass --repo and --model")
	}
	plan, err := e.Check(ctx, req, nil)
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
