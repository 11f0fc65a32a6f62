# Stand-ins for the public images postgres:16, redis:7.2-bookworm, prom/prometheus, prom/pushgateway and nginx,
# made from Debian bookworm's packages on the local debootstrap base (no image registry is reachable
# here). One stage installs every package once; each stand-in is a target (`docker build --target NAME`)
# with the interface docker-compose.yaml uses. Differences from the public images: README.md beside this.
ARG BASE_IMAGE=airflow-mlops-base:bookworm
FROM ${BASE_IMAGE} AS packages
# policy-rc.d: packages must not start their services in the build; no cluster is made at install.
RUN set -eu; \
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; \
    mkdir -p /etc/postgresql-common/createcluster.d; \
    echo "create_main_cluster = false" > /etc/postgresql-common/createcluster.d/no-main-cluster.conf; \
    apt-get update -q; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        postgresql-15 postgresql-client-15 redis-server redis-tools prometheus prometheus-pushgateway wget \
        nginx-light curl; \
    apt-get clean; rm -rf /var/lib/apt/lists/*

# postgres:16 -- POSTGRES_USER / POSTGRES_PASSWORD / POSTGRES_DB / PGDATA, /docker-entrypoint-initdb.d
# (*.sh executed or sourced, *.sql run) on the first start, port 5432, pg_isready on PATH.
FROM packages AS postgres
COPY postgres-entrypoint.sh /usr/local/bin/docker-entrypoint.sh
RUN set -eu; chmod 0755 /usr/local/bin/docker-entrypoint.sh; \
    mkdir -p /docker-entrypoint-initdb.d /var/lib/postgresql/data /var/run/postgresql; \
    chown -R postgres:postgres /var/lib/postgresql /var/run/postgresql; chmod 0700 /var/lib/postgresql/data
ENV PATH=/usr/lib/postgresql/15/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PGDATA=/var/lib/postgresql/data
STOPSIGNAL SIGINT
EXPOSE 5432
ENTRYPOINT ["docker-entrypoint.sh"]
CMD ["postgres"]

# redis:7.2-bookworm -- redis-server on 6379 reachable from other containers (protected mode off, as in
# the public image), data in /data, redis-cli on PATH. Runs as the redis user.
FROM packages AS redis
RUN mkdir -p /data && chown redis:redis /data
WORKDIR /data
USER redis
EXPOSE 6379
ENTRYPOINT ["redis-server", "--protected-mode", "no", "--bind", "0.0.0.0", "--dir", "/data", "--daemonize", "no"]
CMD []

# prom/prometheus -- the prometheus binary is the entrypoint (compose gives its flags as the command),
# runs as nobody, /prometheus writable, wget for the healthcheck.
FROM packages AS prometheus
RUN mkdir -p /prometheus /etc/prometheus && chown -R nobody:nogroup /prometheus
WORKDIR /prometheus
USER nobody
EXPOSE 9090
ENTRYPOINT ["/usr/bin/prometheus"]
CMD ["--config.file=/etc/prometheus/prometheus.yml", "--storage.tsdb.path=/prometheus"]

# prom/pushgateway -- the pushgateway binary on 9091, runs as nobody, wget for the healthcheck.
FROM packages AS pushgateway
RUN mkdir -p /pushgateway && chown nobody:nogroup /pushgateway
WORKDIR /pushgateway
USER nobody
EXPOSE 9091
ENTRYPOINT ["/usr/bin/prometheus-pushgateway"]
CMD []

# nginx:1.27 -- nginx on PATH (/usr/sbin/nginx; Debian's 1.22, which knows every directive and flag the
# stack uses, -e included), curl for the healthcheck. The compose file gives the command, the user, the
# config (/etc/mlops/nginx.conf) and the tmpfs it writes to; Debian's default site is removed.
FROM packages AS nginx
RUN rm -f /etc/nginx/sites-enabled/default
EXPOSE 8080
USER 101:101
ENTRYPOINT []
CMD ["nginx", "-e", "stderr", "-g", "daemon off;"]
