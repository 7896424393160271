# ringbridge image. Build it with `make image` (tags ringbridge:<version> and
# ringbridge:latest): the Python wheels come from build/wheelhouse, which
# `make image` fills on the host, so this build needs no package index and no
# certificates -- only the base image and its apt mirror. No `# syntax=` line:
# the legacy builder (Docker 20.10 without BuildKit) builds this file as is.
#
# Few layers on purpose: with the vfs storage driver (CI, some VMs) every
# layer is a full copy of the file system.
#
# The service starts as root to load and pin the BPF objects, then gives up
# every capability and runs as the `ringbridge` user (RINGBRIDGE_USER).
# Run flags per Docker version are in the README ("Docker").

ARG BASE_IMAGE=debian:bookworm-slim

# Builder: clang and a C compiler, for the BPF object and the native helpers
# that the ringbridge wheel carries as package data (its build runs
# `make -C bpf package`), and a venv with ringbridge and its dependencies
# from the wheelhouse. Everything the runtime needs ends up in /opt/ringbridge.
FROM ${BASE_IMAGE} AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang libbpf-dev gcc libc6-dev make linux-libc-dev python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
# .dockerignore lets through only bpf/, service/ (without a host-built _bpf/),
# setup.py, pyproject.toml, README.md and build/wheelhouse/.
COPY . /src/
RUN python3 -m venv /opt/ringbridge \
 && /opt/ringbridge/bin/pip install --no-index --find-links /src/build/wheelhouse \
      --no-cache-dir --disable-pip-version-check /src \
 && /opt/ringbridge/bin/pip uninstall -y -q --disable-pip-version-check pip

# Runtime: Python, libbpf and the built objects; no compiler. The metadata
# comes first: those steps are then cached and cheap (each one is a commit
# of the file system so far).
FROM ${BASE_IMAGE}
ENV PATH=/opt/ringbridge/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    RINGBRIDGE_HOST=0.0.0.0 \
    RINGBRIDGE_PORT=8470 \
    RINGBRIDGE_PIN_DIR=/sys/fs/bpf/ringbridge \
    RINGBRIDGE_USER=ringbridge
EXPOSE 8470
# Reads RINGBRIDGE_PORT / RINGBRIDGE_HOST / RINGBRIDGE_CONFIG as the service does.
HEALTHCHECK --interval=10s --timeout=3s --start-period=10s --retries=3 \
  CMD ["python3", "-m", "ringbridge.healthcheck"]
ENTRYPOINT ["ringbridge"]
CMD ["serve"]
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libbpf1 python3 \
 && rm -rf /var/lib/apt/lists/* \
 && groupadd --gid 10470 ringbridge \
 && useradd --uid 10470 --gid 10470 --no-create-home --no-log-init \
      --home-dir /nonexistent --shell /usr/sbin/nologin ringbridge
COPY --from=build /opt/ringbridge /opt/ringbridge
