"""Start the MLflow server after bringing its metadata DB's schema to this MLflow version.

``mlflow server`` creates the tables of an empty database but refuses to start
on an existing one whose schema is older than the installed MLflow ("out-of-date
database schema ... run 'mlflow db upgrade'"). An upgrade of the pinned MLflow
with an existing ``mlflow-db`` volume would otherwise crash-loop the server and
keep every service that waits for it down. Airflow's own DB is migrated by
``airflow-init`` the same way.

The schema step is ``mlflow db upgrade`` (an empty database is created at the
latest schema, an older one migrated, a current one left as it is), run
in-process so the URI and its password stay in the environment
(``MLFLOW_BACKEND_STORE_URI``) rather than on a command line. Then this process
becomes ``mlflow server`` with the arguments it was given.

Usage: ``python /opt/mlflow/serve.py [mlflow server options...]``.
"""

from __future__ import annotations

import logging
import os
import shutil
import sys

from mlflow.db import upgrade

BACKEND_URI_VARIABLE = "MLFLOW_BACKEND_STORE_URI"

log = logging.getLogger("mlflow-serve")


def upgrade_schema(backend_store_uri: str) -> None:
    """``mlflow db upgrade <uri>``: create or migrate the schema; raises if the migration fails."""
    upgrade.main(args=[backend_store_uri], standalone_mode=False)


def main() -> None:
    logging.basicConfig(level=logging.INFO, format="%(asctime)s %(name)s %(levelname)s %(message)s")
    backend_store_uri = os.environ.get(BACKEND_URI_VARIABLE)
    if not backend_store_uri:
        sys.exit(f"{BACKEND_URI_VARIABLE} is not set: the server needs its metadata database")
    log.info("bringing the MLflow database schema up to date (mlflow db upgrade)")
    upgrade_schema(backend_store_uri)
    mlflow_cli = shutil.which("mlflow")
    if mlflow_cli is None:
        sys.exit("the mlflow command is not installed")
    os.execv(mlflow_cli, ["mlflow", "server", *sys.argv[1:]])


if __name__ == "__main__":
    main()
