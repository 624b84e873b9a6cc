# Minimal image for the CPU preview path. The GPU image (CUDA runtime base, the pinned
# CUDA build of torch, health check, HF cache volume) replaces this with the SDXL engine.
FROM python:3.11-slim

ENV PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
WORKDIR /app

COPY requirements.txt .
RUN pip install --no-cache-dir -r requirements.txt

COPY bot/ bot/
COPY engine/ engine/
COPY adapters/ adapters/
COPY config.toml .

RUN useradd --create-home --uid 10001 bot && mkdir -p data outputs && chown bot:bot data outputs
USER bot
VOLUME ["/app/data", "/app/outputs"]

# Secrets (OPENAI_API_KEY, DISCORD_TOKEN, TELEGRAM_TOKEN) come from the environment only.
CMD ["python", "-m", "bot", "run"]
