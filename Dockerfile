# Production GPU image: the bot with the SDXL engine on CUDA 13.
#
#   docker build -t aldar-kose-bot .
#   docker run --gpus all -e TELEGRAM_TOKEN -e DISCORD_TOKEN -e OPENAI_API_KEY \
#       -v aldar-data:/app/data -v aldar-outputs:/app/outputs -v aldar-hf-cache:/app/hf-cache aldar-kose-bot
#
# Stages: base (CUDA runtime + Python 3.11) -> builder (a venv with requirements.txt) -> runtime
# (base + that venv + the app, run as a non-root user). Secrets never enter the image: TELEGRAM_TOKEN,
# DISCORD_TOKEN and OPENAI_API_KEY are read from the container's environment at run time.

# ---------------------------------------------------------------------------------------------------
# base: the CUDA 13.0 runtime on Ubuntu 24.04, matching the CUDA 13 build of torch that requirements.txt
# pins. The torch wheels bring their own CUDA libraries (the pinned nvidia-* packages); the base image
# supplies the NVIDIA container settings (NVIDIA_VISIBLE_DEVICES, NVIDIA_DRIVER_CAPABILITIES and
# NVIDIA_REQUIRE_CUDA=cuda>=13.0, so a host driver too old for CUDA 13 is refused at start, not mid-render).
FROM nvidia/cuda:13.0.2-runtime-ubuntu24.04 AS base

ARG DEBIAN_FRONTEND=noninteractive
ENV LANG=C.UTF-8

# Python 3.11: pyproject.toml requires >=3.11,<3.12 and Ubuntu 24.04 ships only 3.12, so the interpreter
# comes from the deadsnakes PPA (CPython built as Ubuntu packages for 24.04, the usual source of other
# Python versions on Ubuntu). add-apt-repository adds the PPA and its signing key, then is purged again in
# the same layer; ca-certificates stays for HTTPS at run time (Hugging Face, OpenAI, Telegram, Discord).
# Apt versions are not pinned: the PPA and the Ubuntu archive keep only the newest build of a package, so
# a pinned version breaks the build as soon as it is superseded (security fixes). The application's own
# dependencies are all pinned, in requirements.txt.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends ca-certificates software-properties-common \
    && add-apt-repository -y ppa:deadsnakes/ppa \
    && apt-get install -y --no-install-recommends python3.11 \
    && apt-get purge -y --auto-remove software-properties-common \
    && rm -rf /var/lib/apt/lists/*

# ---------------------------------------------------------------------------------------------------
# builder: the same steps as the README's run command (python3 -m venv .venv && .venv/bin/pip install
# -r requirements.txt), into /opt/venv. requirements.txt is copied alone, before the code, so this
# multi-gigabyte layer (torch + CUDA libraries) is rebuilt only when requirements.txt changes.
FROM base AS builder

ARG DEBIAN_FRONTEND=noninteractive
ENV PIP_DISABLE_PIP_VERSION_CHECK=1

# python3.11-venv: ensurepip, so the venv has pip; only this stage needs it. Not pinned, as above.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11-venv \
    && rm -rf /var/lib/apt/lists/* \
    && python3.11 -m venv /opt/venv

COPY requirements.txt /tmp/requirements.txt
RUN /opt/venv/bin/pip install --no-cache-dir -r /tmp/requirements.txt

# ---------------------------------------------------------------------------------------------------
# runtime
FROM base AS runtime

ARG DEBIAN_FRONTEND=noninteractive

# A C compiler, libc headers and Python.h: with engine.compile_unet, Triton compiles a small C driver at
# run time, and without them the warm-up fails (gcc's libc6-dev is only a recommendation, so it is named).
# Not pinned, as above.
# hadolint ignore=DL3008
RUN apt-get update \
    && apt-get install -y --no-install-recommends gcc libc6-dev python3.11-dev \
    && rm -rf /var/lib/apt/lists/*

# PATH: `python` is the venv's Python 3.11, with every dependency (CMD and HEALTHCHECK rely on it).
# HF_HOME: downloaded weights go to the hf-cache volume and survive new containers.
# ALDAR__OBSERVABILITY__HOST: the health/metrics server listens on every interface of the container, so
# `-p 127.0.0.1:9464:9464` lets a Prometheus on the host scrape /metrics; published without that address, the
# port would be open on every interface of the host.
# ALDAR__LOGGING__FORMAT: one JSON object per log line (with the job id), for docker logs and collectors.
# TORCHINDUCTOR_CACHE_DIR / TRITON_CACHE_DIR: compiled UNet kernels (engine.compile_unet) are kept in the
# hf-cache volume, so a new container reuses them instead of compiling for minutes again.
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    HF_HOME=/app/hf-cache \
    TORCHINDUCTOR_CACHE_DIR=/app/hf-cache/torchinductor \
    TRITON_CACHE_DIR=/app/hf-cache/triton \
    ALDAR__OBSERVABILITY__HOST=0.0.0.0 \
    ALDAR__LOGGING__FORMAT=json

WORKDIR /app

# The non-root user (uid/gid 10001; USER below is numeric so Kubernetes' runAsNonRoot can verify it) and
# the folders that become volumes, owned by it (a new named volume takes the folder's owner). The code and
# the venv stay root-owned: the bot cannot modify itself. A bind mount must be writable by uid 10001.
RUN groupadd --gid 10001 bot \
    && useradd --no-log-init --create-home --uid 10001 --gid bot --shell /usr/sbin/nologin bot \
    && mkdir -p /app/data /app/outputs /app/hf-cache \
    && chown 10001:10001 /app/data /app/outputs /app/hf-cache

COPY --from=builder /opt/venv /opt/venv

# config.toml: storage.database = data/bot.sqlite3 and storage.outputs = outputs resolve against its
# folder, /app, so they land in the volumes below. Override any key with ALDAR__SECTION__KEY=value.
COPY config.toml ./
COPY adapters/ adapters/
COPY engine/ engine/
COPY bot/ bot/

USER 10001:10001

# SQLite database, finished boards, Hugging Face cache (SDXL, ControlNet, IP-Adapter, CLIP weights).
VOLUME ["/app/data", "/app/outputs", "/app/hf-cache"]

EXPOSE 9464

# /healthz answers 200 when the event loop, the database and the worker are healthy, 503 otherwise;
# urlopen raises on 503 and on a refused connection, so the exit status is non-zero. The server starts
# once the engine is loaded: the start period covers the first start, which downloads the SDXL weights.
HEALTHCHECK --interval=30s --timeout=10s --start-period=15m --retries=3 \
    CMD ["python", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:9464/healthz', timeout=5)"]

# SIGTERM (docker stop): the job in hand stops at its next diffusion step and the bot exits within 30 s,
# so give `docker stop` that long (compose.yaml sets stop_grace_period); a job cut short resumes later.
CMD ["python", "-m", "bot", "run"]
