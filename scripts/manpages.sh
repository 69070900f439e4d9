#!/usr/bin/env bash
# Writes one man page per command, sysupdate(1) and sysupdate-COMMAND(1),
# from the binary's own --help and 'COMMAND -h' text, so the pages never
# drift from what the binary says.
#   scripts/manpages.sh BIN OUTDIR VERSION [NAME]
# NAME is the command's name (default sysupdate; sysupdate-publish for the
# publisher).
# BIN must run on this machine (the host build): the pages are the same for
# every architecture.
set -euo pipefail
bin=$1 out=$2 version=$3 name=${4:-sysupdate}
NAME=${name^^}
mkdir -p "$out"
date=$(date -u -d "@${SOURCE_DATE_EPOCH:-$(git log -1 --format=%ct 2>/dev/null || date +%s)}" +%Y-%m-%d)

# esc escapes text for roff: backslashes, and a leading . or ' on a line.
esc() { sed -e 's/\\/\\e/g' -e "s/^\\([.']\\)/\\\\\\&\\1/" -e 's/-/\\-/g'; }

# flags turns PrintDefaults output into .TP entries, escaping as esc does.
flags() {
  awk '
    function e(s) { gsub(/\\/, "\\e", s); gsub(/-/, "\\-", s); sub(/^[.\x27]/, "\\\\&&", s); return s }
    /^  -/ { sub(/^  /, ""); n = index($0, " "); if (n) { f = substr($0, 1, n-1); a = substr($0, n+1) } else { f = $0; a = "" }
             print ".TP"; if (a != "") print "\\fB" e(f) "\\fR \\fI" e(a) "\\fR"; else print "\\fB" e(f) "\\fR"; next }
    /^    \t/ { sub(/^    \t/, ""); print e($0); next }
    { print e($0) }'
}

commands=$("$bin" --help 2>&1 | awk '/^commands:/ {on=1; next} on && /^  [a-z]/ {print $1}' | grep -v '^version$')
{
  echo ".TH $NAME 1 \"$date\" \"sysupdate $version\" \"sysupdate manual\""
  echo ".SH NAME"
  if [ "$name" = sysupdate ]; then echo "sysupdate \\- A/B system updater"; else echo "$name \\- the publisher side of the sysupdate A/B updater"; fi
  echo ".SH SYNOPSIS"
  echo ".B $name"
  echo ".I COMMAND"
  echo "[flags] [args]"
  echo ".SH COMMANDS"
  "$bin" --help 2>&1 | awk -v n="$name" '/^commands:/ {on=1; next} on && /^  [a-z]/ {c=$1; $1=""; sub(/^ +/, ""); print ".TP\n.BR " n "\\-" c " (1)\n" $0}'
  echo ".SH SEE ALSO"
  for c in $commands; do printf '.BR %s\\-%s (1),\n' "$name" "$c"; done
  echo "/usr/share/doc/$name/"
} >"$out/$name.1"

for c in $commands; do
  summary=$("$bin" --help 2>&1 | awk -v c="$c" '$1 == c {$1=""; sub(/^ +/, ""); print}')
  help=$("$bin" "$c" -h 2>&1 || true)
  synopsis=$(printf '%s\n' "$help" | awk '/^usage: / {sub(/^usage: /, ""); print; getline; while ($0 ~ /^    [^\t ]/) {sub(/^ +/, ""); print; if ((getline) <= 0) break}; exit}')
  {
    echo ".TH $NAME-${c^^} 1 \"$date\" \"sysupdate $version\" \"sysupdate manual\""
    echo ".SH NAME"
    printf '%s\\-%s \\- %s\n' "$name" "$c" "$(printf '%s' "$summary" | esc)"
    echo ".SH SYNOPSIS"
    echo ".nf"
    printf '%s\n' "$synopsis" | esc
    echo ".fi"
    echo ".SH OPTIONS"
    printf '%s\n' "$help" | awk 'f; /^  -/ && !f {f=1; print}' | flags
    echo ".SH SEE ALSO"
    echo ".BR $name (1)"
  } >"$out/$name-$c.1"
done
echo "manpages: $(ls "$out" | wc -l) pages in $out" >&2
