package uboot

import (
	"fmt"
	"strconv"

	"github.com/sysupdate/sysupdate/bootloaders"
)

// Variables of Mender's scheme (U-Boot CONFIG_BOOTCOUNT_ENV plus Mender's
// integration).
const (
	varMenderPart    = "mender_boot_part"
	varMenderPartHex = "mender_boot_part_hex"
	varUpgrade       = "upgrade_available"
	varBootcount     = "bootcount"
	varBootlimit     = "bootlimit"
)

type mender struct{ partA, partB int }

func (mender) name() string { return SchemeMender }

// decValue parses a number the way U-Boot's env_get_ulong(name, 10, 0)
// does: leading decimal digits; nothing parsable is 0.
func decValue(s string) uint64 {
	var v uint64
	for i := 0; i < len(s) && s[i] >= '0' && s[i] <= '9'; i++ {
		v = v*10 + uint64(s[i]-'0')
	}
	return v
}

func (m mender) part(slot string) int {
	if slot == "a" {
		return m.partA
	}
	return m.partB
}

func other(slot string) string {
	if slot == "a" {
		return "b"
	}
	return "a"
}

// menderView is the Mender state as U-Boot reads it.
type menderView struct {
	current              string // slot of mender_boot_part
	upgrade              bool
	bootcount, bootlimit uint64
}

func (m mender) view(e Env) (menderView, error) {
	p, ok := e.Get(varMenderPart)
	var v menderView
	switch {
	case ok && p == strconv.Itoa(m.partA):
		v.current = "a"
	case ok && p == strconv.Itoa(m.partB):
		v.current = "b"
	default:
		return v, fmt.Errorf("uboot: %s=%q (set: %v) is neither %d (slot a) nor %d (slot b): the environment is not a Mender one; use --uboot-scheme rauc, or set-next a slot to initialise it", varMenderPart, p, ok, m.partA, m.partB)
	}
	ua, _ := e.Get(varUpgrade)
	bc, _ := e.Get(varBootcount)
	bl, _ := e.Get(varBootlimit)
	v.upgrade = decValue(ua) != 0
	v.bootcount, v.bootlimit = decValue(bc), decValue(bl)
	return v, nil
}

// next applies U-Boot's rule for the next boot: bootcount+1 when an
// upgrade is pending, altbootcmd (switch to the other slot) when it
// exceeds a non-zero bootlimit.
func (v menderView) next() string {
	var count uint64 = 1
	if v.upgrade {
		count = v.bootcount + 1
	}
	if v.bootlimit > 0 && count > v.bootlimit {
		return other(v.current)
	}
	return v.current
}

func (m mender) status(e Env) (bootloaders.Status, error) {
	v, err := m.view(e)
	if err != nil {
		return bootloaders.Status{}, err
	}
	st := bootloaders.Status{Scheme: SchemeMender, Next: v.next()}
	for _, name := range Slots {
		sl := bootloaders.Slot{Name: name}
		switch {
		case name == v.current:
			sl.Bootable = true
			sl.Priority = 2
			sl.Successful = !v.upgrade
			if v.upgrade && v.bootlimit > v.bootcount {
				sl.TriesLeft = int(min(v.bootlimit-v.bootcount, 1<<20))
			}
		case v.upgrade:
			// altbootcmd falls back to the other slot.
			sl.Bootable = true
			sl.Priority = 1
			sl.Successful = true
		}
		st.Slots = append(st.Slots, sl)
	}
	switch {
	case !v.upgrade && v.bootlimit > 0 && v.bootcount > v.bootlimit:
		// altbootcmd ran: it cleared upgrade_available and switched back.
		st.TrialFailed, st.FailedSlot = true, other(v.current)
	case v.upgrade && v.bootlimit > 0 && v.bootcount > v.bootlimit:
		// Counted past the limit but altbootcmd's save did not happen yet.
		st.TrialFailed, st.FailedSlot = true, v.current
	}
	return st, nil
}

func (m mender) setNext(e *Env, slot string, tries int) error {
	p := m.part(slot)
	e.Set(varMenderPart, strconv.Itoa(p))
	e.Set(varMenderPartHex, strconv.FormatInt(int64(p), 16))
	e.Set(varUpgrade, "1")
	e.Set(varBootcount, "0")
	e.Set(varBootlimit, strconv.Itoa(tries))
	return nil
}

func (m mender) markGood(e *Env, slot string) error {
	v, err := m.view(*e)
	if err != nil {
		return err
	}
	if v.current != slot {
		return fmt.Errorf("uboot: cannot mark slot %s good: %s=%d boots slot %s; mark-good is for the running slot (after a fallback, set-next %s to try it again)", slot, varMenderPart, m.part(v.current), v.current, slot)
	}
	e.Set(varUpgrade, "0")
	e.Set(varBootcount, "0")
	return nil
}

func (m mender) markBad(e *Env, slot string) error {
	v, err := m.view(*e)
	if err != nil {
		return err
	}
	if slot != v.current {
		if v.upgrade {
			return fmt.Errorf("uboot: cannot mark slot %s bad: it is the fallback of the trial of slot %s and Mender's scheme has no per-slot flag; mark-good or mark-bad slot %s instead", slot, v.current, v.current)
		}
		return nil // the bootloader never picks it already
	}
	p := m.part(other(slot))
	e.Set(varMenderPart, strconv.Itoa(p))
	e.Set(varMenderPartHex, strconv.FormatInt(int64(p), 16))
	e.Set(varUpgrade, "0")
	e.Set(varBootcount, "0")
	return nil
}
