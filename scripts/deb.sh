#!/usr/bin/env bash
# Builds dist/out/sysupdate_VERSION_ARCH.deb and
# dist/out/sysupdate-publish_VERSION_ARCH.deb for each Debian ARCH given
# (amd64, arm64, armhf): the static device binary, its man pages (from the
# binary's own help text), the systemd units, the D-Bus activation files and
# policy, and a commented default configuration.
#   scripts/deb.sh VERSION ARCH...
set -euo pipefail
cd "$(dirname "$0")/.."
version=$1
shift
# A Debian version starts with a digit; git describe may give a bare hash.
# No "-": a Debian revision would make lintian ask for a Debian changelog.
debversion=$(printf '%s' "${version#v}" | tr -c 'A-Za-z0-9.+~\n' '+')
case $debversion in [0-9]*) ;; *) debversion="0~git.$debversion" ;; esac
out=dist/out
mkdir -p "$out"
export SOURCE_DATE_EPOCH=${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}
ldflags="-s -w -X main.version=$version"

work=$(mktemp -d)
trap 'rm -rf "$work"' EXIT
# Man pages come from a host build: the text is the same on every arch.
LDFLAGS=$ldflags scripts/build-device.sh "$work/host-sysupdate"
scripts/manpages.sh "$work/host-sysupdate" "$work/man" "$version"
CGO_ENABLED=0 go build -trimpath -ldflags "$ldflags" -o "$work/host-sysupdate-publish" ./cmd/sysupdate-publish
scripts/manpages.sh "$work/host-sysupdate-publish" "$work/man-publish" "$version" sysupdate-publish

for arch in "$@"; do
  case $arch in
    amd64) goenv=(GOARCH=amd64) ;;
    arm64) goenv=(GOARCH=arm64) ;;
    armhf) goenv=(GOARCH=arm GOARM=7) ;;
    *) echo "deb: unknown architecture $arch: use amd64, arm64 or armhf" >&2; exit 2 ;;
  esac
  root=$work/root-$arch
  install -d "$root/DEBIAN" "$root/usr/bin" "$root/lib/systemd/system" \
    "$root/usr/share/dbus-1/system.d" "$root/usr/share/dbus-1/system-services" \
    "$root/etc/sysupdate" "$root/etc/default" "$root/usr/share/man/man1" "$root/usr/share/doc/sysupdate" \
    "$root/usr/share/lintian/overrides"
  env GOOS=linux "${goenv[@]}" LDFLAGS="$ldflags" scripts/build-device.sh "$root/usr/bin/sysupdate"
  install -m 0644 dist/systemd/*.service dist/systemd/*.timer "$root/lib/systemd/system/"
  install -m 0644 dist/dbus/sysupdate.conf "$root/usr/share/dbus-1/system.d/"
  install -m 0644 dist/dbus/system-services/*.service "$root/usr/share/dbus-1/system-services/"
  install -m 0644 dist/etc/sysupdate.conf "$root/etc/sysupdate/sysupdate.conf"
  install -m 0644 dist/etc/default-sysupdate "$root/etc/default/sysupdate"
  for m in "$work"/man/*.1; do gzip -9n <"$m" >"$root/usr/share/man/man1/$(basename "$m").gz"; done
  install -m 0644 dist/debian/copyright "$root/usr/share/doc/sysupdate/copyright"
  install -m 0644 dist/debian/lintian-overrides "$root/usr/share/lintian/overrides/sysupdate"
  for d in README.md docs/*.md; do gzip -9n <"$d" >"$root/usr/share/doc/sysupdate/$(basename "$d").gz"; done
  printf 'sysupdate (%s) unstable; urgency=medium\n\n  * Built from git %s by scripts/deb.sh.\n\n -- sysupdate developers <sysupdate@example.org>  %s\n' \
    "$debversion" "$version" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")" | gzip -9n >"$root/usr/share/doc/sysupdate/changelog.gz"
  install -m 0755 dist/debian/postinst dist/debian/prerm dist/debian/postrm "$root/DEBIAN/"
  printf '/etc/sysupdate/sysupdate.conf\n/etc/default/sysupdate\n' >"$root/DEBIAN/conffiles"
  size=$(du -sk --exclude=DEBIAN "$root" | cut -f1)
  sed -e "s/@VERSION@/$debversion/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" dist/debian/control.in >"$root/DEBIAN/control"
  (cd "$root" && find . -path ./DEBIAN -prune -o -path ./etc -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$root/DEBIAN/md5sums"
  find "$root" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  deb=$out/sysupdate_${debversion}_${arch}.deb
  dpkg-deb --root-owner-group -Zxz --build "$root" "$deb" >/dev/null
  echo "deb: $deb ($(stat -c %s "$deb") bytes; binary $(stat -c %s "$root/usr/bin/sysupdate") bytes)"

  # The publisher: its binary, its man pages, no units.
  proot=$work/publish-$arch
  install -d "$proot/DEBIAN" "$proot/usr/bin" "$proot/usr/share/man/man1" "$proot/usr/share/doc/sysupdate-publish" "$proot/usr/share/lintian/overrides"
  env CGO_ENABLED=0 GOOS=linux "${goenv[@]}" go build -trimpath -ldflags "$ldflags" -o "$proot/usr/bin/sysupdate-publish" ./cmd/sysupdate-publish
  for m in "$work"/man-publish/*.1; do gzip -9n <"$m" >"$proot/usr/share/man/man1/$(basename "$m").gz"; done
  install -m 0644 dist/debian/copyright "$proot/usr/share/doc/sysupdate-publish/copyright"
  sed 's/^sysupdate: statically-linked-binary \[usr\/bin\/sysupdate\]/sysupdate-publish: statically-linked-binary [usr\/bin\/sysupdate-publish]/' dist/debian/lintian-overrides >"$proot/usr/share/lintian/overrides/sysupdate-publish"
  for d in docs/repository.md docs/security.md docs/serving.md docs/stream-format.md; do gzip -9n <"$d" >"$proot/usr/share/doc/sysupdate-publish/$(basename "$d").gz"; done
  printf 'sysupdate-publish (%s) unstable; urgency=medium\n\n  * Built from git %s by scripts/deb.sh.\n\n -- sysupdate developers <sysupdate@example.org>  %s\n' \
    "$debversion" "$version" "$(date -u -R -d "@$SOURCE_DATE_EPOCH")" | gzip -9n >"$proot/usr/share/doc/sysupdate-publish/changelog.gz"
  size=$(du -sk --exclude=DEBIAN "$proot" | cut -f1)
  sed -e "s/@VERSION@/$debversion/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" dist/debian/control-publish.in >"$proot/DEBIAN/control"
  (cd "$proot" && find . -path ./DEBIAN -prune -o -type f -printf '%P\0' | sort -z | xargs -0 md5sum) >"$proot/DEBIAN/md5sums"
  find "$proot" -exec touch -h -d "@$SOURCE_DATE_EPOCH" {} +
  pdeb=$out/sysupdate-publish_${debversion}_${arch}.deb
  dpkg-deb --root-owner-group -Zxz --build "$proot" "$pdeb" >/dev/null
  echo "deb: $pdeb ($(stat -c %s "$pdeb") bytes)"
done
