"""`loraplane-operator`: run the kopf operator with typed settings."""

from __future__ import annotations

import asyncio
import logging

import kopf

from loraplane.operator import handlers
from loraplane.operator.settings import OperatorSettings

logger = logging.getLogger(__name__)


def main() -> None:
    """Load settings once, then hand over to kopf (liveness probe, peering, handlers)."""
    cfg = OperatorSettings()
    kopf.configure(verbose=False, log_format=kopf.LogFormat.JSON if cfg.log_format == "json" else kopf.LogFormat.FULL)
    logger.info("loraplane operator starting: namespaces=%s priority=%s", cfg.namespaces or "*", cfg.priority)
    asyncio.run(
        kopf.operator(
            clusterwide=not cfg.namespaces,
            namespaces=cfg.namespaces,
            liveness_endpoint=cfg.liveness_endpoint,
            peering_name=cfg.peering_name,
            priority=cfg.priority,
            memo=kopf.Memo({handlers.SETTINGS_KEY: cfg}),
        )
    )


if __name__ == "__main__":
    main()
