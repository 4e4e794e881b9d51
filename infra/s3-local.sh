#!/usr/bin/env bash
# Start an S3-compatible server on 127.0.0.1 for local runs (moto's server; MinIO in production).
#   infra/s3-local.sh [PORT] [BUCKET]    then paste the printed exports into your shell.
# Stop it with: kill "$(cat .voxclust/s3.pid)"
set -euo pipefail
cd "$(dirname "$0")/.."
PORT=${1:-9000}
BUCKET=${2:-voxclust}
mkdir -p .voxclust
.venv/bin/moto_server -H 127.0.0.1 -p "$PORT" > .voxclust/s3.log 2>&1 &
echo $! > .voxclust/s3.pid
for _ in $(seq 100); do
  (exec 3<>"/dev/tcp/127.0.0.1/$PORT") 2>/dev/null && break
  sleep 0.1
done
export AWS_ENDPOINT_URL="http://127.0.0.1:$PORT" AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
.venv/bin/python -c "import boto3; boto3.client('s3').create_bucket(Bucket='$BUCKET')"
cat <<EOT
# S3 server on http://127.0.0.1:$PORT (pid $(cat .voxclust/s3.pid)), bucket s3://$BUCKET
export AWS_ENDPOINT_URL=http://127.0.0.1:$PORT AWS_ACCESS_KEY_ID=local AWS_SECRET_ACCESS_KEY=local AWS_DEFAULT_REGION=us-east-1
EOT
