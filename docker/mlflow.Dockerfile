# MLflow tracking server with the Postgres driver, for the stack's backend store. Artifacts are served by
# the server itself from /mlartifacts (a volume).
#
#   docker build -f docker/mlflow.Dockerfile -t airflow-provider-mlops/mlflow:local .
#
# BASE_IMAGE: any Debian-based Python 3.10+ image. Extra CA certificates: *.crt files in docker/certs/.
ARG BASE_IMAGE=python:3.12-slim
FROM ${BASE_IMAGE}

# docker/certs* matches nothing when there are no certificates: requirements.txt keeps the COPY valid.
# /mlartifacts is owned by the non-root user: a fresh named volume takes that owner.
COPY docker/mlflow/requirements.txt docker/certs* /opt/mlflow-build/
RUN set -eux; \
    if ls /opt/mlflow-build/*.crt >/dev/null 2>&1; then \
        cp /opt/mlflow-build/*.crt /usr/local/share/ca-certificates/ && update-ca-certificates; \
    fi; \
    PIP_CERT=/etc/ssl/certs/ca-certificates.crt \
        pip install --no-cache-dir -r /opt/mlflow-build/requirements.txt; \
    rm -rf /opt/mlflow-build; \
    useradd --uid 1000 --create-home --shell /usr/sbin/nologin mlflow; \
    mkdir -p /mlartifacts; \
    chown mlflow /mlartifacts

USER mlflow
WORKDIR /home/mlflow
EXPOSE 5000
CMD ["mlflow", "server", "--host", "0.0.0.0", "--port", "5000", \
     "--serve-artifacts", "--artifacts-destination", "/mlartifacts"]
