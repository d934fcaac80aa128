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
install -m 0755 target/release/crust-shim /usr/local/bin/crust-shim

# Pods need a network config; give a fresh node the usual bridge one
# (Debian's plugins live in /usr/lib/cni, which crust searches).
if ! ls /etc/cni/net.d/*.conf /etc/cni/net.d/*.conflist >/dev/null 2>&1; then
  install -d -m 0755 /etc/cni/net.d
  cat > /etc/cni/net.d/10-crust-bridge.conflist <<'CONF'
{
  "cniVersion": "1.0.0",
  "name": "crust",
  "plugins": [
    {"type": "bridge", "bridge": "crust0", "isGateway": true, "ipMasq": true,
     "ipam": {"type": "host-local", "ranges": [[{"subnet": "10.88.0.0/16"}]],
              "routes": [{"dst": "0.0.0.0/0"}]}},
    {"type": "portmap", "capabilities": {"portMappings": true}},
    {"type": "loopback"}
  ]
}
CONF
fi
exec /usr/local/bin/crustd "$@"
