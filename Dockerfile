# rds-csi image: both binaries, static, and the five filesystem tools the agent
# runs (kernel/command.Allowed) with the shared libraries they link, on an
# empty base. Nothing else: no shell, no package manager, no nvme-cli (the
# agent writes /dev/nvme-fabrics itself), no mount binary (mount(2) directly).
#
#   docker build --build-arg VERSION=$(git describe --tags --always --dirty) \
#                --build-arg COMMIT=$(git rev-parse --short HEAD) -t rds-csi .
#
# test/packaging checks this file against the tree: what it copies exists after
# `make build`, the binaries are static, and TOOLS and TOOL_PACKAGES match the
# tools the code runs.

ARG GO_VERSION=1.26.8
ARG DEBIAN_RELEASE=trixie

# --- build: the Makefile's own build, so the -ldflags stamp is the same ---
FROM golang:${GO_VERSION}-${DEBIAN_RELEASE} AS build
ARG VERSION=dev
ARG COMMIT=unknown
WORKDIR /src
COPY go.mod go.sum ./
RUN go mod download
COPY Makefile ./
COPY cmd ./cmd
COPY agent ./agent
COPY internal ./internal
COPY controller ./controller
COPY kernel ./kernel
COPY kube ./kube
COPY rpc ./rpc
COPY volume ./volume
RUN make build BINARIES="rds-csi-controller rds-csi-agent" VERSION="${VERSION}" COMMIT="${COMMIT}"

# --- tools: the agent's tools and exactly the libraries they load ---
FROM debian:${DEBIAN_RELEASE}-slim AS tools
# TOOLS must equal kernel/command.Allowed(); TOOL_PACKAGES are the Debian
# packages that ship them.
ARG TOOLS="blkid mkfs.ext4 mkfs.xfs resize2fs xfs_growfs"
ARG TOOL_PACKAGES="e2fsprogs util-linux xfsprogs"
RUN apt-get update \
 && apt-get install -y --no-install-recommends ${TOOL_PACKAGES} \
 && rm -rf /var/lib/apt/lists/*
# Copy each tool and every library ldd names (and the dynamic loader) into
# /rootfs, keeping their paths, plus mke2fs.conf and /etc/mtab (the tools
# check whether a device is mounted); then run each tool there
# (127 is the loader's "cannot load a library").
RUN set -eu; mkdir -p /rootfs/usr/sbin /rootfs/tmp; chmod 1777 /rootfs/tmp; \
    for t in ${TOOLS}; do \
      p="$(command -v "$t")"; cp -L "$p" "/rootfs/usr/sbin/$t"; \
      for lib in $(ldd "$p" | grep -o '/[^ ]*'); do \
        mkdir -p "/rootfs$(dirname "$lib")"; cp -L "$lib" "/rootfs$lib"; \
      done; \
    done; \
    mkdir -p /rootfs/etc; cp /etc/mke2fs.conf /rootfs/etc/; ln -s ../proc/self/mounts /rootfs/etc/mtab; \
    for t in ${TOOLS}; do \
      rc=0; chroot /rootfs "/usr/sbin/$t" -V >/dev/null 2>&1 || rc=$?; \
      [ "$rc" -ne 127 ] || { echo "$t cannot load its libraries in /rootfs" >&2; exit 1; }; \
    done

# --- runtime ---
FROM scratch
ARG VERSION=dev
ARG COMMIT=unknown
LABEL org.opencontainers.image.title="rds-csi" \
      org.opencontainers.image.description="CSI driver for MikroTik ROSE Data Server NVMe/TCP storage" \
      org.opencontainers.image.version="${VERSION}" \
      org.opencontainers.image.revision="${COMMIT}"
COPY --from=tools /rootfs/ /
COPY --from=build /src/bin/rds-csi-controller /usr/bin/rds-csi-controller
COPY --from=build /src/bin/rds-csi-agent /usr/bin/rds-csi-agent
ENV PATH=/usr/sbin:/usr/bin
# The Deployment and the DaemonSet choose the binary (command:).
ENTRYPOINT ["/usr/bin/rds-csi-controller"]
