# aistack as a container image: the gateway without the embedded engine (a cluster's
# models live on its Ollama/vLLM/cloud backends), with PostgreSQL and Redis support.
# Every dependency comes from a lock (exact versions, hash-checked; see
# docs/development.md): locks/image.txt by default. Build the embedded engine in too with
#   docker build --build-arg LOCK=image-local .
# (llama-cpp-python compiles from source: minutes.)
ARG PYTHON=3.11

FROM python:${PYTHON}-slim AS build
ARG LOCK=image
RUN if [ "$LOCK" = image-local ]; then \
      apt-get update && apt-get install -y --no-install-recommends build-essential cmake \
      && rm -rf /var/lib/apt/lists/*; \
    fi
RUN python -m venv /venv
WORKDIR /src
COPY locks ./locks
RUN /venv/bin/pip install --no-cache-dir --require-hashes -r "locks/${LOCK}.txt"
COPY pyproject.toml README.md ./
COPY src ./src
# aistack itself: its dependencies are the lock's, and its build system (setuptools) is
# in the lock too, so nothing unpinned is fetched to build it.
RUN /venv/bin/pip install --no-cache-dir --no-deps --no-build-isolation .

FROM python:${PYTHON}-slim
RUN useradd --system --uid 10001 --home-dir /data --create-home aistack
COPY --from=build /venv /venv
ENV PATH=/venv/bin:$PATH
USER 10001
# SQLite (when no database_url is set) lives under $XDG_DATA_HOME/aistack.
ENV XDG_DATA_HOME=/data AISTACK_CONFIG=/etc/aistack/aistack.yaml PYTHONUNBUFFERED=1
VOLUME ["/data"]
EXPOSE 8434
HEALTHCHECK --interval=10s --timeout=3s \
  CMD python -c "import urllib.request as u; u.urlopen('http://127.0.0.1:8434/health/live', timeout=2)"
ENTRYPOINT ["aistack"]
CMD ["serve", "--host", "0.0.0.0", "--port", "8434"]
