#!/usr/bin/env bash
# Builds the device binary as it ships: static, stripped, without HTTP/2,
# and with inlining turned off in the parts of the standard library off
# the hot path (the CLI, TLS set-up, JSON, flag parsing, OpenPGP's big
# numbers...) and in the OpenPGP libraries (go-crypto and circl: a few
# signatures per update), which saves about 0.45 MiB. Inlining stays on in the runtime
# and in what every byte of an update goes through: I/O, hashing,
# byte-order helpers, sync and math, and in every non-standard package
# (the decoders). The Makefile, scripts/deb.sh and the size test
# (cmd/sysupdate/deps_test.go) all build through here.
#
#   scripts/build-device.sh OUT [TAG...]
#
# GOOS/GOARCH/GOARM come from the environment; LDFLAGS defaults to "-s -w"
# (set it empty for a binary with a symbol table).
set -euo pipefail
cd "$(dirname "$0")/.."
out=${1:?usage: build-device.sh OUT [TAG...]}
shift
tags=nethttpomithttp2
for t in "$@"; do tags=$tags,$t; done
gcflags=(-gcflags=std=-l -gcflags=github.com/ProtonMail/go-crypto/...=-l -gcflags=github.com/cloudflare/circl/...=-l)
for p in runtime/... internal/... encoding/binary bytes io bufio os syscall \
  crypto/sha256 crypto/internal/fips140/sha256 crypto/internal/fips140deps/... \
  hash/... sync/... math/...; do
  gcflags+=("-gcflags=$p=")
done
exec env CGO_ENABLED=0 "${GO:-go}" build -tags "$tags" -trimpath "${gcflags[@]}" -ldflags "${LDFLAGS--s -w}" -o "$out" ./cmd/sysupdate
