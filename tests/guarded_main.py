"""Child process of tests/hostile.py: import first, then bound memory and time ``graphc ARGS``."""

from __future__ import annotations

import json
import os
import resource
import sys
import time


def _mapped_bytes() -> int:
    with open("/proc/self/status") as f:
        for line in f:
            if line.startswith("VmSize:"):
                return int(line.split()[1]) * 1024
    return 0


def main() -> int:
    import graphc.cli

    if os.environ.get("GRAPHC_GUARD_TORCH") == "1":
        import torch  # noqa: F401

    bound = _mapped_bytes() + int(os.environ.get("GRAPHC_GUARD_MEMORY", str(1 << 30)))
    resource.setrlimit(resource.RLIMIT_AS, (bound, bound))
    start = time.perf_counter()
    try:
        code = graphc.cli.main(sys.argv[1:])
    except SystemExit as e:  # argparse usage errors
        code = e.code if isinstance(e.code, int) else (0 if e.code is None else 2)
    finally:
        report = os.environ.get("GRAPHC_GUARD_REPORT")
        if report:
            with open(report, "w") as f:
                json.dump({"seconds": time.perf_counter() - start}, f)
    return code


if __name__ == "__main__":
    sys.exit(main())
