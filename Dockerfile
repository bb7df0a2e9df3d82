# attnviz: the Streamlit app on CPU, with the shipped weights and sample images baked
# in (package data of the installed attnviz), so the container needs no network at run
# time. See docs/deploy.md.
#
#   docker build -t attnviz .
#   docker build --build-arg PRETRAINED="seresnet50.ra2_in1k halonet26t.a1h_in1k" -t attnviz .
#   docker run -p 8501:8501 attnviz
#
# tests/test_docker.py checks this file (sources, user, port, health check) and runs
# the CMD below against the same Streamlit config.

# --- builder: the virtual environment, in a stage of its own so that nothing pip
# leaves behind reaches the final image, which gets /opt/venv in a single layer.
FROM python:3.11-slim-bookworm AS builder

# Where torch and torchvision come from. The default is PyTorch's CPU-only index:
# PyPI's Linux torch is the CUDA build, which pulls in several GB of nvidia-*
# packages that a CPU container never uses. Override with
# --build-arg TORCH_INDEX_URL=... (a mirror, or a CUDA index).
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu

ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PIP_ROOT_USER_ACTION=ignore \
    PYTHONDONTWRITEBYTECODE=1 \
    PATH=/opt/venv/bin:$PATH

RUN python -m venv /opt/venv

COPY requirements.txt /tmp/requirements.txt

# torch and torchvision first, from TORCH_INDEX_URL; then the rest from PyPI.
# requirements.txt pins torch==2.14.1, which the installed 2.14.1+cpu satisfies (a
# local version label is ignored when matching ==), so the second install keeps the
# CPU build. Keep these two pins equal to requirements.txt (a test checks).
RUN pip install --no-cache-dir --index-url "$TORCH_INDEX_URL" \
        torch==2.14.1 torchvision==0.29.1 \
    && pip install --no-cache-dir -r /tmp/requirements.txt \
    && pip check \
    && python -c "import torch, torchvision, streamlit; print('torch', torch.__version__)"

# The package itself, installed like any wheel: its sample images, the live figure's
# frontend and the shipped weights (weights/, installed as attnviz/shipped/) are package data.
COPY pyproject.toml README.md /src/
COPY attnviz/ /src/attnviz/
COPY weights/ /src/weights/
RUN pip install --no-cache-dir --no-deps /src \
    && python -c "import attnviz; print('models', attnviz.available_models())"

# ImageNet-trained timm weights baked in at build time (README: Pretrained on ImageNet),
# e.g. --build-arg PRETRAINED="seresnet50.ra2_in1k botnet26t_256.c1_in1k": `attnviz fetch`
# downloads each into the Hugging Face cache at /opt/huggingface, which the final image
# gets read-only, so the app loads them with no network at run time. Empty (the default):
# attnviz's own models only, nothing is fetched. HF_ENDPOINT: another hub (a mirror, or
# the smoke test's local server).
ARG PRETRAINED=""
ARG HF_ENDPOINT=https://huggingface.co
# hadolint ignore=SC2086
RUN mkdir -p /opt/huggingface \
    && if [ -n "$PRETRAINED" ]; then HF_HOME=/opt/huggingface attnviz fetch $PRETRAINED; fi \
    && rm -rf /opt/huggingface/hub/.locks \
    && chmod -R a+rX /opt/huggingface

# --- final image
FROM python:3.11-slim-bookworm

# HOME and every cache a library may write to point into the app user's home, the
# only place it can write (besides /tmp).
ENV PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1 \
    PIP_NO_CACHE_DIR=1 \
    PATH=/opt/venv/bin:$PATH \
    HOME=/home/attnviz \
    XDG_CACHE_HOME=/home/attnviz/.cache \
    XDG_CONFIG_HOME=/home/attnviz/.config \
    MPLCONFIGDIR=/home/attnviz/.cache/matplotlib \
    TORCH_HOME=/home/attnviz/.cache/torch \
    HF_HOME=/opt/huggingface \
    HF_HUB_DISABLE_TELEMETRY=1

RUN groupadd --system --gid 10001 attnviz \
    && useradd --system --uid 10001 --gid attnviz --home-dir /home/attnviz \
        --create-home --shell /usr/sbin/nologin attnviz

COPY --from=builder /opt/venv /opt/venv
# The Hugging Face cache with the weights baked in (PRETRAINED), root-owned like the venv:
# the app reads it. Downloads at run time (ATTNVIZ_ALLOW_DOWNLOADS=1, off by default)
# need a writable volume here: docs/deploy.md.
COPY --from=builder /opt/huggingface /opt/huggingface

# The page and its config are owned by root, as is /opt/venv with the package and its
# weights: the app user can read, not change them.
WORKDIR /app
COPY app.py serve.py ./
COPY deploy/streamlit.toml ./.streamlit/config.toml

USER 10001:10001

EXPOSE 8501

# No curl in the slim image: Python's urllib asks Streamlit's health endpoint, on the
# port Streamlit was told to use. serve.py loads the models and analyses the first
# page's sample before the server accepts connections, so health says ok only once the
# first visitor can be served at once; the start period covers starting Python and
# torch and that warm-up (about 8 s on a loaded 2-core machine: docs/deploy.md).
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s --retries=3 \
    CMD ["python", "-c", "import os, sys, urllib.request; port = os.environ.get('STREAMLIT_SERVER_PORT', '8501'); body = urllib.request.urlopen(f'http://127.0.0.1:{port}/_stcore/health', timeout=4).read(); sys.exit(0 if body == b'ok' else 1)"]

# Settings come from /app/.streamlit/config.toml (deploy/streamlit.toml).
CMD ["streamlit", "run", "serve.py"]
