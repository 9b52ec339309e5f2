"""`python -m loraplane.trainer.fetch`: put a ModelServer's base model into the cache before vLLM starts.

Runs as the init container `fetch-model` of every vLLM pod (in the trainer image: it has the hub clients
and the GGUF dequantizer). Reads its input from the environment the operator sets
(:class:`loraplane.api.trainer_spec.FetchEnv`): the base model as JSON, the cache directory, where pvc://
claims are mounted, and the hub token (through the kubelet, from a Secret).

Invariant: `<cache>/model` is replaced atomically (a symlink renamed into place), so vLLM always finds
either the previous checkpoint or the new one, never a half-written link. Failures exit with the
trainer's documented exit codes (:mod:`loraplane.api.exit_codes`), with the message on stderr.
"""

from __future__ import annotations

import logging
import os
import sys
from collections.abc import Mapping
from pathlib import Path

from loraplane.api.common import ModelSource
from loraplane.api.exit_codes import ExitCode
from loraplane.api.trainer_spec import HUB_TOKEN_ENV, FetchEnv
from loraplane.trainer.errors import TrainerError
from loraplane.trainer.models import ResolvedModel, resolve_model

logger = logging.getLogger(__name__)

MODEL_LINK = "model"  # <cache>/model -> the checkpoint vLLM serves


def link_model(cache: Path, checkpoint: Path) -> Path:
    """Point `<cache>/model` at `checkpoint`, atomically; returns the link."""
    link = cache / MODEL_LINK
    tmp = cache / f"{MODEL_LINK}.{os.getpid()}"
    tmp.unlink(missing_ok=True)
    tmp.symlink_to(checkpoint)
    tmp.replace(link)
    return link


def fetch(env: Mapping[str, str]) -> ResolvedModel:
    """Resolve the base model the environment names into the cache and link `<cache>/model` to it."""
    source = ModelSource.model_validate_json(env[FetchEnv.BASE_MODEL])
    cache = Path(env[FetchEnv.CACHE_DIR])
    model = resolve_model(source, cache_dir=cache, pvc_root=Path(env[FetchEnv.PVC_ROOT]), token=env.get(HUB_TOKEN_ENV))
    link_model(cache, model.path)
    return model


def main() -> int:
    logging.basicConfig(level=logging.INFO, format="%(levelname)s %(name)s: %(message)s")
    try:
        model = fetch(os.environ)
    except TrainerError as exc:
        logger.error("cannot fetch the base model: %s", exc)
        return int(exc.code)
    except KeyError as exc:
        logger.error("missing environment variable %s (set by the operator)", exc)
        return int(ExitCode.INVALID_SPEC)
    logger.info("base model %s -> %s", model.uri, model.path)
    return int(ExitCode.SUCCESS)


if __name__ == "__main__":
    sys.exit(main())
