package daemon

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSettingsFile(t *testing.T) {
	dir := t.TempDir()
	p := filepath.Join(dir, "s.json")
	for _, tc := range []struct {
		name, content, err string
	}{
		{"not json", "auto_download=1", "fix or remove it"},
		{"wrong type", `{"auto_download": 1}`, "fix or remove it"},
		{"too big", `{"min_battery": "` + strings.Repeat("1", maxSettingsFile) + `"}`, "more than"},
	} {
		os.WriteFile(p, []byte(tc.content), 0o644)
		if _, err := loadSettings(p); err == nil || !strings.Contains(err.Error(), tc.err) {
			t.Errorf("%s: %v, want %q", tc.name, err, tc.err)
		}
	}
	// Unknown keys are dropped, known ones kept.
	os.WriteFile(p, []byte(`{"auto_download": "2", "colour": "red"}`), 0o644)
	s, err := loadSettings(p)
	if err != nil || s.get("auto_download") != "2" || s.get("colour") != "" || s.get("failures_before_warning") != "3" {
		t.Fatalf("%+v, %v", s.m, err)
	}
	// A failed save changes nothing.
	s.path = filepath.Join(dir, "missing-dir", "s.json")
	if _, err := s.set("min_battery", "10"); err == nil || s.get("min_battery") != "" {
		t.Errorf("set with an unwritable file: %v, value %q", err, s.get("min_battery"))
	}
	for _, bad := range [][2]string{{"auto_download", "-1"}, {"auto_download", "on"}, {"min_battery", "101"}, {"failures_before_warning", "-2"}, {"channel", "x"}} {
		if validSetting(bad[0], bad[1]) == nil {
			t.Errorf("%s=%s accepted", bad[0], bad[1])
		}
	}
}

// FuzzLoadSettings: any file content gives settings or an error, never a
// panic, and only known keys survive.
func FuzzLoadSettings(f *testing.F) {
	f.Add([]byte(`{"auto_download": "0", "min_battery": "20"}`))
	f.Add([]byte(`{}`))
	f.Add([]byte(`[1,2]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		p := filepath.Join(t.TempDir(), "s.json")
		os.WriteFile(p, b, 0o644)
		s, err := loadSettings(p)
		if err != nil {
			return
		}
		for k := range s.m {
			if _, ok := settingDefaults[k]; !ok {
				t.Fatalf("unknown key %q kept", k)
			}
		}
	})
}
