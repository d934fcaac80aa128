#!/usr/bin/env bash
# Set up and run every test, as root on Debian 12: install the system
# packages, start the local registries and push the test images, then run
# the unit tests and the end-to-end tests against real crustd processes.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."

"$here/install-deps.sh"
"$here/test-images.sh"
export CRUST_TEST_IMAGES_JSON=${CRUST_TEST_IMAGES_JSON:-/var/tmp/crust-registry/images.json}

cargo fmt --all -- --check
cargo clippy --locked --workspace --all-targets -- -D warnings
cargo test --locked --workspace
