"""One-shot: make sure the MLflow artifact bucket exists, then exit 0.

Runs as the ``minio-init`` compose service from the mlflow image (which already has boto3),
so the stack needs no separate MinIO client image. Idempotent: an existing bucket is fine, so
``docker compose up`` can run it on every start. Any other failure exits non-zero, which keeps
``mlflow`` (``depends_on: service_completed_successfully``) from starting against a store it
could not write to.
"""

from __future__ import annotations

import os
import sys
import time

import boto3
from botocore.config import Config
from botocore.exceptions import ClientError, EndpointConnectionError

ATTEMPTS = 30
DELAY_S = 2.0


def _required(name: str) -> str:
    value = os.environ.get(name, "").strip()
    if not value:
        sys.exit(f"minio-init: environment variable {name} is not set (see .env)")
    return value


def ensure_bucket(endpoint: str, bucket: str, access_key: str, secret_key: str) -> str:
    """Create ``bucket`` unless it exists; return what happened, for the log."""
    s3 = boto3.client(
        "s3",
        endpoint_url=endpoint,
        aws_access_key_id=access_key,
        aws_secret_access_key=secret_key,
        region_name="us-east-1",
        config=Config(s3={"addressing_style": "path"}, retries={"max_attempts": 3}),
    )
    existing = {b["Name"] for b in s3.list_buckets().get("Buckets", [])}
    if bucket in existing:
        return "exists"
    try:
        s3.create_bucket(Bucket=bucket)
    except ClientError as exc:
        # Another init racing us (or a restart mid-way) is not an error.
        if exc.response.get("Error", {}).get("Code") in {"BucketAlreadyOwnedByYou", "BucketAlreadyExists"}:
            return "exists"
        raise
    return "created"


def main() -> int:
    endpoint = _required("MLFLOW_S3_ENDPOINT_URL")
    bucket = _required("MINIO_BUCKET")
    access_key = _required("AWS_ACCESS_KEY_ID")
    secret_key = _required("AWS_SECRET_ACCESS_KEY")
    # MinIO is healthy before this runs (depends_on), but a short retry covers a slow first answer.
    for attempt in range(1, ATTEMPTS + 1):
        try:
            outcome = ensure_bucket(endpoint, bucket, access_key, secret_key)
        except EndpointConnectionError as exc:
            if attempt == ATTEMPTS:
                print(f"minio-init: {endpoint} unreachable after {ATTEMPTS} attempts: {exc}", file=sys.stderr)
                return 1
            time.sleep(DELAY_S)
            continue
        print(f"minio-init: bucket {bucket!r} {outcome} at {endpoint}")
        return 0
    return 1


if __name__ == "__main__":
    sys.exit(main())
