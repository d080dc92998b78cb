# syntax=docker/dockerfile:1
# A Ray node for `codefoundry data curate --executor ray`: KubeRay's head and workers and the
# RayJob submitter all run this image. Ray's own image brings what KubeRay expects (the `ray`
# CLI with its dashboard for job submission, wget for the probes) and its non-root user `ray`;
# codefoundry goes on top with CPU-only torch. Ray must be the same version on every node
# and in the driver, hence the tag below matches the pin.
#
#   docker build -f deploy/docker/curate-ray.Dockerfile -t codefoundry-curate-ray:0.1.0 .

ARG RAY_IMAGE=rayproject/ray:2.60.0-py311-cpu

FROM ${RAY_IMAGE}
ARG TORCH_INDEX_URL=https://download.pytorch.org/whl/cpu
# DL3064 reads TOKENIZERS_PARALLELISM as a secret ("TOKEN"); it is a switch, and no secret goes in ENV
# hadolint ignore=DL3064
ENV PIP_NO_CACHE_DIR=1 PIP_DISABLE_PIP_VERSION_CHECK=1 \
    HF_HUB_OFFLINE=1 \
    TOKENIZERS_PARALLELISM=false
WORKDIR /tmp/codefoundry-src
COPY --chown=1000:100 pyproject.toml README.md ./
COPY --chown=1000:100 src ./src
RUN pip install --extra-index-url "${TORCH_INDEX_URL}" torch==2.13.0 \
    && pip install "/tmp/codefoundry-src[ray]" \
    && rm -rf /tmp/codefoundry-src
USER 1000
WORKDIR /home/ray
