# Stand-in for the public python images, shared by the Airflow, MLflow and gateway images of the stack test:
# one virtualenv (/opt/venv, first on PATH) with the heavy wheels (scikit-learn, pandas, pyarrow, MLflow,
# psycopg2, the gateway's server stack), installed offline from the wheelhouse that the test serves on
# loopback (WHEELS_URL; the build runs with --network host). No Airflow here: the gateway image refuses it.
#
# The venv belongs to uid AIRFLOW_UID and gid 0 and is group-writable, so that the Airflow image, which
# runs pip as the `airflow` user (as the official image does), can add to it without copying it.
ARG BASE_IMAGE=airflow-mlops-base:bookworm
FROM ${BASE_IMAGE}
ARG WHEELS_URL
ARG AIRFLOW_UID=50000
# requirements-python.txt: every package pinned, resolved by build.py from the wheelhouse (--no-deps).
COPY requirements-python.txt /tmp/stack/
RUN set -eu; \
    python3 -m venv /opt/venv; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links "${WHEELS_URL:?the wheelhouse URL}" --upgrade pip; \
    /opt/venv/bin/pip install --no-cache-dir --disable-pip-version-check --no-index \
        --find-links "${WHEELS_URL:?the wheelhouse URL}" \
        --no-deps -r /tmp/stack/requirements-python.txt; \
    /opt/venv/bin/pip check; \
    chown -R "${AIRFLOW_UID}:0" /opt/venv; \
    chmod -R g+rwX /opt/venv; \
    rm -rf /tmp/stack
ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin \
    PYTHONUNBUFFERED=1
CMD ["python3"]
