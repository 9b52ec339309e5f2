"""`python -m loraplane.serving.router`: run the router (settings from LORAPLANE_ROUTER_*)."""

from __future__ import annotations

import gc
import logging
import signal
import sys

from loraplane.serving.router import RouterSettings, create_app
from loraplane.serving.router.server import router_server


def main() -> int:
    settings = RouterSettings()
    fmt = "%(message)s" if settings.log_format == "json" else "%(asctime)s %(levelname)s %(name)s: %(message)s"
    logging.basicConfig(level=logging.INFO, format=fmt, stream=sys.stderr)
    if not settings.access_log:
        logging.getLogger("loraplane.router.access").setLevel(logging.WARNING)
    app = create_app(settings)
    # Startup's objects (modules, the app, schemas) leave the garbage collector's view, so a full collection
    # under load no longer walks them (the worst pause it saves: docs/benchmarks.md).
    gc.collect()
    gc.freeze()
    server = router_server(app, settings.host, settings.port)
    # uvicorn drains on SIGINT and SIGTERM; SIGHUP (its terminal closed) drains the same way, unless ignored (nohup)
    if signal.getsignal(signal.SIGHUP) is not signal.SIG_IGN:
        signal.signal(signal.SIGHUP, server.handle_exit)
    server.run()
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
