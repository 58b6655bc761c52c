#!/bin/bash
# One-shot `airflow-init`: runs as root before any other Airflow service, then exits 0.
#  1. logs/ and auth/ volumes owned by uid 50000 (a root-owned logs dir crash-loops the
#     dag-processor while the other services look healthy);
#  2. the simple auth manager's password file from .env, so the admin password is the one the
#     README gives instead of a random one printed in a log (the api-server opens it for
#     writing, hence owned by 50000 and writable);
#  3. `airflow db migrate` (idempotent: a no-op on an up-to-date database).
set -euo pipefail

: "${AIRFLOW_HOME:?}"
: "${AIRFLOW_USERNAME:?set AIRFLOW_USERNAME in .env}"
: "${AIRFLOW_PASSWORD:?set AIRFLOW_PASSWORD in .env}"
: "${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE:?}"

passwords_file="${AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE}"
mkdir -p "${AIRFLOW_HOME}/logs" "$(dirname "${passwords_file}")"

# JSON written by Python so any character in the password is escaped correctly.
python - "${passwords_file}" <<'PY'
import json, os, sys
with open(sys.argv[1], "w", encoding="utf-8") as fh:
    json.dump({os.environ["AIRFLOW_USERNAME"]: os.environ["AIRFLOW_PASSWORD"]}, fh)
PY

echo "airflow-init: migrating the metadata database"
airflow db migrate

chown -R 50000:0 "${AIRFLOW_HOME}/logs" "$(dirname "${passwords_file}")"
chmod -R u+rwX,g+rwX "${AIRFLOW_HOME}/logs" "$(dirname "${passwords_file}")"
chmod 660 "${passwords_file}"
echo "airflow-init: done (user ${AIRFLOW_USERNAME}, logs and auth owned by 50000:0)"
