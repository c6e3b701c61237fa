# GPU image for pipeline stages and Prefect workers: the stages (torch, DeepSpeed, CUDA vLLM) and the
# orchestration (Prefect, DVC) in one environment, for the paper presets (docs/scale-out.md).
#   docker build -t srppo .
#   docker run --gpus all -v $PWD:/work srppo dvc repro
# The CUDA libraries come with the PyPI wheels (torch's nvidia-* packages); the host needs an NVIDIA driver and
# the container toolkit. Python 3.11: the version the requirement set was resolved for (docs/gpu-image-resolve.md).
FROM python:3.11-slim-bookworm

ENV DEBIAN_FRONTEND=noninteractive PYTHONUNBUFFERED=1 PIP_NO_CACHE_DIR=1
# Prefect's servers listen on loopback unless a container is started with another host on purpose
# (docker run -e PREFECT_WORKER_WEBSERVER_HOST=0.0.0.0 ...). No credentials in the image: DVC remotes get
# theirs at run time (environment, mounted file); .dockerignore keeps secret files out of the build context.
ENV PREFECT_SERVER_API_HOST=127.0.0.1 PREFECT_WORKER_WEBSERVER_HOST=127.0.0.1 PREFECT_RUNNER_SERVER_HOST=127.0.0.1
# g++: DeepSpeed compiles its CPU Adam the first time zero3_offload.json uses it
RUN apt-get update && apt-get install -y --no-install-recommends git g++ \
    && rm -rf /var/lib/apt/lists/*

# Non-root: stages write only under the mounted work tree and $HOME caches.
RUN useradd --create-home --uid 1000 srppo
WORKDIR /opt/srppo
COPY pyproject.toml README.md ./
COPY requirements ./requirements
COPY srppo ./srppo
# On Linux x86_64 the registry's torch==2.13.0 wheel is the CUDA build: the same pin serves CPU and GPU.
# DeepSpeed builds from its sdist against the installed torch. vLLM goes in without its dependencies and then
# its own requirements, less the FastAPI pin that excludes Prefect's (requirements/vllm-cuda.txt: why, and
# docs/gpu-image-resolve.md: pip's resolver on this set).
RUN python3 -m pip install torch==2.13.0 \
    && python3 -m pip install --no-build-isolation deepspeed==0.19.8 \
    && python3 -m pip install ".[test,orchestration,deepspeed]" \
    && python3 -m pip install --no-deps vllm==0.32.0 \
    && python3 -m pip install -r requirements/vllm-cuda.txt
COPY stages ./stages
COPY flows ./flows
COPY configs ./configs
# Prefect workers clone the repository into /work; `dvc exp save` needs a git identity.
RUN mkdir -p /work && chown srppo:srppo /work \
    && git config --system user.name "srppo worker" && git config --system user.email srppo-worker@localhost
USER srppo
WORKDIR /work
CMD ["dvc", "repro"]
