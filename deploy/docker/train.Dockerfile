# syntax=docker/dockerfile:1
# A training worker: codefoundry with CUDA torch, started by torchrun (DDP/FSDP2 over NCCL;
# gloo on CPU-only nodes). One image for every node of a multi-node job.
#
#   docker build -f deploy/docker/train.Dockerfile -t codefoundry-train:0.1.0 .
#   docker run --gpus all -v "$PWD/work:/work" codefoundry-train:0.1.0 \
#     torchrun --standalone --nproc-per-node 1 -m codefoundry train --tokens /work/tokens \
#     --tokenizer /work/tokenizer --out /work/model --max-time 10m

ARG PYTHON_IMAGE=python:3.11.14-slim-bookworm

FROM ${PYTHON_IMAGE} AS build
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1
WORKDIR /src
COPY pyproject.toml README.md ./
COPY src ./src
RUN python -m venv /opt/codefoundry \
    && /opt/codefoundry/bin/pip install torch==2.13.0 \
    && /opt/codefoundry/bin/pip install /src

FROM ${PYTHON_IMAGE} AS train
# DL3064 reads TOKENIZERS_PARALLELISM as a secret ("TOKEN"); it is a switch, and no secret goes in ENV
# hadolint ignore=DL3064
ENV PATH=/opt/codefoundry/bin:$PATH \
    PYTHONUNBUFFERED=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false \
    NVIDIA_VISIBLE_DEVICES=all \
    NVIDIA_DRIVER_CAPABILITIES=compute,utility \
    HOME=/home/codefoundry
RUN groupadd --gid 10001 codefoundry \
    && useradd --uid 10001 --gid 10001 --create-home --home-dir /home/codefoundry codefoundry \
    && mkdir -p /work && chown 10001:10001 /work
COPY --from=build /opt/codefoundry /opt/codefoundry
USER 10001:10001
WORKDIR /work
# rendezvous (c10d) port of torchrun on the first node
EXPOSE 29500
# no CMD: the Job or PyTorchJob gives the torchrun command line
