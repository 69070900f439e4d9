# sysupdate: A/B system updater. See README.md.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO ?= go
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
# The device binary is built by scripts/build-device.sh (no HTTP/2, inlining
# off in the standard library's cold parts); so are the .debs and the
# size test in cmd/sysupdate/deps_test.go.
FUZZTIME ?= 5s

.PHONY: all build deps test test-go test-qemu fuzz fuzz-short bench bench-peers bench-fleet lint demo deb deb-check clean initramfs

all: build

## build: the static binaries (CGO_ENABLED=0): bin/sysupdate for devices,
## bin/sysupdate-publish for the build host (keys, streams, releases, serve).
build:
	LDFLAGS="-s -w -X main.version=$(VERSION)" scripts/build-device.sh bin/sysupdate
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o bin/sysupdate-publish ./cmd/sysupdate-publish
	@ls -l bin/sysupdate bin/sysupdate-publish | awk '{print "built " $$NF ": " $$5 " bytes"}'

## deps: Debian packages the tests use as oracles, peers and QEMU.
deps:
	@scripts/install-deps.sh

## test: everything CI runs: unit, oracle, torn-write, fuzz (short), QEMU tests.
test: deps build
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	cd recovery && $(GO) vet ./... && $(GO) test -count=1 ./...
	$(MAKE) fuzz-short
	$(MAKE) deb-check
	$(MAKE) test-qemu

## test-qemu: the QEMU scenarios; the root package runs in go test's local
## directory mode (no package argument) so that the power-cut table its
## TestMain prints is shown without -v.
test-qemu: build
	cd qemu-tests && $(GO) vet ./... && $(GO) test -count=1 -timeout 30m ./internal/... && $(GO) test -count=1 -timeout 30m

## fuzz-short: every fuzz target for FUZZTIME (default 5s); `make fuzz` runs longer.
fuzz-short:
	@FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

fuzz:
	@FUZZTIME=2m scripts/fuzz.sh

## bench: the benchmark table on the public pair (built once under /var/cache/sysupdate-bench).
bench: deps build
	bench/run.sh
	bench/update.sh

## bench-peers: RAUC, SWUpdate and Mender (from Debian) beside dd and sysupdate,
## installing the public pair's image into a loop-device slot.
bench-peers: deps build
	bench/peers.sh

## bench-fleet: FLEET_DEVICES (1,000) devices at once against sysupdate-publish serve,
## then against nginx with docs/serving.md's config over https (as documented) and
## over plain http (like serve) (bench/fleet; the table in docs/serving.md).
FLEET_DEVICES ?= 1000
bench-fleet: deps build
	$(GO) run ./bench/fleet -server serve -devices $(FLEET_DEVICES)
	$(GO) run ./bench/fleet -server nginx -devices $(FLEET_DEVICES) -header=false
	$(GO) run ./bench/fleet -server nginx -tls=false -devices $(FLEET_DEVICES) -header=false

## lint: formatting, vet, staticcheck.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd qemu-tests && $(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

## initramfs: the u-root recovery initramfs for amd64 and arm64,
## bin/recovery-ARCH.cpio.gz (recovery/, a build-only module). Add the
## device's files with RECOVERY_FILES=host/sysupdate.conf:etc/sysupdate/sysupdate.conf,...
RECOVERY_ARCHES ?= amd64 arm64
initramfs:
	@mkdir -p bin
	@for arch in $(RECOVERY_ARCHES); do \
	  (cd recovery && $(GO) run ./cmd/mkrecovery -arch $$arch -o ../bin/recovery-$$arch.cpio $(if $(RECOVERY_FILES),-files $(RECOVERY_FILES))) || exit 1; \
	  gzip -9nf bin/recovery-$$arch.cpio; \
	  ls -l bin/recovery-$$arch.cpio.gz | awk '{print "built " $$NF ": " $$5 " bytes"}'; \
	done

## demo: a disk image with A/B slots and a local repository, updated end to end.
demo: deps build
	scripts/demo.sh

## deb: dist/out/sysupdate_VERSION_ARCH.deb and sysupdate-publish_VERSION_ARCH.deb for DEB_ARCHES (scripts/deb.sh).
DEB_ARCHES ?= amd64 arm64 armhf
deb:
	scripts/deb.sh $(VERSION) $(DEB_ARCHES)

## deb-check: lintian, unpack into a scratch root, systemd-analyze verify --root.
deb-check: deps deb
	scripts/deb-check.sh $$(for a in $(DEB_ARCHES); do ls -t dist/out/sysupdate_*_$$a.deb | head -1; ls -t dist/out/sysupdate-publish_*_$$a.deb | head -1; done)

clean:
	rm -rf bin dist/out
