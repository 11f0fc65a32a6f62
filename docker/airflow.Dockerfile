# The Airflow image of the stack: the official Apache Airflow image with this provider installed from the
# build context (never through _PIP_ADDITIONAL_REQUIREMENTS, which reinstalls on every container start).
#
#   docker build -f docker/airflow.Dockerfile -t airflow-provider-mlops/airflow:local .
#
# BASE_IMAGE: any Airflow 3.x image. Extra CA certificates (TLS-intercepting proxies): put *.crt files in
# docker/certs/ (git-ignored) before building; they are trusted by apt, pip and Python at run time.
ARG BASE_IMAGE=apache/airflow:3.3.2
FROM ${BASE_IMAGE}

USER root
# git: DVC-tracked training data lives in a git repository.
# docker/certs* matches nothing when there are no certificates: the init script keeps the COPY valid
# for the legacy builder as well as BuildKit.
COPY docker/airflow/init-dvc-repo.sh docker/certs* /opt/mlops/stack/
RUN set -eux; \
    if ls /opt/mlops/stack/*.crt >/dev/null 2>&1; then \
        cp /opt/mlops/stack/*.crt /usr/local/share/ca-certificates/ && update-ca-certificates; \
        rm -f /opt/mlops/stack/*.crt; \
    fi; \
    chmod 0755 /opt/mlops/stack/init-dvc-repo.sh; \
    apt-get update; \
    apt-get install -y --no-install-recommends git; \
    apt-get clean; \
    rm -rf /var/lib/apt/lists/*

# The system bundle holds the public CAs plus any extra certificate added above.
ENV PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
    REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt \
    SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt \
    GIT_PYTHON_REFRESH=quiet \
    DVC_NO_ANALYTICS=1

USER airflow
# README.m[d]: the readme is optional for the build (the wildcard keeps COPY valid without it).
COPY --chown=airflow:0 pyproject.toml README.m[d] /opt/mlops/src/
COPY --chown=airflow:0 airflow_mlops /opt/mlops/src/airflow_mlops
# Pinning apache-airflow to the image's own version keeps pip from up- or downgrading Airflow itself.
RUN pip install --no-cache-dir \
        ${AIRFLOW_VERSION:+"apache-airflow==${AIRFLOW_VERSION}"} \
        "/opt/mlops/src[dvc,serving]" \
    && python -c "import airflow_mlops.get_provider_info as p; print(p.get_provider_info()['package-name'])"
