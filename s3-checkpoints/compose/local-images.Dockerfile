# Local equivalents of the official minio/minio and minio/mc images, built only when `docker pull` of the
# pinned official images fails (a machine without a container registry). Same server software: MinIO at the
# commit the native path builds (scripts/build-minio.sh) and mc at the commit of the pinned mc release,
# compiled from source with `go install`. Each final image reproduces only what compose relies on:
#   minio: entrypoint `minio`, /usr/bin/minio and /usr/bin/mc (healthcheck `mc ready local`), /data, root;
#   mc:    entrypoint `mc`, /usr/bin/mc, a POSIX shell at /bin/sh, CA certificates, root.
# The official images are minimal (ubi-micro): no sed, grep or awk, so neither are these.
#   docker build -f compose/local-images.Dockerfile --target minio|mc --secret id=build_ca,src=<CA file> .
# The build_ca secret is only for machines behind a TLS-intercepting proxy; it never ends up in an image.

FROM debian:bookworm-slim AS go
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      ca-certificates curl unzip && rm -rf /var/lib/apt/lists/*
# The Go toolchain as the Go module proxy serves it to `go` itself (module golang.org/toolchain).
ARG GO_VERSION=1.26.8
RUN --mount=type=secret,id=build_ca \
    set -eu; ca=""; if [ -s /run/secrets/build_ca ]; then ca="--cacert /run/secrets/build_ca"; fi; \
    mod="v0.0.1-go${GO_VERSION}.linux-$(dpkg --print-architecture)"; \
    curl -fsS $ca -o /tmp/go.zip "https://proxy.golang.org/golang.org/toolchain/@v/${mod}.zip"; \
    unzip -q /tmp/go.zip -d /tmp/go; mv "/tmp/go/golang.org/toolchain@${mod}" /usr/local/go; rm -rf /tmp/go /tmp/go.zip
ENV PATH=/usr/local/go/bin:$PATH CGO_ENABLED=0 GOTOOLCHAIN=local GOBIN=/out GOFLAGS=-p=2

FROM go AS minio-build
ARG MINIO_GO_VERSION=v0.0.0-20250907161309-07c3a429bfed
RUN --mount=type=secret,id=build_ca \
    if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi; \
    go install -trimpath "github.com/minio/minio@${MINIO_GO_VERSION}" && rm -rf /root/go /root/.cache

# mc RELEASE.2025-08-13T08-35-41Z: the proxy serves MinIO's releases only as pseudo-versions. The checksum
# database has no entry for this one, so the module's own hash is pinned here and checked instead.
FROM go AS mc-build
ARG MC_GO_VERSION=v0.0.0-20250813083541-7394ce0dd2a8
ARG MC_MODULE_SUM=h1:9tuRE4iEaDkuxatxe7pddYYh1SX5mT0/D0haofZFeTY=
RUN --mount=type=secret,id=build_ca \
    set -eu; if [ -s /run/secrets/build_ca ]; then export SSL_CERT_FILE=/run/secrets/build_ca; fi; \
    export GONOSUMDB=github.com/minio/mc; \
    sum=$(go mod download -json "github.com/minio/mc@${MC_GO_VERSION}" | sed -n 's/.*"Sum": "\(.*\)".*/\1/p'); \
    [ "$sum" = "$MC_MODULE_SUM" ] || { echo "mc module hash $sum != pinned $MC_MODULE_SUM" >&2; exit 1; }; \
    go install -trimpath "github.com/minio/mc@${MC_GO_VERSION}" && rm -rf /root/go /root/.cache

# The minimal root both images share: CA certificates, /tmp, root's home and passwd entry, nothing else.
FROM debian:bookworm-slim AS rootfs
RUN set -eu; mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp /rootfs/root /rootfs/data /rootfs/usr/bin /rootfs/bin; \
    chmod 1777 /rootfs/tmp; cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/ 2>/dev/null || true; \
    printf 'root:x:0:0:root:/root:/bin/sh\n' > /rootfs/etc/passwd; printf 'root:x:0:\n' > /rootfs/etc/group
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      ca-certificates && rm -rf /var/lib/apt/lists/* && cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/
# mc's image has a shell (scripts run in it), and only the shell: dash and the libraries it links.
RUN set -eu; mkdir -p /shellfs/bin; cp /bin/dash /shellfs/bin/sh; \
    for lib in $(ldd /bin/dash | grep -o '/[^ ]*'); do cp --parents -L "$lib" /shellfs/; done

FROM scratch AS minio
COPY --from=rootfs /rootfs/ /
COPY --from=minio-build /out/minio /usr/bin/minio
COPY --from=mc-build /out/mc /usr/bin/mc
ENV HOME=/root PATH=/usr/bin:/bin
VOLUME ["/data"]
EXPOSE 9000
ENTRYPOINT ["minio"]
CMD ["server", "/data"]

FROM scratch AS mc
COPY --from=rootfs /rootfs/ /
COPY --from=rootfs /shellfs/ /
COPY --from=mc-build /out/mc /usr/bin/mc
ENV HOME=/root PATH=/usr/bin:/bin
ENTRYPOINT ["mc"]
