# Local equivalents of the official minio/minio and minio/mc images, for machines where no registry answers
# (scripts/compose-job.sh builds them, and the test harness names them as the official images for its run).
# The same server software: the static binaries `scripts/build-minio.sh minio|mc` builds with `go install` at
# the commits of the pinned releases, copied in from the build context. Each final image reproduces only what
# compose relies on:
#   minio: entrypoint `minio`, /usr/bin/minio and /usr/bin/mc (healthcheck `mc ready local`), /data, root;
#   mc:    entrypoint `mc`, /usr/bin/mc, a POSIX shell at /bin/sh, CA certificates, root.
# The official images are minimal (ubi-micro): no sed, grep or awk, so neither are these.
#   docker build -f compose/local-images.Dockerfile --target minio|mc --build-arg BASE_IMAGE=... <dir with minio, mc>
ARG BASE_IMAGE=debian:bookworm-slim

# The minimal root both images share: CA certificates, /tmp, root's home and passwd entry, nothing else.
FROM ${BASE_IMAGE} AS rootfs
RUN apt-get update -q && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
      ca-certificates && rm -rf /var/lib/apt/lists/*
RUN set -eu; mkdir -p /rootfs/etc/ssl/certs /rootfs/tmp /rootfs/root /rootfs/data /rootfs/usr/bin /rootfs/bin; \
    chmod 1777 /rootfs/tmp; cp /etc/ssl/certs/ca-certificates.crt /rootfs/etc/ssl/certs/; \
    printf 'root:x:0:0:root:/root:/bin/sh\n' > /rootfs/etc/passwd; printf 'root:x:0:\n' > /rootfs/etc/group
# mc's image has a shell (scripts run in it), and only the shell: dash and the libraries it links.
RUN set -eu; mkdir -p /shellfs/bin; cp /bin/dash /shellfs/bin/sh; \
    for lib in $(ldd /bin/dash | grep -o '/[^ ]*'); do cp --parents -L "$lib" /shellfs/; done

FROM scratch AS minio
COPY --from=rootfs /rootfs/ /
COPY minio mc /usr/bin/
ENV HOME=/root PATH=/usr/bin:/bin
VOLUME ["/data"]
EXPOSE 9000
ENTRYPOINT ["minio"]
CMD ["server", "/data"]

FROM scratch AS mc
COPY --from=rootfs /rootfs/ /
COPY --from=rootfs /shellfs/ /
COPY mc /usr/bin/mc
ENV HOME=/root PATH=/usr/bin:/bin
ENTRYPOINT ["mc"]
