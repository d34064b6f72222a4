# syntax=docker/dockerfile:1.7
# One image for the operator, OtaFlux and ingest; the command picks the component:
#   docker run IMAGE operator | otaflux | ingest
# Pinned base: exact Python patch release on Debian bookworm, slim variant (bump deliberately; pin the
# digest with `@sha256:...` in your registry mirror for reproducible builds).
ARG PYTHON_IMAGE=docker.io/library/python:3.11.11-slim-bookworm

# --- build: wheels for the project and all its dependencies (nothing of this stage ships) -----------------
FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY operator/ operator/
COPY otaflux/ otaflux/
COPY firmware/ firmware/
RUN python -m pip wheel --wheel-dir /wheels .

# --- runtime: a venv with the wheels, run as an unprivileged user ----------------------------------------
FROM ${PYTHON_IMAGE} AS runtime
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PATH=/opt/weatherfleet/bin:$PATH
RUN groupadd --system --gid 65532 weatherfleet \
 && useradd --system --uid 65532 --gid 65532 --home-dir /nonexistent --no-create-home --shell /usr/sbin/nologin weatherfleet
RUN --mount=type=bind,from=build,source=/wheels,target=/wheels \
    python -m venv /opt/weatherfleet \
 && /opt/weatherfleet/bin/pip install --no-index --find-links /wheels weatherfleet \
 && /opt/weatherfleet/bin/weatherfleet --help >/dev/null
WORKDIR /var/lib/weatherfleet
USER 65532:65532
# 8080: OtaFlux HTTP and kopf's liveness endpoint; 9090: Prometheus metrics.
EXPOSE 8080 9090
ENTRYPOINT ["weatherfleet"]
CMD ["operator"]
