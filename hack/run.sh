#!/usr/bin/env bash
# Set up and run crustd with the default config, as root on Debian 12:
# install the system packages, build release binaries, install them into
# /usr/local/bin, then run crustd in the foreground (Ctrl-C stops it).
# Extra arguments go to crustd, e.g. hack/run.sh --log-format json.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
cd "$here/.."

"$here/install-deps.sh"
cargo build --release --locked --bins
install -m 0755 target/release/crustd /usr/local/bin/crustd
for extra in target/release/crust-shim; do
  # Binaries of later components are installed as they appear.
  [[ -x $extra ]] && install -m 0755 "$extra" /usr/local/bin/
done
exec /usr/local/bin/crustd "$@"
