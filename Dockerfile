# syntax=docker/dockerfile:1
# The cdc control service: `cdc serve` (REST API + reconciler) on 0.0.0.0:8765.
# It runs none of the pipeline itself; point it at Postgres, Kafka, Connect, Flink and Pinot
# with CDC_* variables (compose/docker-compose.yml does). CDC_API_TOKEN is required: the API
# refuses a non-loopback bind without one.
#
#   docker build -t cdc:0.1.0 .
#   docker run -e CDC_API_TOKEN=... -e CDC_POSTGRES_DSN=... -p 127.0.0.1:8765:8765 cdc:0.1.0

FROM python:3.11.15-slim-bookworm

ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/cdc/.venv/bin:$PATH

# uid/gid 1001 on purpose: the Debezium Connect image runs as `kafka` 1001, and the 0600
# secrets files this service writes under $CDC_STATE_DIR/secrets must be readable by the
# Connect worker's FileConfigProvider through the shared volume.
RUN groupadd --system --gid 1001 cdc \
 && useradd --system --uid 1001 --gid cdc --home-dir /var/lib/cdc --no-create-home \
            --shell /usr/sbin/nologin cdc \
 && mkdir -p /var/lib/cdc/secrets /var/cache/cdc \
 && chown -R cdc:cdc /var/lib/cdc /var/cache/cdc \
 && chmod 0750 /var/lib/cdc && chmod 0700 /var/lib/cdc/secrets

# Same layout as packaging/cdc.service: a venv at /opt/cdc/.venv.
WORKDIR /opt/cdc/src
COPY pyproject.toml ./
COPY cdc ./cdc
RUN python -m venv /opt/cdc/.venv \
 && /opt/cdc/.venv/bin/pip install --upgrade pip \
 && /opt/cdc/.venv/bin/pip install ".[service]" \
 && rm -rf /opt/cdc/src

# The user-readable templates (connectors/, flink_sql/, pinot_tables/) live next to the
# package in a checkout, not inside the wheel: ship them and say where (cdc/mapping/render.py).
COPY connectors /opt/cdc/templates/connectors
COPY flink_sql /opt/cdc/templates/flink_sql
COPY pinot_tables /opt/cdc/templates/pinot_tables

ENV CDC_TEMPLATES_DIR=/opt/cdc/templates \
    CDC_STATE_DIR=/var/lib/cdc \
    CDC_CACHE_DIR=/var/cache/cdc \
    CDC_API_PORT=8765

WORKDIR /var/lib/cdc
USER cdc:cdc
VOLUME ["/var/lib/cdc"]
EXPOSE 8765

# /healthz is the one path that needs no token.
HEALTHCHECK --interval=15s --timeout=5s --start-period=20s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/healthz' % os.environ.get('CDC_API_PORT', '8765'), timeout=3)"]

# SIGTERM: uvicorn drains requests for CDC_STOP_TIMEOUT_S, then the reconciler stops.
STOPSIGNAL SIGTERM
ENTRYPOINT ["cdc"]
CMD ["serve", "--host", "0.0.0.0"]
