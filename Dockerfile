# syntax=docker/dockerfile:1
# Multi-stage build of openstack-vm-exporter: a static binary with version
# information, in a minimal image that runs as a non-root user and needs only
# CAP_NET_RAW (file capability on the binary) to send ICMP.
#
#   docker build --build-arg VERSION=$(git describe --tags --always) -t openstack-vm-exporter .
#   docker run --cap-add NET_RAW -p 9735:9735 -e OS_CLOUD=mycloud \
#     -v /etc/openstack:/etc/openstack:ro openstack-vm-exporter
#
# Probing tenant networks from the Neutron namespaces (probe.icmp.vantage
# auto, ovn-metadata or dhcp) also needs CAP_SYS_ADMIN to enter them, the
# host's network and its /run/netns with slave propagation (namespaces the
# agents create later must appear inside), and root in the container: the
# file capability below can only carry cap_net_raw (one the runtime does not
# grant would make exec fail), and a non-root user gets no other capability:
#   docker run --network host --user 0 --cap-drop ALL --cap-add NET_RAW --cap-add SYS_ADMIN \
#     --mount type=bind,src=/run/netns,dst=/run/netns,readonly,bind-propagation=rslave \
#     -e OS_CLOUD=mycloud -v /etc/openstack:/etc/openstack:ro openstack-vm-exporter
# Without them the exporter runs on, says at start what it lacks, and those
# addresses are unprobed (openstack_vm_probe_unprobed_addresses{reason="no_privilege"}).

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
