"""The inference service: FastAPI serving ``models:/covertype@production`` from the MLflow registry.

``inference.app:create_app`` builds the app (``uvicorn --factory inference.app:create_app``).
"""

import os

# Native thread pools (OpenMP, BLAS) default to one thread per core. Set before
# numpy/sklearn load, so a model's threads never compete with request handling
# on a small machine; the app also applies threadpoolctl limits at start-up.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")

# MLflow retries an HTTP call 7 times with back-off, each waiting up to 120 s: minutes before a registry that is
# down or hangs is reported (and before a POST /model/reload sharing that check answers). The image sets the same
# values (inference/Dockerfile); the environment can still choose others.
MLFLOW_HTTP_DEFAULTS = {
    "MLFLOW_HTTP_REQUEST_MAX_RETRIES": "2",
    "MLFLOW_HTTP_REQUEST_BACKOFF_FACTOR": "1",
    "MLFLOW_HTTP_REQUEST_TIMEOUT": "15",
}
for _variable, _value in MLFLOW_HTTP_DEFAULTS.items():
    os.environ.setdefault(_variable, _value)
