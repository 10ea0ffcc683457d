# aistack as a container image: the gateway without the embedded engine (a cluster's
# models live on its Ollama/vLLM/cloud backends), with PostgreSQL and Redis support.
# Build the embedded engine in too with: docker build --build-arg EXTRAS=postgres,redis,local .
# (llama-cpp-python compiles from source: minutes.)
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS build
ARG EXTRAS=postgres,redis
RUN if echo "$EXTRAS" | grep -q local; then \
      apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
      && rm -rf /var/lib/apt/lists/*; \
    fi
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN pip wheel --no-cache-dir --wheel-dir /wheels ".[${EXTRAS}]"

FROM python:${PYTHON}-slim
ARG EXTRAS=postgres,redis
RUN useradd --system --uid 10001 --home-dir /data --create-home aistack
COPY --from=build /wheels /wheels
RUN pip install --no-cache-dir --no-index --find-links=/wheels "aistack[${EXTRAS}]" \
    && rm -rf /wheels
USER 10001
# SQLite (when no database_url is set) lives under $XDG_DATA_HOME/aistack.
ENV XDG_DATA_HOME=/data AISTACK_CONFIG=/etc/aistack/aistack.yaml PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8434
HEALTHCHECK --interval=10s --timeout=3s \
  CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8434/health/live', timeout=2)"
ENTRYPOINT ["aistack"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8434"]
