package bootloaders

import (
	"errors"
	"strings"
	"testing"
)

func TestCheckSlot(t *testing.T) {
	names := []string{"a", "b"}
	for _, ok := range names {
		if err := CheckSlot(ok, names); err != nil {
			t.Errorf("CheckSlot(%q): %v", ok, err)
		}
	}
	for _, bad := range []string{"", "c", "A", "a "} {
		err := CheckSlot(bad, names)
		if !errors.Is(err, ErrUnknownSlot) || !strings.Contains(err.Error(), "[a b]") {
			t.Errorf("CheckSlot(%q) = %v, want ErrUnknownSlot naming the slots", bad, err)
		}
	}
}
