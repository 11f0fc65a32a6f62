# Stand-in for the official apache/airflow image, as far as docker-compose.yaml and docker/airflow.Dockerfile
# rely on it (see README.md beside this file for what differs):
#   - user `airflow`, uid AIRFLOW_UID (50000), primary group 0; /etc/passwd group-writable so that an
#     arbitrary uid (AIRFLOW_UID=$(id -u)) gets a passwd entry from the entrypoint;
#   - AIRFLOW_HOME=/opt/airflow (dags, logs, plugins, config; group 0, group-writable), WORKDIR there;
#   - AIRFLOW_VERSION in the environment; `pip` on PATH installs where Airflow is, as the airflow user;
#   - ENTRYPOINT dumb-init -- /entrypoint (airflow-entrypoint.sh), CMD empty; curl, git, procps.
ARG BASE_IMAGE=airflow-mlops-stack/python-base:local
FROM ${BASE_IMAGE}
ARG WHEELS_URL
ARG AIRFLOW_VERSION=3.3.2
ARG AIRFLOW_UID=50000
USER root
COPY requirements-airflow.txt airflow-entrypoint.sh /tmp/stack/
# policy-rc.d: no package may start a service inside the build container.
RUN set -eu; \
    printf '#!/bin/sh\nexit 101\n' > /usr/sbin/policy-rc.d; chmod 0755 /usr/sbin/policy-rc.d; \
    apt-get update -q; \
    DEBIAN_FRONTEND=noninteractive apt-get install -y -q --no-install-recommends \
        curl dumb-init git procps netcat-openbsd; \
    apt-get clean; rm -rf /var/lib/apt/lists/*; \
    useradd --uid "${AIRFLOW_UID}" --gid 0 --home-dir /home/airflow --create-home --shell /bin/bash airflow; \
    mkdir -p /opt/airflow/dags /opt/airflow/logs /opt/airflow/plugins /opt/airflow/config; \
    chown -R "${AIRFLOW_UID}:0" /opt/airflow /home/airflow; \
    chmod -R g+rwX /opt/airflow /home/airflow; \
    chmod g+w /etc/passwd; \
    install -m 0755 /tmp/stack/airflow-entrypoint.sh /entrypoint
ENV AIRFLOW_HOME=/opt/airflow \
    AIRFLOW_USER_HOME_DIR=/home/airflow \
    AIRFLOW_VERSION=${AIRFLOW_VERSION} \
    AIRFLOW_UID=${AIRFLOW_UID} \
    DUMB_INIT_SETSID=1 \
    HOME=/home/airflow
USER ${AIRFLOW_UID}:0
RUN set -eu; \
    pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links "${WHEELS_URL:?the wheelhouse URL}" \
        --no-deps -r /tmp/stack/requirements-airflow.txt; \
    pip check; \
    airflow version
WORKDIR /opt/airflow
EXPOSE 8080
ENTRYPOINT ["/usr/bin/dumb-init", "--", "/entrypoint"]
CMD []
