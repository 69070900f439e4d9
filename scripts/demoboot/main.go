// Command demoboot plays GRUB for scripts/demo.sh: it applies the boot rule
// of the shipped grub.cfg (bootloaders/grub, Scheme.Boot) to a grubenv
// once, saves what GRUB's save_env would, and writes the kernel command
// line the chosen slot boots with. It is a demo prop, not part of the
// device binary.
//
//	demoboot GRUBENV CMDLINE-FILE
package main

import (
	"fmt"
	"os"
	"strings"

	"github.com/sysupdate/sysupdate/bootloaders/grub"
)

func main() {
	if len(os.Args) != 3 {
		fmt.Fprintln(os.Stderr, "usage: demoboot GRUBENV CMDLINE-FILE")
		os.Exit(2)
	}
	if err := boot(os.Args[1], os.Args[2]); err != nil {
		fmt.Fprintln(os.Stderr, "demoboot:", err)
		os.Exit(1)
	}
}

func boot(envPath, cmdlinePath string) error {
	env, err := grub.ReadFile(envPath)
	if err != nil {
		return err
	}
	d := grub.SchemeSysupdate.Boot(env, []string{"a", "b"})
	var saved []string
	for _, v := range d.Save {
		if err := env.Set(v.Name, v.Value); err != nil {
			return err
		}
		saved = append(saved, v.Name+"="+v.Value)
	}
	if len(saved) > 0 {
		if err := grub.WriteFile(envPath, env); err != nil {
			return err
		}
	}
	if err := os.WriteFile(cmdlinePath, []byte("console=ttyS0 root=PARTLABEL=rootfs_"+d.Slot+" sysupdate.slot="+d.Slot+"\n"), 0o644); err != nil {
		return err
	}
	how := "saves nothing"
	if len(saved) > 0 {
		how = "saves " + strings.Join(saved, " ")
	}
	if d.Fallback {
		how += ", no slot qualified: fallback"
	}
	fmt.Printf("GRUB boots slot %s (%s)\n", d.Slot, how)
	return nil
}
