# The model gateway (airflow_mlops.serving) without Airflow: only what serving needs.
#
# Build context: the repository root, reduced to pyproject.toml, README.md, airflow_mlops/ and docker/
# (airflow_mlops.deploy.docker_backend.build_gateway_image sends exactly that).
#   BASE_IMAGE        any Debian-like image with python3 + venv (default: the public slim image);
#                     docker/build_base_image.sh makes one offline from the apt mirror.
#   SKLEARN_VERSION   must equal the training host's scikit-learn: pickled models load only there.
#   docker/certs/*.crt  extra CA certificates (TLS-intercepting proxies), used by pip at build time
#                     only; the folder is git-ignored and filled by the build step.
# Proxy variables (HTTP_PROXY, HTTPS_PROXY, NO_PROXY and lower-case) are Docker's predefined build args.
ARG BASE_IMAGE=python:3.11-slim

FROM ${BASE_IMAGE} AS build
ARG SKLEARN_VERSION=1.9.1
ARG MLFLOW_VERSION=3.17.2
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 PYTHONDONTWRITEBYTECODE=1
# docker/certs is git-ignored and may be absent: a glob beside a file that always exists never fails.
# That file is this Dockerfile, not pyproject.toml: the dependency layer below is rebuilt only when the
# Dockerfile or the certificates change, not on every edit of the package's metadata.
COPY docker/gateway.Dockerfile docker/certs* /tmp/certs/
# The proxy's CA joins the system bundle for pip only, in this stage only: the final image never has it.
RUN set -eu; \
    bundle=/tmp/ca-bundle.pem; \
    cat /etc/ssl/certs/ca-certificates.crt > "$bundle" 2>/dev/null || true; \
    find /tmp/certs -name '*.crt' -exec cat {} + >> "$bundle"; \
    python3 -m venv /opt/venv; \
    PIP_CERT="$bundle" /opt/venv/bin/pip install \
        "scikit-learn==${SKLEARN_VERSION}" \
        "mlflow-skinny==${MLFLOW_VERSION}" \
        pandas pyarrow scipy starlette uvicorn uvloop httptools orjson prometheus-client httpx cloudpickle skops \
        redis
# The package itself is built into a wheel here and installed in the last layer of the final image, so
# that a change of the code leaves the dependency layers (and the copied virtualenv) cached.
COPY pyproject.toml /src/
COPY airflow_mlops/ /src/airflow_mlops/
COPY README.md /src/
RUN set -eu; \
    bundle=/tmp/ca-bundle.pem; \
    test -f /src/README.md || echo "airflow-provider-mlops" > /src/README.md; \
    PIP_CERT="$bundle" /opt/venv/bin/pip wheel --no-deps --wheel-dir /wheels /src

FROM ${BASE_IMAGE}
ARG GATEWAY_UID=10001
# A fixed non-root user; HOME on the tmpfs since the root filesystem is mounted read-only.
RUN (groupadd --system --gid "${GATEWAY_UID}" gateway || addgroup --system --gid "${GATEWAY_UID}" gateway) \
    && (useradd --system --uid "${GATEWAY_UID}" --gid "${GATEWAY_UID}" --home-dir /tmp --no-create-home \
        --shell /usr/sbin/nologin gateway \
        || adduser --system --uid "${GATEWAY_UID}" --ingroup gateway --home /tmp --no-create-home gateway) \
    && mkdir -p /var/log/mlops && chown "${GATEWAY_UID}:${GATEWAY_UID}" /var/log/mlops
COPY --from=build /opt/venv /opt/venv
COPY --from=build /wheels /tmp/wheels
RUN set -eu; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-index --no-deps /tmp/wheels/*.whl; \
    rm -rf /tmp/wheels; \
    /opt/venv/bin/python -c "import airflow_mlops.serving, sklearn, mlflow, starlette, uvicorn"; \
    if /opt/venv/bin/python -c "import airflow" 2>/dev/null; then echo "airflow must not be installed" >&2; exit 1; fi
ENV PATH=/opt/venv/bin:$PATH \
    HOME=/tmp \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    MLFLOW_DISABLE_TELEMETRY=true \
    DO_NOT_TRACK=true \
    GATEWAY_PORT=8080
LABEL org.opencontainers.image.title="airflow-mlops gateway" \
      org.opencontainers.image.description="Model gateway of airflow-provider-mlops (no Airflow inside)"
USER ${GATEWAY_UID}:${GATEWAY_UID}
WORKDIR /tmp
EXPOSE 8080
# A healthcheck without curl: the image has Python anyway. The deploy backend overrides it per container.
HEALTHCHECK --interval=10s --timeout=3s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('GATEWAY_PORT', '8080'), timeout=2)"]
ENTRYPOINT ["python", "-m", "airflow_mlops.serving"]
CMD ["--host", "0.0.0.0", "--port", "8080", "--config", "/etc/mlops/deployment.json", "--log-dir", "/var/log/mlops"]
