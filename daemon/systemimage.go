package daemon

import (
	"context"
	"errors"
	"math"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/godbus/dbus/v5"
)

// system-image's names: UBports' current one and Canonical's original,
// the same object and interface under both.
const (
	SystemImageName       = "com.ubports.SystemImage"
	SystemImageLegacyName = "com.canonical.SystemImage"
	SystemImagePath       = dbus.ObjectPath("/Service")
)

// dateLayout is how system-image writes dates.
const dateLayout = "2006-01-02 15:04:05"

// systemImage serves com.ubports.SystemImage and com.canonical.SystemImage.
type systemImage struct {
	d    *Daemon
	conn *dbus.Conn

	mu          sync.Mutex
	failures    int
	paused      bool
	lastPercent int
	downloaded  bool
}

func (s *systemImage) iface(name string) *iface {
	return &iface{
		name: name,
		methods: []method{
			{name: "CheckForUpdate", fn: s.checkForUpdate},
			{name: "DownloadUpdate", fn: s.downloadUpdate},
			{name: "PauseDownload", out: []arg{{"message", "s"}}, fn: s.pauseDownload},
			{name: "CancelUpdate", out: []arg{{"message", "s"}}, fn: s.cancelUpdate},
			{name: "ApplyUpdate", out: []arg{{"message", "s"}}, fn: s.applyUpdate},
			{name: "ForceAllowGSMDownload", out: []arg{{"message", "s"}}, fn: s.forceAllowGSMDownload},
			{name: "Information", out: []arg{{"info", "a{ss}"}}, fn: s.information},
			{name: "GetSetting", in: []arg{{"key", "s"}}, out: []arg{{"value", "s"}}, fn: s.getSetting},
			{name: "SetSetting", in: []arg{{"key", "s"}, {"value", "s"}}, fn: s.setSetting},
			{name: "GetChannels", out: []arg{{"channels", "as"}}, fn: s.getChannels},
			{name: "GetChannel", out: []arg{{"channel", "s"}}, fn: s.getChannel},
			{name: "SetChannel", in: []arg{{"channel", "s"}}, out: []arg{{"ok", "b"}}, fn: s.setChannel},
			{name: "GetBuild", out: []arg{{"build", "i"}}, fn: s.getBuild},
			{name: "SetBuild", in: []arg{{"build", "i"}}, fn: s.setBuild},
			{name: "FactoryReset", fn: s.notSupported("FactoryReset")},
			{name: "ProductionReset", fn: s.notSupported("ProductionReset")},
			{name: "Reboot", fn: s.reboot},
			{name: "Exit", fn: s.exit},
		},
		signals: []signal{
			{name: "UpdateAvailableStatus", args: []arg{{"is_available", "b"}, {"downloading", "b"}, {"available_version", "s"}, {"update_size", "i"}, {"last_update_date", "s"}, {"error_reason", "s"}}},
			{name: "DownloadStarted"},
			{name: "UpdateProgress", args: []arg{{"percentage", "i"}, {"eta", "d"}}},
			{name: "UpdatePaused", args: []arg{{"percentage", "i"}}},
			{name: "UpdateDownloaded"},
			{name: "UpdateFailed", args: []arg{{"consecutive_failure_count", "i"}, {"last_reason", "s"}}},
			{name: "SettingChanged", args: []arg{{"key", "s"}, {"new_value", "s"}}},
			{name: "Applied", args: []arg{{"status", "b"}}},
			{name: "Rebooting", args: []arg{{"status", "b"}}},
		},
	}
}

func (d *Daemon) exportSystemImage(conn *dbus.Conn, st *Status) (*systemImage, error) {
	s := &systemImage{d: d, conn: conn, downloaded: st.Staged != nil}
	if err := export(conn, SystemImagePath, nil, s.iface(SystemImageName), s.iface(SystemImageLegacyName)); err != nil {
		return nil, err
	}
	d.addListener(s)
	return s, nil
}

// emit sends a signal under both interface names.
func (s *systemImage) emit(name string, args ...any) {
	for _, i := range []string{SystemImageName, SystemImageLegacyName} {
		if err := s.conn.Emit(SystemImagePath, i+"."+name, args...); err != nil {
			s.d.cfg.Logf("daemon: emit %s: %v", name, err)
		}
	}
}

func (s *systemImage) autoDownload() bool {
	a := s.d.settings.get("auto_download")
	return a == "1" || a == "2"
}

func (s *systemImage) lastUpdateDate() string {
	st, err := s.d.eng.Status(s.d.base)
	if err != nil || st.LastUpdate.IsZero() {
		return "Unknown"
	}
	return st.LastUpdate.UTC().Format(dateLayout)
}

// checkForUpdate starts a check; UpdateAvailableStatus answers it. With
// auto_download 1 or 2 an available update is downloaded (staged) next.
func (s *systemImage) checkForUpdate() *dbus.Error {
	err := s.d.start(s.d.checkStep(BySystemImage, func(r Result) *step {
		if r.Check == nil || r.Check.Available == nil || !s.autoDownload() {
			return nil
		}
		return s.d.installStep(BySystemImage, "", true)
	}))
	if err == nil {
		return nil
	}
	if cur := s.d.Current(); cur != nil && cur.By != ByRAUC && (cur.Kind == KindCheck || cur.Kind == KindDownload) {
		// A check or download of ours runs: its answer comes, as
		// system-image does; repeat the last status meanwhile.
		if c, _ := s.d.lastCheckResult(); c != nil && cur.Kind == KindDownload {
			s.sendStatus(c, true, "")
		}
		return nil
	}
	// Something else runs (an install from RAUC): the UI learns why
	// through the signal, the caller through the error.
	c, _ := s.d.lastCheckResult()
	s.sendStatus(c, false, err.Error())
	return dbusError(err)
}

func (s *systemImage) sendStatus(c *CheckResult, downloading bool, reason string) {
	avail, version, size := false, "", int32(0)
	if c != nil && c.Available != nil {
		avail, version = true, strconv.FormatUint(c.Available.Version, 10)
		size = int32(min(c.Size, math.MaxInt32))
	}
	s.emit("UpdateAvailableStatus", avail, downloading, version, size, s.lastUpdateDate(), reason)
}

// downloadUpdate stages the available update (or resumes a paused
// download); UpdateProgress, then UpdateDownloaded or UpdateFailed.
func (s *systemImage) downloadUpdate() *dbus.Error {
	if cur := s.d.Current(); cur != nil && cur.Kind == KindDownload {
		return nil // already downloading
	}
	err := s.d.start(s.d.installStep(BySystemImage, "", true))
	if err != nil {
		s.mu.Lock()
		n := s.failures
		s.mu.Unlock()
		s.emit("UpdateFailed", int32(n), err.Error())
		return dbusError(err)
	}
	return nil
}

func (s *systemImage) pauseDownload() (string, *dbus.Error) {
	if s.d.cancelCurrent(errPaused, KindDownload) == nil {
		return "not downloading", nil
	}
	s.d.wait(s.d.cfg.StopTimeout)
	return "", nil
}

func (s *systemImage) cancelUpdate() (string, *dbus.Error) {
	op := s.d.cancelCurrent(errCanceled, KindDownload, KindCheck)
	if op != nil {
		s.d.wait(s.d.cfg.StopTimeout)
		return "", nil
	}
	s.mu.Lock()
	wasPaused := s.paused
	s.paused = false
	if wasPaused {
		s.failures++
	}
	n := s.failures
	s.mu.Unlock()
	if wasPaused {
		s.emit("UpdateFailed", int32(n), errCanceled.Error())
	}
	return "", nil
}

// applyUpdate switches to the staged slot (or keeps an install already
// switched to) and reboots: Applied, then Rebooting.
func (s *systemImage) applyUpdate() (string, *dbus.Error) {
	st, err := s.d.eng.Status(s.d.base)
	if err != nil {
		s.emit("Applied", false)
		return "", dbusError(err)
	}
	switch {
	case st.Staged != nil:
		err = s.d.runSync(&Op{Kind: KindActivate, By: BySystemImage}, s.d.eng.Activate)
	case st.Next != "" && st.Booted != "" && st.Next != st.Booted:
		// Installed and switched already (policy install, or RAUC).
	default:
		err = errors.New("no update is downloaded: call DownloadUpdate first")
	}
	if err != nil {
		s.emit("Applied", false)
		return "", dbusError(err)
	}
	s.mu.Lock()
	s.downloaded = false
	s.mu.Unlock()
	s.emit("Applied", true)
	s.startReboot()
	return "", nil
}

func (s *systemImage) startReboot() {
	if s.d.cfg.Reboot == nil {
		s.d.cfg.Logf("daemon: no reboot command configured; reboot by hand")
		s.emit("Rebooting", false)
		return
	}
	s.emit("Rebooting", true)
	go func() {
		// Let the reply and the signals leave first.
		time.Sleep(200 * time.Millisecond)
		if err := s.d.cfg.Reboot(); err != nil {
			s.d.cfg.Logf("daemon: reboot: %v", err)
			s.emit("Rebooting", false)
		}
	}()
}

// forceAllowGSMDownload: sysupdate does not tell metered networks from
// others, so there is nothing to allow.
func (s *systemImage) forceAllowGSMDownload() (string, *dbus.Error) {
	return "", nil
}

func (s *systemImage) information() (map[string]string, *dbus.Error) {
	st, err := s.d.eng.Status(s.d.base)
	if err != nil {
		return nil, dbusError(err)
	}
	cur := strconv.FormatUint(st.Installed.Version, 10)
	info := map[string]string{
		"current_build_number":  cur,
		"target_build_number":   "-1",
		"device_name":           st.Model,
		"channel_name":          st.Channel,
		"last_update_date":      s.lastUpdateDate(),
		"version_detail":        versionDetail(st.Installed),
		"last_check_date":       s.d.settings.get("last_check_date"),
		"target_version_detail": "",
	}
	if c, _ := s.d.lastCheckResult(); c != nil {
		info["target_build_number"] = cur
		info["target_version_detail"] = versionDetail(st.Installed)
		if c.Available != nil {
			info["target_build_number"] = strconv.FormatUint(c.Available.Version, 10)
			info["target_version_detail"] = versionDetail(*c.Available)
		}
	}
	return info, nil
}

// versionDetail is system-image's "key=value,..." detail.
func versionDetail(r Release) string {
	v := "sysupdate=" + strconv.FormatUint(r.Version, 10)
	if r.Label != "" {
		v += ",label=" + r.Label
	}
	return v
}

func (s *systemImage) getSetting(key string) (string, *dbus.Error) {
	if _, ok := settingDefaults[key]; !ok || key == "channel" {
		return "", nil // system-image answers "" for keys it does not know
	}
	return s.d.settings.get(key), nil
}

func (s *systemImage) setSetting(key, value string) *dbus.Error {
	if err := validSetting(key, value); err != nil {
		return invalidArgs("%v", err)
	}
	changed, err := s.d.settings.set(key, value)
	if err != nil {
		return dbusError(err)
	}
	if changed {
		s.emit("SettingChanged", key, value)
	}
	return nil
}

func (s *systemImage) channels(st *Status) []string {
	cs := slices.Clone(s.d.cfg.Channels)
	if st.Channel != "" && !slices.Contains(cs, st.Channel) {
		cs = append([]string{st.Channel}, cs...)
	}
	return cs
}

func (s *systemImage) getChannels() ([]string, *dbus.Error) {
	st, err := s.d.eng.Status(s.d.base)
	if err != nil {
		return nil, dbusError(err)
	}
	return s.channels(st), nil
}

func (s *systemImage) getChannel() (string, *dbus.Error) {
	st, err := s.d.eng.Status(s.d.base)
	if err != nil {
		return "", dbusError(err)
	}
	return st.Channel, nil
}

// setChannel follows another of the offered channels; false when the
// channel is not offered or the engine cannot switch.
func (s *systemImage) setChannel(ch string) (bool, *dbus.Error) {
	st, err := s.d.eng.Status(s.d.base)
	if err != nil {
		return false, dbusError(err)
	}
	cs, ok := s.d.eng.(ChannelSetter)
	if !ok || !slices.Contains(s.channels(st), ch) {
		return false, nil
	}
	err = s.d.runSync(&Op{Kind: KindMark, By: BySystemImage, Source: "channel " + ch}, func(context.Context) error {
		return cs.SetChannel(ch)
	})
	if err != nil {
		return false, dbusError(err)
	}
	if _, err := s.d.settings.set("channel", ch); err != nil {
		return false, dbusError(err)
	}
	s.d.mu.Lock()
	s.d.lastCheck = nil
	s.d.mu.Unlock()
	return true, nil
}

func (s *systemImage) getBuild() (int32, *dbus.Error) {
	st, err := s.d.eng.Status(s.d.base)
	if err != nil {
		return 0, dbusError(err)
	}
	return int32(min(st.Installed.Version, math.MaxInt32)), nil
}

func (s *systemImage) setBuild(int32) *dbus.Error {
	return dbus.NewError(ErrNameNotSupported, []any{"sysupdate's installed version is what the running slot confirmed; it cannot be set by hand (install a version with --version or rauc install instead)"})
}

func (s *systemImage) notSupported(name string) func() *dbus.Error {
	return func() *dbus.Error {
		return dbus.NewError(ErrNameNotSupported, []any{name + " has no equivalent in sysupdate: it updates slots, not user data"})
	}
}

func (s *systemImage) reboot() *dbus.Error {
	s.startReboot()
	return nil
}

func (s *systemImage) exit() *dbus.Error {
	s.d.requestExit()
	return nil
}

// The listener.

func (s *systemImage) started(op *Op) {
	if op.Kind == KindCheck && op.By == BySystemImage {
		// As system-image: a new check starts a new count of failures.
		s.mu.Lock()
		s.failures = 0
		s.mu.Unlock()
	}
	if op.Kind != KindDownload {
		return
	}
	s.mu.Lock()
	s.paused, s.lastPercent = false, 0
	s.mu.Unlock()
	s.emit("DownloadStarted")
	s.emit("UpdateProgress", int32(0), float64(0))
}

func (s *systemImage) event(op *Op, e Event) {
	if op.Kind != KindDownload || e.Type != "progress" {
		return
	}
	s.mu.Lock()
	pct := op.Percent
	same := pct == s.lastPercent
	s.lastPercent = pct
	s.mu.Unlock()
	if !same {
		s.emit("UpdateProgress", int32(pct), e.ETA.Seconds())
	}
}

func (s *systemImage) finished(op *Op, r Result) {
	switch op.Kind {
	case KindCheck:
		now := time.Now().UTC().Format(dateLayout)
		if _, err := s.d.settings.set("last_check_date", now); err != nil {
			s.d.cfg.Logf("daemon: %v", err)
		}
		reason := ""
		if r.Err != nil {
			reason = r.Err.Error()
		}
		s.sendStatus(r.Check, op.Next != "", reason)
	case KindDownload:
		s.mu.Lock()
		var sig string
		var args []any
		switch {
		case r.Err == nil:
			s.failures, s.downloaded = 0, true
			sig = "UpdateDownloaded"
			if s.lastPercent < 100 {
				// A staged install ends before the switch phase: the
				// download itself is complete.
				s.lastPercent = 100
				s.mu.Unlock()
				s.emit("UpdateProgress", int32(100), float64(0))
				s.mu.Lock()
			}
		case errors.Is(r.Err, errPaused):
			s.paused = true
			sig, args = "UpdatePaused", []any{int32(s.lastPercent)}
		case errors.Is(r.Err, errCanceled):
			s.failures++
			sig, args = "UpdateFailed", []any{int32(s.failures), errCanceled.Error()}
		default:
			s.failures++
			sig, args = "UpdateFailed", []any{int32(s.failures), r.Err.Error()}
		}
		s.mu.Unlock()
		s.emit(sig, args...)
	case KindInstall:
		if r.Err != nil {
			return
		}
	}
}
