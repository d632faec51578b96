# Local equivalent of nginx:1.22.1-alpine, built only when that image cannot be pulled.
# Same nginx version (Debian bookworm ships 1.22.1) and only the interface docker-compose.yaml relies on:
# /etc/nginx/nginx.conf including conf.d/*.conf, html root /usr/share/nginx/html, logs to stdout/stderr,
# workers as user nginx (uid/gid 101), SIGQUIT to stop, `nginx -g 'daemon off;'`, busybox-like wget for the
# healthcheck. Not reproduced: the image's /docker-entrypoint.sh hooks (templates, IPv6 listen), unused here.
ARG BASE_IMAGE=debian:bookworm-slim
FROM ${BASE_IMAGE}

# policy-rc.d: the package's postinst must not start a server inside the build.
RUN printf '#!/bin/sh\nexit 101\n' >/usr/sbin/policy-rc.d && chmod +x /usr/sbin/policy-rc.d \
    && apt-get update -q \
    && DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends nginx=1.22.1-* wget \
    && rm -rf /var/lib/apt/lists/* /usr/sbin/policy-rc.d /etc/nginx/sites-enabled /etc/nginx/sites-available \
    && groupadd --system --gid 101 nginx \
    && useradd --system --uid 101 --gid nginx --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin nginx \
    && mkdir -p /etc/nginx/conf.d /var/cache/nginx \
    && ln -sf /dev/stdout /var/log/nginx/access.log \
    && ln -sf /dev/stderr /var/log/nginx/error.log

COPY nginx.conf /etc/nginx/nginx.conf

EXPOSE 80
STOPSIGNAL SIGQUIT
CMD ["nginx", "-g", "daemon off;"]
