"""Container healthcheck of the MLflow server: one real API call, not ``/health``.

``/health`` answers 200 even when the host-header check (MLflow >= 3.5) would reject every
real call, and even before the backend store answers. Searching experiments touches the
backend store through the same route clients use. Compose passes the service-name URL
(``http://mlflow:5000``) so the check also proves ``--allowed-hosts`` accepts ``mlflow:5000``.
"""

from __future__ import annotations

import json
import os
import sys
import urllib.request

BASE_URL = sys.argv[1] if len(sys.argv) > 1 else os.environ.get("MLFLOW_HEALTHCHECK_URL", "http://localhost:5000")
TIMEOUT_S = 5.0


def main() -> int:
    request = urllib.request.Request(
        f"{BASE_URL.rstrip('/')}/api/2.0/mlflow/experiments/search",
        data=json.dumps({"max_results": 1}).encode(),
        headers={"Content-Type": "application/json"},
        method="POST",
    )
    try:
        with urllib.request.urlopen(request, timeout=TIMEOUT_S) as response:
            body = json.load(response)
    except Exception as exc:  # any failure is "unhealthy"; the reason goes to the health log
        print(f"unhealthy: {BASE_URL}: {exc}", file=sys.stderr)
        return 1
    if "experiments" not in body:
        print(f"unhealthy: unexpected answer {body!r}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
