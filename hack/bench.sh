#!/usr/bin/env bash
# Benchmarks (figures, not pass/fail): hack/bench.sh [pull|pods|exec|scale|vs_containerd|soak ...]
# Needs the test registry and images (hack/test-images.sh), as root.
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."
"$here/test-images.sh" >/dev/null
for bench in "${@:-pull}"; do
  cargo bench --locked -p crust-e2e --bench "$bench"
done
