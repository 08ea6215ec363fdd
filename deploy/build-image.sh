#!/usr/bin/env bash
# Build the container image, start it, and wait until Docker reports it
# healthy (its HEALTHCHECK probes /healthz). Needs a Docker daemon that can
# pull python:3.12-slim; CI does not run this (tests/test_deploy.py runs the
# image's entry point with the image's environment instead).
set -euo pipefail
cd "$(dirname "$0")/.."
tag=${1:-mllp-trio:local}
docker build -q -t "$tag" .
certs=$(mktemp -d)
trap 'docker rm -f mllp-trio-probe >/dev/null 2>&1 || true; rm -rf "$certs"' EXIT
docker run --rm --user "$(id -u):$(id -g)" -v "$certs:/out" --entrypoint mllp-trio "$tag" \
    certs /out >/dev/null
chmod -R a+rX "$certs"  # the image runs as its own user
docker run -d --name mllp-trio-probe -v "$certs:/certs:ro" "$tag" >/dev/null
for _ in $(seq 60); do
    status=$(docker inspect -f '{{.State.Health.Status}}' mllp-trio-probe)
    if [[ $status == healthy ]]; then
        echo "image $tag: healthy"
        exit 0
    fi
    sleep 2
done
echo "image $tag: not healthy after 120 s (status: $status); docker logs mllp-trio-probe" >&2
docker logs mllp-trio-probe >&2 || true
exit 1
