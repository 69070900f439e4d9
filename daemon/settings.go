package daemon

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"sync"

	"github.com/sysupdate/sysupdate/atomicfile"
)

// settingDefaults are system-image's settings and their defaults.
var settingDefaults = map[string]string{
	"auto_download":           "1",
	"failures_before_warning": "3",
	"min_battery":             "",
	// channel is the channel SetChannel chose ("" = the configured one).
	"channel": "",
	// last_check_date is when the last check ended (Information).
	"last_check_date": "",
}

// maxSettingsFile bounds what loadSettings reads.
const maxSettingsFile = 64 << 10

// settings are system-image's key/value settings, persisted as a JSON
// object replaced atomically on every change.
type settings struct {
	path string
	mu   sync.Mutex
	m    map[string]string
}

func loadSettings(path string) (*settings, error) {
	s := &settings{path: path, m: map[string]string{}}
	if path == "" {
		return s, nil
	}
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return s, nil
	}
	if err != nil {
		return nil, fmt.Errorf("daemon: settings: %w", err)
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("daemon: settings: %w", err)
	}
	if st.Size() > maxSettingsFile {
		return nil, fmt.Errorf("daemon: settings %s is %d bytes, more than %d: remove it (the defaults apply)", path, st.Size(), maxSettingsFile)
	}
	if err := json.NewDecoder(f).Decode(&s.m); err != nil {
		return nil, fmt.Errorf("daemon: settings %s: %w: fix or remove it (the defaults apply)", path, err)
	}
	for k := range s.m {
		if _, ok := settingDefaults[k]; !ok {
			delete(s.m, k)
		}
	}
	return s, nil
}

// get returns a setting or its default.
func (s *settings) get(key string) string {
	s.mu.Lock()
	defer s.mu.Unlock()
	if v, ok := s.m[key]; ok {
		return v
	}
	return settingDefaults[key]
}

// validSetting checks a value as system-image does.
func validSetting(key, value string) error {
	if _, ok := settingDefaults[key]; !ok || key == "channel" || key == "last_check_date" {
		return fmt.Errorf("unknown setting %q: sysupdate knows auto_download, failures_before_warning and min_battery", key)
	}
	n, err := strconv.Atoi(value)
	switch key {
	case "auto_download":
		if err != nil || n < 0 || n > 2 {
			return fmt.Errorf("auto_download must be 0 (never), 1 (on wifi) or 2 (always), got %q", value)
		}
	case "min_battery":
		if err != nil || n < 0 || n > 100 {
			return fmt.Errorf("min_battery must be a percentage 0-100, got %q", value)
		}
	case "failures_before_warning":
		if err != nil || n < 0 {
			return fmt.Errorf("failures_before_warning must be a count >= 0, got %q", value)
		}
	}
	return nil
}

// set stores a setting and persists the file; it reports whether the
// value changed. Nothing changes when the file cannot be written.
func (s *settings) set(key, value string) (bool, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	old, had := s.m[key]
	if !had {
		old = settingDefaults[key]
	}
	if old == value && had {
		return false, nil
	}
	s.m[key] = value
	if s.path != "" {
		b, err := json.MarshalIndent(s.m, "", "  ")
		if err == nil {
			err = atomicfile.WriteFile(s.path, append(b, '\n'), 0o644)
		}
		if err != nil {
			if had {
				s.m[key] = old
			} else {
				delete(s.m, key)
			}
			return false, fmt.Errorf("daemon: save settings: %w", err)
		}
	}
	return old != value, nil
}
