# Build, test and release openstack-vm-exporter.
#   make build    static binary with version information
#   make test     the whole test suite (scripts/test.sh, as CI runs it)
#   make fuzz     every fuzz harness, FUZZTIME each (scripts/fuzz.sh)
#   make cross    linux/amd64 and linux/arm64 binaries and SHA256SUMS in dist/
#                 (reproducible: rebuild the same commit and compare the sums)
BINARY   := openstack-vm-exporter
VERSION  ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo unknown)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
BRANCH   ?= $(shell git rev-parse --abbrev-ref HEAD 2>/dev/null || echo unknown)
VERSION_PKG := github.com/prometheus/common/version
# Reproducible: the same commit builds the same bytes, whoever builds it and
# whenever. The build date is the commit's (or SOURCE_DATE_EPOCH's, as
# reproducible-builds.org defines it); no build user or host; no VCS stamp
# (-buildvcs=false: the revision is in the ldflags already, and what git
# reports depends on the builder's git and its configuration).
SOURCE_DATE_EPOCH ?= $(shell git log -1 --format=%ct 2>/dev/null || echo 0)
BUILD_DATE := $(shell date -u -d @$(SOURCE_DATE_EPOCH) +%Y%m%d-%H:%M:%S)
LDFLAGS  := -s -w \
	-X $(VERSION_PKG).Version=$(VERSION) \
	-X $(VERSION_PKG).Revision=$(REVISION) \
	-X $(VERSION_PKG).Branch=$(BRANCH) \
	-X $(VERSION_PKG).BuildUser=make \
	-X $(VERSION_PKG).BuildDate=$(BUILD_DATE)
GOFLAGS_BUILD := -trimpath -tags netgo,osusergo -buildvcs=false
# The Go that builds releases (see scripts/goenv.sh for why).
GOTOOLCHAIN ?= go1.27.3
export GOTOOLCHAIN

.PHONY: build test fuzz cross clean
build:
	CGO_ENABLED=0 go build $(GOFLAGS_BUILD) -ldflags "$(LDFLAGS)" -o $(BINARY) .

test:
	./scripts/test.sh

fuzz:
	./scripts/fuzz.sh

cross:
	mkdir -p dist
	for arch in amd64 arm64; do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch go build $(GOFLAGS_BUILD) -ldflags "$(LDFLAGS)" \
			-o dist/$(BINARY)-$(VERSION).linux-$$arch . || exit 1; \
	done
	cd dist && sha256sum $(BINARY)-$(VERSION).linux-* > SHA256SUMS

clean:
	rm -rf $(BINARY) dist
