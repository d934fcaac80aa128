#!/usr/bin/env bash
# Start the local test registries and push crust's test images to them:
# all images to 127.0.0.1:5099, busybox:latest also to the auth one on :5098.
# Writes digests/layers/sizes as JSON to ${CRUST_TEST_IMAGES_JSON:-$STATE/images.json}.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
state=${CRUST_REGISTRY_DIR:-/var/tmp/crust-registry}
out=${CRUST_TEST_IMAGES_JSON:-$state/images.json}

"$here/registry.sh" start
mkdir -p "$(dirname "$out")"
python3 "$here/build-test-images.py" 127.0.0.1:5099 --auth-registry 127.0.0.1:5098 --out "$out"
echo "test images: $out"
