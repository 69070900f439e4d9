# sysupdate: A/B system updater. See README.md.
SHELL := /bin/bash
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
GO ?= go
GOFLAGS_BUILD := -trimpath -ldflags "-s -w -X main.version=$(VERSION)"
BIN := bin/sysupdate
FUZZTIME ?= 5s

.PHONY: all build deps test test-go test-qemu fuzz fuzz-short bench lint demo deb deb-check clean

all: build

## build: the static device binary, bin/sysupdate (CGO_ENABLED=0).
build:
	CGO_ENABLED=0 $(GO) build $(GOFLAGS_BUILD) -o $(BIN) ./cmd/sysupdate
	@ls -l $(BIN) | awk '{print "built " $$NF ": " $$5 " bytes"}'

## deps: Debian packages the tests use as oracles, peers and QEMU.
deps:
	@scripts/install-deps.sh

## test: everything CI runs: unit, oracle, torn-write, fuzz (short), QEMU tests.
test: deps build
	$(GO) vet ./...
	$(GO) test -count=1 ./...
	$(MAKE) fuzz-short
	$(MAKE) deb-check
	$(MAKE) test-qemu

test-qemu: build
	cd qemu-tests && $(GO) vet ./... && $(GO) test -count=1 -timeout 20m ./...

## fuzz-short: every fuzz target for FUZZTIME (default 5s); `make fuzz` runs longer.
fuzz-short:
	@FUZZTIME=$(FUZZTIME) scripts/fuzz.sh

fuzz:
	@FUZZTIME=2m scripts/fuzz.sh

## bench: the benchmark table on the public pair (builds it once under .cache/).
bench: deps build
	bench/run.sh

## lint: formatting, vet, staticcheck.
lint:
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed:"; echo "$$out"; exit 1; fi
	$(GO) vet ./...
	cd qemu-tests && $(GO) vet ./...
	$(GO) run honnef.co/go/tools/cmd/staticcheck@v0.8.2 ./...

## demo: a disk image with A/B slots and a local repository, updated end to end.
demo: deps build
	scripts/demo.sh

## deb: dist/out/sysupdate_VERSION_ARCH.deb for DEB_ARCHES (scripts/deb.sh).
DEB_ARCHES ?= amd64 arm64 armhf
deb:
	scripts/deb.sh $(VERSION) $(DEB_ARCHES)

## deb-check: lintian, unpack into a scratch root, systemd-analyze verify --root.
deb-check: deps deb
	scripts/deb-check.sh $$(for a in $(DEB_ARCHES); do ls -t dist/out/sysupdate_*_$$a.deb | head -1; done)

clean:
	rm -rf bin dist/out
