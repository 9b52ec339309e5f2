"""`python -m loraplane.serving.agent`: run the adapter agent next to vLLM (settings from LORAPLANE_AGENT_*)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from loraplane.serving.agent.app import create_app
from loraplane.serving.agent.settings import AgentSettings


def main() -> int:
    settings = AgentSettings()
    fmt = "%(message)s" if settings.log_format == "json" else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, stream=sys.stderr)
    uvicorn.run(create_app(settings), host=settings.host, port=settings.port, log_level="warning", access_log=False)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
