# syntax=docker/dockerfile:1
#
# LLM gateway image: CUDA runtime + Python 3.11 + the `llm-gateway` package.
#   docker build -t llm-gateway .
#   docker run --gpus all -p 8000:8000 llm-gateway
# torch comes from PyPI's default index, whose Linux x86_64 wheels bundle the
# CUDA libraries they need; the base image supplies the driver-facing runtime.
FROM nvidia/cuda:12.4.1-runtime-ubuntu22.04

ARG DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3.11 python3.11-venv ca-certificates \
    && rm -rf /var/lib/apt/lists/*

# A virtual environment instead of the system interpreter: its pip is current
# and `pip install` does not fight the distribution's packages.
ENV VIRTUAL_ENV=/opt/venv \
    PATH=/opt/venv/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    PYTHONDONTWRITEBYTECODE=1 \
    PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1
RUN python3.11 -m venv "$VIRTUAL_ENV" && pip install --upgrade pip

WORKDIR /app
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip install . && gateway --help > /dev/null

# Run as an unprivileged user; models downloaded from the Hub are cached in its
# home (mount a volume on /home/gateway/.cache/huggingface to keep them).
RUN useradd --create-home --uid 10001 --shell /usr/sbin/nologin gateway
USER gateway
# The cache's mount point, owned by the gateway user: a named volume mounted there starts with this owner.
RUN mkdir -p /home/gateway/.cache/huggingface
ENV HOME=/home/gateway \
    HF_HOME=/home/gateway/.cache/huggingface \
    GATEWAY_HOST=0.0.0.0 \
    GATEWAY_PORT=8000

EXPOSE 8000

# Liveness only (/health); orchestrators should use /ready for traffic.
HEALTHCHECK --interval=30s --timeout=5s --start-period=120s --retries=3 \
    CMD ["python", "-c", "import os, urllib.request; urllib.request.urlopen('http://127.0.0.1:%s/health' % os.environ.get('GATEWAY_PORT', '8000'), timeout=4)"]

CMD ["gateway", "serve", "--host", "0.0.0.0"]
