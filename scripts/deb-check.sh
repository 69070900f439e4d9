#!/usr/bin/env bash
# Checks .deb files from scripts/deb.sh: lintian reports no error (its
# warnings are printed), the package unpacks into a scratch root, every
# unit in it passes systemd-analyze verify there (with the host's systemd
# units and busctl beside it, as on a device), every man page a unit
# names is in the package, and dbus-daemon accepts the policy and the
# activation files.
#   scripts/deb-check.sh DEB...
set -euo pipefail
for t in lintian dpkg-deb systemd-analyze dbus-daemon; do
  command -v "$t" >/dev/null || { echo "deb-check: $t missing: run make deps" >&2; exit 1; }
done
for deb in "$@"; do
  echo "deb-check: $deb"
  # lintian exits non-zero on errors; warnings are listed, not fatal.
  rc=0
  tags=$(lintian --tag-display-limit 0 --fail-on error "$deb" 2>&1) || rc=$?
  printf '%s\n' "$tags" | grep -v -e 'running with root privileges' -e '^$' || true
  [ "$rc" = 0 ] || { echo "deb-check: lintian found errors in $deb" >&2; exit 1; }
  root=$(mktemp -d)
  trap 'rm -rf "$root"' EXIT
  dpkg-deb -x "$deb" "$root"
  units=()
  for u in $(dpkg-deb -c "$deb" | awk '{print $NF}' | grep -E '^\./lib/systemd/system/.*\.(service|timer)$'); do
    units+=("${u#./}")
  done
  case $(basename "$deb") in
    sysupdate-publish_*)
      # The publisher: a binary and its man pages, no units or D-Bus files.
      [ ${#units[@]} -eq 0 ] && [ -x "$root/usr/bin/sysupdate-publish" ] && [ -f "$root/usr/share/man/man1/sysupdate-publish.1.gz" ] ||
        { echo "deb-check: $deb lacks its binary or man page, or carries units" >&2; exit 1; }
      echo "deb-check: $deb: lintian clean of errors, binary and man pages present"
      rm -rf "$root"; trap - EXIT
      continue ;;
  esac
  # What a device has besides the package: systemd's units and busctl.
  mkdir -p "$root/usr/bin"
  cp -an /lib/systemd/system/. "$root/lib/systemd/system/"
  cp -a /usr/bin/busctl "$root/usr/bin/"
  [ ${#units[@]} -ge 4 ] || { echo "deb-check: only ${#units[@]} units in $deb" >&2; exit 1; }
  # The binary may be for another architecture: verify checks that the
  # ExecStart paths exist and are executable, not that they run.
  (cd "$root" && SYSTEMD_LOG_LEVEL=notice systemd-analyze verify --root="$root" --man=no "${units[@]}")
  for u in "${units[@]}"; do
    for m in $(sed -n 's/^Documentation=//p' "$root/$u" | tr ' ' '\n' | sed -n 's/^man:\(.*\)(\([0-9]\))$/\1.\2/p'); do
      [ -f "$root/usr/share/man/man${m##*.}/$m.gz" ] || { echo "deb-check: $u documents man:$m, not in the package" >&2; exit 1; }
    done
  done
  for s in "$root"/usr/share/dbus-1/system-services/*.service; do
    name=$(sed -n 's/^Name=//p' "$s")
    [ "$(basename "$s" .service)" = "$name" ] || { echo "deb-check: $s is not named after its bus name $name" >&2; exit 1; }
    exec=$(sed -n 's/^Exec=\([^ ]*\).*/\1/p' "$s")
    [ -x "$root$exec" ] || { echo "deb-check: $s runs $exec, not in the package" >&2; exit 1; }
    unit=$(sed -n 's/^SystemdService=//p' "$s")
    [ -f "$root/lib/systemd/system/$unit" ] || { echo "deb-check: $s activates $unit, not in the package" >&2; exit 1; }
  done
  # dbus-daemon parses the policy (a syntax error makes it refuse to start).
  cat >"$root/bus.conf" <<EOC
<!DOCTYPE busconfig PUBLIC "-//freedesktop//DTD D-Bus Bus Configuration 1.0//EN" "http://www.freedesktop.org/standards/dbus/1.0/busconfig.dtd">
<busconfig><type>system</type><listen>unix:path=$root/bus</listen><auth>EXTERNAL</auth>
<servicedir>$root/usr/share/dbus-1/system-services</servicedir>
<includedir>$root/usr/share/dbus-1/system.d</includedir></busconfig>
EOC
  timeout 5 dbus-daemon --config-file="$root/bus.conf" --print-address --fork --print-pid >"$root/bus.out" 2>"$root/bus.err" ||
    { echo "deb-check: dbus-daemon refused the package's D-Bus files:" >&2; cat "$root/bus.err" >&2; exit 1; }
  kill "$(sed -n 2p "$root/bus.out")"
  echo "deb-check: $deb: lintian clean of errors, units verified, D-Bus files accepted"
  rm -rf "$root"
  trap - EXIT
done
