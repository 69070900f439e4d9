package main

import (
	"reflect"
	"strings"
	"testing"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    map[string]string
		wantErr string
	}{
		{"version=1\nhealthy=yes\n", map[string]string{"version": "1", "healthy": "yes"}, ""},
		{"\n  version=3 \n\nhealthy=no", map[string]string{"version": "3", "healthy": "no"}, ""},
		{"", map[string]string{}, ""},
		{"k=a=b\n", map[string]string{"k": "a=b"}, ""},
		{"version=1\nbroken\n", nil, "v line 2 \"broken\": want key=value"},
		{"=1\n", nil, "v line 1"},
		{"a=1\na=2\n", nil, "v line 2: a given twice"},
	} {
		got, err := parseVersion("v", []byte(tc.in))
		if tc.wantErr != "" {
			if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Errorf("parseVersion(%q) error %v, want %q", tc.in, err, tc.wantErr)
			}
			continue
		}
		if err != nil || !reflect.DeepEqual(got, tc.want) {
			t.Errorf("parseVersion(%q) = %v, %v; want %v", tc.in, got, err, tc.want)
		}
	}
}

func TestRunningSlot(t *testing.T) {
	for in, want := range map[string]string{
		"console=ttyS0 sysupdate.slot=b panic=-1":                 "b",
		"console=ttyAMA0 androidboot.slot_suffix=_a":              "a",
		"rauc.slot=A sysupdate.slot=a":                            "a",
		"quiet":                                                   "",
		"androidboot.slot_suffix=b":                               "",
		"sysupdate.slot=a androidboot.slot_suffix=_b (last wins)": "b",
	} {
		if got := runningSlot(in); got != want {
			t.Errorf("runningSlot(%q) = %q, want %q", in, got, want)
		}
	}
}

func FuzzParseVersion(f *testing.F) {
	f.Add([]byte("version=1\nhealthy=yes\n"))
	f.Add([]byte("a\n=b\n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		m, err := parseVersion("fuzz", b)
		if err != nil {
			return
		}
		for k, v := range m {
			if k == "" || strings.ContainsAny(k, "=\n") || strings.Contains(v, "\n") {
				t.Fatalf("entry %q=%q from %q", k, v, b)
			}
		}
	})
}
