package main

import (
	"errors"
	"flag"
	"fmt"
	iofs "io/fs"
	"strconv"
	"time"

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
	{"min-rate", "min_rate"},
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
	if cfg.Tries < 1 || cfg.Tries > 7 {
		return nil, usageError("--tries must be between 1 and 7, got %d", cfg.Tries)
	}
	return cfg, nil
}

func setField(c *config.Config, flagName, v string) error {
	num := func() (uint64, error) {
		n, err := strconv.ParseUint(v, 10, 64)
		if err != nil {
			return 0, usageError("--%s %q: give a number", flagName, v)
		}
		return n, nil
	}
	switch flagName {
	case "repo":
		c.Repository = v
	case "channel":
		c.Channel = v
	case "model":
		c.Model = v
	case "master-keys":
		c.MasterKeys = v
	case "state":
		c.State = v
	case "machine-id":
		c.MachineID = v
	case "ca-bundle":
		c.CABundle = v
	case "floor":
		n, err := num()
		c.Floor = n
		return err
	case "cmdline":
		c.Cmdline = v
	case "tries":
		n, err := num()
		c.Tries = int(n)
		return err
	case "bootloader":
		if v != "grub" && v != "uboot" && v != "android" {
			return usageError("unknown bootloader %q: use one of android, grub, uboot", v)
		}
		c.Bootloader = v
	case "grubenv":
		c.GrubEnv = v
	case "grub-scheme":
		if v != "sysupdate" && v != "rauc" {
			return usageError("--grub-scheme: unknown scheme %q: use sysupdate or rauc", v)
		}
		c.GrubScheme = v
	case "fw-env-config":
		c.FwEnvConfig = v
	case "uboot-scheme":
		if v != "rauc" && v != "mender" {
			return usageError("--uboot-scheme: unknown scheme %q: use rauc or mender", v)
		}
		c.UBootScheme = v
	case "misc":
		c.Misc = v
	case "slot-suffix":
		c.SlotSuffix = v
	case "health-dir":
		c.HealthDir = v
	case "health-timeout":
		n, err := num()
		c.HealthTimeout = time.Duration(n) * time.Second
		return err
	case "health-failure":
		if v != config.HealthStay && v != config.HealthMarkBad && v != config.HealthReboot {
			return usageError("--health-failure %q: use stay, mark-bad or reboot", v)
		}
		c.HealthFailure = v
	case "on-trial":
		if v != config.TrialRefuse && v != config.TrialConfirm {
			return usageError("--on-trial %q: use refuse or confirm", v)
		}
		c.OnTrial = v
	case "min-rate":
		n, err := num()
		c.MinRate = int64(n)
		return err
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
