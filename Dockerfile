# syntax=docker/dockerfile:1
# Multi-stage build of openstack-vm-exporter: a static binary with version
# information, in a minimal image that runs as a non-root user and needs only
# CAP_NET_RAW (file capability on the binary) to send ICMP.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t openstack-vm-exporter .
#   docker run --cap-add NET_RAW -p 9735:9735 -e OS_CLOUD=mycloud \
#     -v /etc/openstack:/etc/openstack:ro openstack-vm-exporter

ARG GO_VERSION=1.27

FROM golang:${GO_VERSION}-bookworm AS build
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY . .
ARG VERSION=unknown
ARG REVISION=unknown
ARG BRANCH=unknown
# The same build line as `make build` (the Makefile's LDFLAGS); CI builds
# the binary with exactly this line (deploy/deploy_test.go keeps them in step).
RUN CGO_ENABLED=0 go build -trimpath -tags netgo,osusergo -buildvcs=false -ldflags "-s -w -X github.com/prometheus/common/version.Version=${VERSION} -X github.com/prometheus/common/version.Revision=${REVISION} -X github.com/prometheus/common/version.Branch=${BRANCH} -X github.com/prometheus/common/version.BuildUser=docker -X github.com/prometheus/common/version.BuildDate=unknown" -o /out/openstack-vm-exporter .
# The raw ICMP socket needs CAP_NET_RAW; as a file capability the non-root
# user gets it without any other privilege (run with --cap-add NET_RAW where
# the runtime drops it by default).
RUN apt-get update && apt-get install -y --no-install-recommends libcap2-bin \
    && setcap cap_net_raw+ep /out/openstack-vm-exporter

FROM gcr.io/distroless/static-debian12:nonroot
COPY --from=build /out/openstack-vm-exporter /usr/local/bin/openstack-vm-exporter
COPY config.example.yaml /etc/openstack-vm-exporter/config.yaml
USER 65532:65532
EXPOSE 9735
# /-/healthy answers as soon as the process serves; /-/ready once the first
# inventory refresh succeeded (use it for readiness, not liveness).
ENTRYPOINT ["/usr/local/bin/openstack-vm-exporter"]
CMD ["--config.file=/etc/openstack-vm-exporter/config.yaml", "--web.listen-address=:9735"]
