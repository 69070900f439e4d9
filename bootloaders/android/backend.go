package android

import (
	"bytes"
	"errors"
	"fmt"
	"os"

	"github.com/sysupdate/sysupdate/bootloaders"
)

// Config says where the misc partition is and how to find the running slot.
type Config struct {
	// Path is the misc partition (a block device or an image file).
	Path string
	// SlotSuffix is the running slot's suffix ("_a".."_d"), from
	// androidboot.slot_suffix= on the kernel command line (the caller
	// parses it: partition.CmdlineSlot). Empty means unknown.
	SlotSuffix string
	// DefaultSlots is nb_slot for the default block written over a corrupt
	// one (AOSP uses the number of slots the device has); 0 means 2.
	DefaultSlots int
}

// Backend drives bootloader_control with AOSP's boot_control HAL
// semantics. Every state change is one 32-byte write at Offset followed by
// an fsync; the block sits inside one 512-byte sector. It implements
// bootloaders.Backend.
type Backend struct {
	cfg Config
}

var _ bootloaders.Backend = (*Backend)(nil)

// New checks cfg and returns a Backend. It does not touch the partition.
func New(cfg Config) (*Backend, error) {
	if cfg.Path == "" {
		return nil, errors.New("android: no misc partition path given")
	}
	if cfg.SlotSuffix != "" {
		if _, err := SuffixSlot(cfg.SlotSuffix); err != nil {
			return nil, err
		}
	}
	if cfg.DefaultSlots == 0 {
		cfg.DefaultSlots = 2
	}
	if cfg.DefaultSlots < 1 || cfg.DefaultSlots > MaxSlots {
		return nil, fmt.Errorf("android: %d default slots, want 1..%d", cfg.DefaultSlots, MaxSlots)
	}
	return &Backend{cfg: cfg}, nil
}

// Current returns the running slot's index from the configured suffix,
// or -1 if it names none.
func (b *Backend) Current() int {
	i, err := SuffixSlot(b.cfg.SlotSuffix)
	if err != nil {
		return -1
	}
	return i
}

func (b *Backend) read() (Control, error) {
	f, err := os.Open(b.cfg.Path)
	if err != nil {
		return Control{}, fmt.Errorf("open misc partition: %w", err)
	}
	defer f.Close()
	return ReadAt(f, b.cfg.Path)
}

// Status reads the block and reports the slots, the slot U-Boot's rule
// picks next and whether a trial failed. A block with a bad CRC is an error
// wrapping ErrCorrupt (it is not silently replaced by a default).
func (b *Backend) Status() (bootloaders.Status, error) {
	c, err := b.read()
	if err != nil {
		return bootloaders.Status{}, err
	}
	return status(c, b.Current()), nil
}

func nbSlots(c Control) int { return int(min(c.NbSlot, MaxSlots)) }

func status(c Control, current int) bootloaders.Status {
	_, next, _ := Select(c)
	st := bootloaders.Status{Scheme: "aosp"}
	if next >= 0 {
		st.Next = SlotName(next)
	}
	for i := 0; i < nbSlots(c); i++ {
		s := c.Slots[i]
		st.Slots = append(st.Slots, bootloaders.Slot{
			Name:       SlotName(i),
			Bootable:   !s.VerityCorrupted && s.TriesRemaining > 0,
			Successful: s.Successful && s.TriesRemaining > 0,
			TriesLeft:  int(s.TriesRemaining),
			Priority:   int(s.Priority),
		})
		// A slot preferred over the one booting next, never confirmed and
		// out of tries, that is not running its last try right now: its
		// trial failed. MarkBad zeroes the priority, so it does not count.
		outranks := next < 0 || s.Priority > c.Slots[next].Priority
		if !st.TrialFailed && i != current && i != next && s.Priority > 0 && !s.Successful && s.TriesRemaining == 0 && outranks {
			st.TrialFailed, st.FailedSlot = true, SlotName(i)
		}
	}
	return st
}

// update loads the block (replacing a corrupt one by AOSP's default, as the
// HAL does), applies edit and writes the result back in one write + fsync.
func (b *Backend) update(slot string, edit func(c *Control, i, current int) error) error {
	f, err := os.OpenFile(b.cfg.Path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("open misc partition for writing: %w", err)
	}
	defer f.Close()
	current := b.Current()
	c, err := ReadAt(f, b.cfg.Path)
	var raw [Size]byte
	old := c.Encode()
	if errors.Is(err, ErrCorrupt) {
		cur := max(current, 0)
		n := max(b.cfg.DefaultSlots, cur+1)
		c = AOSPDefault(n, cur)
		old = raw // force the write
	} else if err != nil {
		return fmt.Errorf("%w; refusing to overwrite a block the bootloader would not accept", err)
	}
	names := make([]string, nbSlots(c))
	for i := range names {
		names[i] = SlotName(i)
	}
	if err := bootloaders.CheckSlot(slot, names); err != nil {
		return err
	}
	if err := edit(&c, int(slot[0]-'a'), current); err != nil {
		return err
	}
	if nb := c.Encode(); bytes.Equal(nb[:], old[:]) {
		return nil // already in this state; spare the flash a write
	}
	if err := WriteAt(f, b.cfg.Path, c); err != nil {
		return err
	}
	if err := f.Sync(); err != nil {
		return fmt.Errorf("fsync %s: %w", b.cfg.Path, err)
	}
	return f.Close()
}

// SetNext makes slot the active slot for the next boot as update_engine
// does after writing it (setSlotAsUnbootable then setActiveBootSlot, in one
// write): any other slot at priority 15 drops to 14; slot gets priority 15,
// tries (AOSP uses 6; at most 7), successful cleared, and verity_corrupted
// cleared unless it is the running slot.
func (b *Backend) SetNext(slot string, tries int) error {
	if tries <= 0 {
		tries = bootloaders.DefaultTries
	}
	if tries > 7 {
		return fmt.Errorf("android: %d tries requested, tries_remaining holds at most 7", tries)
	}
	return b.update(slot, func(c *Control, i, current int) error {
		for j := range c.Slots {
			if j != i && c.Slots[j].Priority >= 15 {
				c.Slots[j].Priority = 14
			}
		}
		s := &c.Slots[i]
		s.Priority, s.TriesRemaining, s.Successful = 15, uint8(tries), false
		if i != current {
			s.VerityCorrupted = false
		}
		return nil
	})
}

// MarkGood is AOSP's markBootSuccessful: successful_boot=1 and
// tries_remaining=1 (so U-Boot, which needs tries > 0, keeps booting it).
// Only the running slot can confirm itself; if the running slot is unknown
// (no androidboot.slot_suffix) slot is trusted.
func (b *Backend) MarkGood(slot string) error {
	return b.update(slot, func(c *Control, i, current int) error {
		if current >= 0 && current != i {
			return fmt.Errorf("mark-good %s: the running slot is %s (androidboot.slot_suffix); only it can confirm itself", slot, SlotName(current))
		}
		c.Slots[i].Successful, c.Slots[i].TriesRemaining = true, 1
		return nil
	})
}

// MarkBad is AOSP's setSlotAsUnbootable (successful_boot=0,
// tries_remaining=0) and also sets the priority to 0, so that Status can
// tell a rejected slot from a failed trial. U-Boot skips it from the next
// boot on.
func (b *Backend) MarkBad(slot string) error {
	return b.update(slot, func(c *Control, i, _ int) error {
		c.Slots[i].Successful, c.Slots[i].TriesRemaining, c.Slots[i].Priority = false, 0, 0
		return nil
	})
}
