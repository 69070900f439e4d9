package main

import (
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"os"

	"github.com/sysupdate/sysupdate/config"
)

// configFlags maps each configuration key to the flag that sets the same
// thing; a flag given on the command line wins over the file.
var configFlags = map[string]string{
	"repository": "repo", "channel": "channel", "model": "model", "master_keys": "master-keys",
	"state": "state", "machine_id": "machine-id", "ca_bundle": "ca-bundle", "floor": "floor",
	"lock": "lock", "cmdline": "cmdline", "tries": "tries", "bootloader": "bootloader",
	"grubenv": "grubenv", "grub_scheme": "grub-scheme", "fw_env_config": "fw-env-config",
	"uboot_scheme": "uboot-scheme", "misc": "misc",
}

// addConfigFlag adds --config to fs.
func addConfigFlag(fs *flag.FlagSet) *string {
	return fs.String("config", "", "device configuration file (default "+config.DefaultPath+"; docs/configuration.md)")
}

// applyConfig loads the configuration file (path, or the default when
// path is "") and sets every flag of fs that the command line left alone
// and the file sets. A missing default file is no error unless required;
// a missing file named with --config always is.
func applyConfig(fs *flag.FlagSet, path string, required bool) (*config.Config, error) {
	explicit := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { explicit[f.Name] = true })
	p := path
	if p == "" {
		p = config.DefaultPath
	}
	cfg, err := config.Load(p)
	if errors.Is(err, iofs.ErrNotExist) {
		if path == "" && !required {
			return &config.Config{Path: p}, nil
		}
		return nil, fmt.Errorf("no configuration file %s: write one (docs/configuration.md) or pass --config FILE", p)
	}
	if err != nil {
		return nil, err
	}
	for key, name := range configFlags {
		v, ok := cfg.Get(key)
		if !ok || explicit[name] || fs.Lookup(name) == nil {
			continue
		}
		if err := fs.Set(name, v); err != nil {
			return nil, fmt.Errorf("%s:%d: %s = %s: %v", cfg.Path, cfg.Line(key), key, v, err)
		}
	}
	return cfg, nil
}

// readCmdline returns the content of the kernel command line file, "" if
// it cannot be read (backends then read /proc/cmdline themselves).
func readCmdline(path string) string {
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	return string(b)
}
