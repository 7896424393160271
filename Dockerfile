# syntax=docker/dockerfile:1
# ringbridge: BPF objects built from source in a builder stage; the runtime
# image holds Python, libbpf and the built objects. Run on a privileged host:
#   docker run --privileged --pid=host -v /sys/fs/bpf:/sys/fs/bpf \
#     -e RINGBRIDGE_TOKEN=... -p 8470:8470 ringbridge
# Least privilege instead of --privileged: --cap-add BPF --cap-add PERFMON
# --cap-add SYS_ADMIN (bpffs pinning) --cap-add IPC_LOCK, plus
# --security-opt seccomp=unconfined (the bpf() syscall is blocked by the default profile).

ARG DEBIAN_RELEASE=bookworm

FROM debian:${DEBIAN_RELEASE}-slim AS build
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      clang llvm libbpf-dev gcc libc6-dev make linux-libc-dev \
      python3 python3-venv \
 && rm -rf /var/lib/apt/lists/*
WORKDIR /src
COPY bpf/ bpf/
COPY bench/c_producer.c bench/c_producer.c
RUN make -C bpf OUT=/src/build
COPY pyproject.toml README.md ./
COPY service/ service/
RUN python3 -m venv /opt/ringbridge \
 && /opt/ringbridge/bin/pip install --no-cache-dir /src

FROM debian:${DEBIAN_RELEASE}-slim
RUN apt-get update \
 && DEBIAN_FRONTEND=noninteractive apt-get install -y --no-install-recommends \
      libbpf1 python3 ca-certificates \
 && rm -rf /var/lib/apt/lists/*
COPY --from=build /opt/ringbridge /opt/ringbridge
COPY --from=build /src/build/ringbridge.bpf.o /src/build/libringbridge_native.so \
     /src/build/libringbridge_validate.so /src/build/libringbridge_drainer.so \
     /usr/lib/ringbridge/
ENV PATH=/opt/ringbridge/bin:$PATH \
    RINGBRIDGE_BPF_OBJECT=/usr/lib/ringbridge/ringbridge.bpf.o \
    RINGBRIDGE_NATIVE_LIB=/usr/lib/ringbridge/libringbridge_native.so \
    RINGBRIDGE_VALIDATE_LIB=/usr/lib/ringbridge/libringbridge_validate.so \
    RINGBRIDGE_DRAINER_LIB=/usr/lib/ringbridge/libringbridge_drainer.so \
    RINGBRIDGE_HOST=0.0.0.0 \
    RINGBRIDGE_PORT=8470 \
    RINGBRIDGE_PIN_DIR=/sys/fs/bpf/ringbridge \
    RINGBRIDGE_DROP_PRIVILEGES=true
EXPOSE 8470
HEALTHCHECK --interval=10s --timeout=3s CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8470/healthz', timeout=2)"]
ENTRYPOINT ["ringbridge"]
CMD ["serve"]
