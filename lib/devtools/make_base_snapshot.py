"""Build a base snapshot for SANDBOX_BACKEND=vercel: a sandbox with claude-agent-sdk installed,
so new users' sandboxes start from it (SANDBOX_BASE_SNAPSHOT_ID) without installing anything.

    python -m lib.devtools.make_base_snapshot      (with the deployment's environment)

Prints the snapshot id. The snapshot never expires (`expiration=0`) and the sandbox it was taken
from is destroyed. Rebuild it when SANDBOX_AGENT_SDK changes (a sandbox whose marker does not
match installs again on its own); if it is deleted anyway, new sandboxes are created from the
image and install on their first turn (410 snapshot_not_found is logged, not fatal).
"""

from __future__ import annotations

import sys
import time
from dataclasses import replace

from lib.bootstrap import sandbox_backend
from lib.config import Settings
from lib.errors import ServiceError


def main() -> int:
    settings = Settings.from_env()
    if settings.sandbox_backend != "vercel":
        print("set SANDBOX_BACKEND=vercel (and its credentials) to build a base snapshot")
        return 2
    builder = replace(settings, sandbox_base_snapshot_id=None)  # build from the plain image
    backend = sandbox_backend(builder)
    name = f"{settings.sandbox_name_prefix}base-{int(time.time())}"
    try:
        snapshot_id = backend.make_base_snapshot(name)  # type: ignore[attr-defined]
    except ServiceError as error:
        print(f"could not build the base snapshot: {error.message}")
        return 1
    print(f"SANDBOX_BASE_SNAPSHOT_ID={snapshot_id}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
