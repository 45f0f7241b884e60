"""``python -m graphc.sweep.worker PAYLOAD``: one worker process of ``graphc sweep --workers N``.

PAYLOAD is the JSON the parent wrote (settings, worker index, trial quota, timeout); an RDB
storage URL comes in ``GRAPHC_SWEEP_STORAGE`` so that no password shows in ``ps``.
"""

from __future__ import annotations

import json
import os
import sys

from graphc.errors import GraphcError
from graphc.sweep.study import Settings, run_worker


def main(argv: list[str]) -> int:
    payload = json.loads(argv[0])
    st = Settings(**{**payload["settings"], "storage": os.environ.get("GRAPHC_SWEEP_STORAGE") or None})
    try:
        run_worker(st, int(payload["index"]), int(payload["quota"]), payload["timeout"])
    except GraphcError as e:
        print(e, file=sys.stderr)
        return e.exit_code
    except KeyboardInterrupt:
        return 130
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
