package main

import (
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"

	"github.com/sysupdate/sysupdate/config"
	"github.com/sysupdate/sysupdate/updater"
)

// deviceFlags are the flags every device command shares: --config, the
// running slot, and one flag per configuration key, which wins over the
// file. They only turn into a typed config.Config; the engine does the
// rest.
type deviceFlags struct {
	conf string
	slot string
	vals map[string]*string
}

// configKeyFlags maps flags to configuration keys (docs/configuration.md).
var configKeyFlags = []struct{ flag, key string }{
	{"repo", "repository"}, {"channel", "channel"}, {"model", "model"}, {"master-keys", "master_keys"},
	{"state", "state"}, {"machine-id", "machine_id"}, {"ca-bundle", "ca_bundle"}, {"floor", "floor"},
	{"cmdline", "cmdline"}, {"tries", "tries"}, {"bootloader", "bootloader"}, {"grubenv", "grubenv"},
	{"grub-scheme", "grub_scheme"}, {"fw-env-config", "fw_env_config"}, {"uboot-scheme", "uboot_scheme"},
	{"misc", "misc"}, {"slot-suffix", "slot_suffix"}, {"health-dir", "health_dir"},
	{"health-timeout", "health_timeout"}, {"health-failure", "health_failure"}, {"on-trial", "on_trial"},
	{"min-rate", "min_rate"}, {"mirrors", "mirrors"}, {"skip-unchanged", "skip_unchanged"},
}

func addDeviceFlags(fs *flag.FlagSet) *deviceFlags {
	d := &deviceFlags{vals: map[string]*string{}}
	fs.StringVar(&d.conf, "config", "", "device configuration file (default "+config.DefaultPath+"; docs/configuration.md)")
	fs.StringVar(&d.slot, "slot", "", "the running slot (a, b); default: from the kernel command line or the device of /. For recovery mode, where no slot runs, name the one to keep")
	for _, kf := range configKeyFlags {
		doc := kf.key
		for _, k := range config.Keys {
			if k.Name == kf.key {
				doc = k.Doc
			}
		}
		d.vals[kf.flag] = fs.String(kf.flag, "", doc+" (overrides "+kf.key+" in the configuration)")
	}
	return d
}

// load reads the configuration file (the default one may be missing
// unless required) and applies the flags given on the command line.
func (d *deviceFlags) load(fs *flag.FlagSet, required bool) (*config.Config, error) {
	p := d.conf
	if p == "" {
		p = config.DefaultPath
	}
	cfg, err := config.Load(p)
	if errors.Is(err, iofs.ErrNotExist) {
		if d.conf != "" || required {
			return nil, fmt.Errorf("no configuration file %s: write one (docs/configuration.md) or pass --config FILE", p)
		}
		cfg, err = config.Default(), nil
		cfg.Path = p
	}
	if err != nil {
		return nil, err
	}
	var bad error
	fs.Visit(func(f *flag.Flag) {
		v, ok := d.vals[f.Name]
		if !ok || bad != nil {
			return
		}
		bad = setField(cfg, f.Name, *v)
	})
	if bad != nil {
		return nil, bad
	}
	return cfg, nil
}

// setField applies the flag flagName (one of configKeyFlags) to c, with
// the file's own checks.
func setField(c *config.Config, flagName, v string) error {
	for _, kf := range configKeyFlags {
		if kf.flag == flagName {
			if err := c.Set(kf.key, v); err != nil {
				return usageError("--%s: %v", flagName, err)
			}
			return nil
		}
	}
	return nil
}

// engine builds the engine for a device command.
func (d *deviceFlags) engine(fs *flag.FlagSet, required bool) (*updater.Engine, error) {
	cfg, err := d.load(fs, required)
	if err != nil {
		return nil, err
	}
	return updater.New(cfg, updater.Options{Version: version, Slot: d.slot, Reboot: rebootFunc})
}
