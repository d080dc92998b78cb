# syntax=docker/dockerfile:1
# codefoundry serve on CPU: the TGI/OpenAI server, run as a non-root user.
#
#   docker build -f deploy/docker/serve-cpu.Dockerfile -t codefoundry-serve-cpu:0.1.0 .
#   docker run -p 8080:8080 -v "$PWD/model:/models/model:ro" codefoundry-serve-cpu:0.1.0
#
# The model baked into the image instead of mounted: give BuildKit a named context "model"
#   docker buildx build -f deploy/docker/serve-cpu.Dockerfile --build-context model=path/to/model \
#     -t codefoundry-serve-cpu-mymodel:0.1.0 .

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

# Empty unless `--build-context model=DIR` replaces it (then DIR is baked in at /models/model)
FROM scratch AS model

FROM ${PYTHON_IMAGE} AS build
# torch's CPU-only wheels: the default Linux wheel pulls in about 3 GB of CUDA libraries
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/codefoundry \
    && /opt/codefoundry/bin/pip install --extra-index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
    && /opt/codefoundry/bin/pip install /src

FROM ${PYTHON_IMAGE} AS serve
# DL3064 reads TOKENIZERS_PARALLELISM as a secret ("TOKEN"); it is a switch, and no secret goes in ENV
# hadolint ignore=DL3064
ENV PATH=/opt/codefoundry/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    HOME=/home/codefoundry \
    CODEFOUNDRY_CACHE=/home/codefoundry/.cache/codefoundry
RUN groupadd --gid 10001 codefoundry \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/codefoundry codefoundry \
    && mkdir -p /models /home/codefoundry/.cache/codefoundry \
    && chown -R 10001:10001 /home/codefoundry
COPY --from=build /opt/codefoundry /opt/codefoundry
USER 10001:10001
WORKDIR /home/codefoundry
EXPOSE 8080
# /health answers 200 only once the model is loaded and warmed up (the port opens after warmup)
HEALTHCHECK --start-period=120s --interval=10s --timeout=3s \
    CMD ["python", "-c", "import sys, urllib.request; sys.exit(urllib.request.urlopen('http://127.0.0.1:8080/health', timeout=2).status != 200)"]
COPY --from=model --chown=10001:10001 . /models/model
ENTRYPOINT ["codefoundry", "serve"]
CMD ["--model", "/models/model", "--host", "0.0.0.0", "--port", "8080"]
