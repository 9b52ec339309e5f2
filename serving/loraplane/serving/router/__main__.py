"""`python -m loraplane.serving.router`: run the router with uvicorn (settings from LORAPLANE_ROUTER_*)."""

from __future__ import annotations

import logging
import sys

import uvicorn

from loraplane.serving.router import RouterSettings, create_app


def main() -> int:
    settings = RouterSettings()
    fmt = "%(message)s" if settings.log_format == "json" else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, stream=sys.stderr)
    if not settings.access_log:
        logging.getLogger("loraplane.router.access").setLevel(logging.WARNING)
    uvicorn.run(
        create_app(settings),
        host=settings.host,
        port=settings.port,
        loop="uvloop",
        http="httptools",
        access_log=False,
        log_level="warning",
        proxy_headers=False,  # nothing reads the client address; saves a middleware hop per request
        server_header=False,
    )
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
