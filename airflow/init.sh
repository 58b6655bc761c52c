#!/bin/bash
# One-shot `airflow-init`: runs as root before any other Airflow service, then exits 0.
#  1. logs/ and auth/ volumes owned by uid 50000 (a root-owned logs dir crash-loops the
#     dag-processor while the other services look healthy);
#  2. the simple auth manager's password file from .env, so the admin password is the one the
#     README gives instead of a random one printed in a log (the api-server opens it for
#     writing, hence owned by 50000 and writable);
#  3. the secrets every Airflow service shares (JWT signing secret, api secret key, Fernet key),
#     generated once into the auth volume and kept across restarts: never committed, so nobody
#     else knows them (a known JWT secret lets anyone sign an admin token);
#  4. `airflow db migrate` (idempotent: a no-op on an up-to-date database).
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

# Each secret once: a new one at every start would invalidate tokens, and a new Fernet key would
# make what Airflow encrypted in its DB unreadable.
auth_dir="$(dirname "${passwords_file}")"
python - "${auth_dir}" <<'PY'
import base64, os, secrets, sys
from pathlib import Path

makers = {
    "jwt_secret": lambda: secrets.token_urlsafe(64),
    "api_secret_key": lambda: secrets.token_urlsafe(48),
    "fernet_key": lambda: base64.urlsafe_b64encode(os.urandom(32)).decode(),
}
for name, make in makers.items():
    path = Path(sys.argv[1]) / name
    if not path.exists() or not path.read_text().strip():
        path.write_text(make())
        print(f"airflow-init: generated {path}")
    path.chmod(0o640)
PY

echo "airflow-init: migrating the metadata database"
airflow db migrate

chown -R 50000:0 "${AIRFLOW_HOME}/logs" "$(dirname "${passwords_file}")"
chmod -R u+rwX,g+rwX "${AIRFLOW_HOME}/logs" "$(dirname "${passwords_file}")"
chmod 660 "${passwords_file}"
chmod 640 "${auth_dir}/jwt_secret" "${auth_dir}/api_secret_key" "${auth_dir}/fernet_key"
echo "airflow-init: done (user ${AIRFLOW_USERNAME}, logs and auth owned by 50000:0)"
