"""The inference service: FastAPI serving ``models:/covertype@production`` from the MLflow registry.

``inference.app:create_app`` builds the app (``uvicorn --factory inference.app:create_app``).
"""

import os

# Native thread pools (OpenMP, BLAS) default to one thread per core. Set before
# numpy/sklearn load, so a model's threads never compete with request handling
# on a small machine; the app also applies threadpoolctl limits at start-up.
for _variable in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):
    os.environ.setdefault(_variable, "1")
