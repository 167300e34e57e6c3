#!/usr/bin/env bash
# Point DVC's default remote at an S3 bucket (AWS, MinIO, Ceph, or a local moto_server for testing).
#   infra/dvc/s3-remote.sh s3://my-bucket/lmpipe [http://127.0.0.1:9000]
# Credentials come from the usual AWS variables/profiles; they are never written to .dvc/config.
set -euo pipefail
url=${1:?usage: $0 s3://bucket/prefix [endpoint-url]}
dvc remote add --force --default store "$url"
if [ -n "${2:-}" ]; then dvc remote modify store endpointurl "$2"; fi
echo "DVC remote 'store' -> $url ${2:+(endpoint $2)}. Now: dvc push / dvc pull"
