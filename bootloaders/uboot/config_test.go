package uboot

import (
	"errors"
	"strings"
	"testing"
)

func TestParseConfig(t *testing.T) {
	for _, tc := range []struct {
		name string
		text string
		want []Location
	}{
		{"single", "/dev/mtd1 0x0 0x20000\n", []Location{{Device: "/dev/mtd1", Size: 0x20000}}},
		{"hex size without 0x, comments, blank lines, no final newline",
			"# comment\n\n  \n/boot/uboot.env 0 4000",
			[]Location{{Device: "/boot/uboot.env", Size: 0x4000}}},
		{"a comment after the columns is not a comment", "/boot/uboot.env 0 4000 # note\n", nil},
		{"redundant with sectors", "/dev/mtd1 0x0 0x10000 0x10000 1\n/dev/mtd2\t0x0\t0x10000 0x10000 0x2",
			[]Location{{"/dev/mtd1", 0, 0x10000, 0x10000, 1}, {"/dev/mtd2", 0, 0x10000, 0x10000, 2}}},
		{"decimal, octal, negative", "/dev/mmcblk0 4194304 0x4000\n/dev/mmcblk0 -0x4000 0x4000\n",
			[]Location{{Device: "/dev/mmcblk0", Offset: 4194304, Size: 0x4000}, {Device: "/dev/mmcblk0", Offset: -0x4000, Size: 0x4000}}},
		{"octal offset", "/f 010 20\n", []Location{{Device: "/f", Offset: 8, Size: 0x20}}},
		{"crlf", "/f 0 20\r\n", []Location{{Device: "/f", Size: 0x20}}},
	} {
		locs, err := ParseConfig(strings.NewReader(tc.text), "fw_env.config")
		if tc.want == nil {
			if err == nil {
				t.Errorf("%s: parsed %v, want an error", tc.name, locs)
			}
			continue
		}
		if err != nil {
			t.Errorf("%s: %v", tc.name, err)
			continue
		}
		if len(locs) != len(tc.want) {
			t.Errorf("%s: got %v, want %v", tc.name, locs, tc.want)
			continue
		}
		for i := range locs {
			if locs[i] != tc.want[i] {
				t.Errorf("%s: line %d: got %+v, want %+v", tc.name, i, locs[i], tc.want[i])
			}
		}
	}
}

func TestParseConfigErrors(t *testing.T) {
	for _, tc := range []struct {
		text   string
		line   int
		offset int64
		want   string
	}{
		{"", 0, 0, "no environment line"},
		{"# only a comment\n", 0, 17, "no environment line"},
		{"/f 0\n", 1, 0, "at least 3 columns"},
		{"# c\n/f zz 20\n", 2, 4, `offset "zz"`},
		{"/f 0 0x1g\n", 1, 0, "always hex"},
		{"/f 0 -20\n", 1, 0, "always hex"},
		{"/f 0 8\n", 1, 0, "out of range"},
		{"/f 0 20 x\n", 1, 0, "sector size"},
		{"/f 0 20 10 y\n", 1, 0, "number of sectors"},
		{"/f 0 20 1 1 1\n", 1, 0, "at most 5 columns"},
		{"/f 0 20\n/f 0x20 40\n", 2, 8, "same size"},
		{"/f 0 20\n/f 0x10 20\n", 2, 8, "overlaps"},
		{"/f 0 20\n/g 0 20\n/h 0 20\n", 3, 16, "third"},
		{"/f 0 20 1_0\n", 1, 0, "sector size"},
		{"/f 0x 20\n", 1, 0, "offset"},
	} {
		_, err := ParseConfig(strings.NewReader(tc.text), "/etc/fw_env.config")
		var ce *ConfigError
		if !errors.As(err, &ce) || !errors.Is(err, ErrConfig) {
			t.Errorf("%q: err = %v, want *ConfigError", tc.text, err)
			continue
		}
		if ce.Line != tc.line || ce.Offset != tc.offset || !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), "/etc/fw_env.config") {
			t.Errorf("%q: err = %v (line %d, offset %d), want %q at line %d offset %d", tc.text, err, ce.Line, ce.Offset, tc.want, tc.line, tc.offset)
		}
	}
}

func FuzzParseConfig(f *testing.F) {
	for _, s := range []string{
		"/dev/mtd1 0x0 0x20000\n/dev/mtd1 0x20000 0x20000 0x20000 1\n",
		"# c\n/boot/uboot.env 0 4000\n",
		"/dev/mmcblk0 -0x4000 0x4000\n",
		"/f 010 20 10 2\n",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		locs, err := ParseConfig(strings.NewReader(s), "fw_env.config")
		if err != nil {
			var ce *ConfigError
			if !errors.As(err, &ce) || ce.Reason == "" || ce.Offset < 0 || ce.Offset > int64(len(s)) {
				t.Fatalf("error %v does not say where and what", err)
			}
			return
		}
		if len(locs) < 1 || len(locs) > 2 {
			t.Fatalf("%d locations", len(locs))
		}
		for _, l := range locs {
			if l.Device == "" || l.Size < 16 || l.Size > maxEnvSize || l.SectorSize < 0 || l.Sectors < 0 {
				t.Fatalf("invalid location accepted: %+v", l)
			}
		}
		if len(locs) == 2 && locs[0].Size != locs[1].Size {
			t.Fatalf("sizes differ: %+v", locs)
		}
	})
}
