# GPU image for pipeline stages and Prefect workers.
#   docker build -t srppo .
#   docker run --gpus all -v $PWD:/work srppo dvc repro
FROM nvidia/cuda:12.4.1-cudnn-runtime-ubuntu22.04

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Prefect's servers listen on loopback unless a container is started with another host on purpose
# (docker run -e PREFECT_WORKER_WEBSERVER_HOST=0.0.0.0 ...). No credentials in the image: DVC remotes get
# theirs at run time (environment, mounted file); .dockerignore keeps secret files out of the build context.
ENV PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_WORKER_WEBSERVER_HOST=127.0.0.1 PREFECT_RUNNER_SERVER_HOST=127.0.0.1
RUN apt-get update && apt-get install -y --no-install-recommends python3 python3-pip python3-venv git \
    && rm -rf /var/lib/apt/lists/*

# Non-root: stages write only under the mounted work tree and $HOME caches.
RUN useradd --create-home --uid 1000 srppo
WORKDIR /opt/srppo
COPY pyproject.toml README.md ./
COPY srppo ./srppo
# On Linux x86_64 the registry's torch==2.13.0 wheel is the CUDA build: the same pin serves CPU and GPU.
RUN python3 -m pip install ".[test,orchestration]"
COPY stages ./stages
COPY flows ./flows
COPY configs ./configs
# Prefect workers clone the repository into /work; `dvc exp save` needs a git identity.
RUN mkdir -p /work && chown srppo:srppo /work \
    && git config --system user.name "srppo worker" && git config --system user.email srppo-worker@localhost
USER srppo
WORKDIR /work
CMD ["dvc", "repro"]
