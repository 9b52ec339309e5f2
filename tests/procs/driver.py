"""The smallest entry point that starts a child through proctree: the fast tests' stand-in for `loraplane serve`.

    python -m tests.procs.driver GRACE ARGV...

Starts ARGV, prints `ready <pid>` and waits. A stop signal stops the child as the entry points do (SIGTERM to
it, GRACE seconds, SIGKILL to its tree) and exits 128 + the signal; a second one forces (proctree).
"""

from __future__ import annotations

import sys
import threading

from loraplane.serving import proctree


def main() -> int:
    grace, argv = float(sys.argv[1]), sys.argv[2:]
    child = proctree.spawn(argv, name="child")
    try:
        print(f"ready {child.pid}", flush=True)
        threading.Event().wait()
    finally:
        proctree.stop(child, grace)
    return 0


if __name__ == "__main__":
    sys.exit(proctree.entry_point(main))
