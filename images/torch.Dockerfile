# syntax=docker/dockerfile:1
# The shared Python + torch base of the trainer and vLLM-CPU images: a virtualenv at /opt/loraplane with
# torch and exactly its locked dependencies, in one layer that both images reuse (pulled and unpacked
# once per node).  Non-root user 10001 (`loraplane`).
#
# TORCH_VARIANT:
#   pypi (default; what `make images` builds here)  PyPI's torch 2.13.0, which is the CUDA 13.0 build:
#        it runs on CPU-only nodes and, with an NVIDIA driver >= 580, on GPU nodes (it needs its
#        nvidia-* wheels even to import on a CPU, so they are in the layer, ~2.7 GB).
#   cpu  torch/torchvision/torchaudio "+cpu" builds from PyTorch's CPU index, no nvidia-*/triton
#        (~2.7 GB smaller, CPU only); needs that index.  Pass the same TORCH_VARIANT to the images built
#        on top (vllm-cpu rewrites its torchvision/torchaudio pins the same way).
ARG BASE_IMAGE=python:3.11-slim-bookworm
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE}
ARG TORCH_VARIANT=pypi
ARG UV_CACHE_DIR=/root/.cache/uv
ARG UV_LINK_MODE=copy
ARG UV_PYTHON_DOWNLOADS=never
ARG UV_COMPILE_BYTECODE=1
LABEL io.loraplane.torch-variant=${TORCH_VARIANT}
RUN useradd --uid 10001 --user-group --no-create-home --home-dir /tmp --shell /usr/sbin/nologin loraplane
ENV VIRTUAL_ENV=/opt/loraplane PATH=/opt/loraplane/bin:$PATH PYTHONUNBUFFERED=1 PYTHONDONTWRITEBYTECODE=1
COPY hack/requirements/images/torch.txt /opt/loraplane/requirements/
RUN --mount=from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=cache,id=loraplane-uv,target=/root/.cache/uv,sharing=locked \
    --mount=type=secret,id=cacert \
    set -eu; if [ -s /run/secrets/cacert ]; then export SSL_CERT_FILE=/run/secrets/cacert; fi; \
    req=/opt/loraplane/requirements/torch.txt; set --; \
    case "$TORCH_VARIANT" in \
      pypi) ;; \
      cpu) grep -vE '^(nvidia-|triton==|cuda-)' "$req" \
             | sed -E 's/^(torch|torchvision|torchaudio)==([0-9.]+)$/\1==\2+cpu/' >/tmp/torch-cpu.txt; \
           req=/tmp/torch-cpu.txt; \
           set -- --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match ;; \
      *) echo "TORCH_VARIANT must be pypi or cpu, not '$TORCH_VARIANT'" >&2; exit 2 ;; \
    esac; \
    uv venv --quiet --allow-existing --python python3.11 "$VIRTUAL_ENV"; \
    uv pip install --quiet --no-deps "$@" -r "$req"; rm -f /tmp/torch-cpu.txt; \
    python -c "import torch; assert (torch.ones(2, 2) @ torch.ones(2, 2)).sum().item() == 8.0, torch.__version__"
USER 10001:10001
CMD ["python"]
