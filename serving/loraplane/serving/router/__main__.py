"""`python -m loraplane.serving.router`: run the router (settings from LORAPLANE_ROUTER_*)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from loraplane.serving.router import RouterSettings, create_app
from loraplane.serving.router.server import uvicorn_config


def main() -> int:
    settings = RouterSettings()
    fmt = "%(message)s" if settings.log_format == "json" else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, stream=sys.stderr)
    if not settings.access_log:
        logging.getLogger("loraplane.router.access").setLevel(logging.WARNING)
    uvicorn.Server(uvicorn_config(create_app(settings), settings.host, settings.port)).run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
