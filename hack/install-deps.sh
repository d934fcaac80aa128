#!/usr/bin/env bash
# Install the system packages crust's build and tests need (Debian 12, as root).
# Safe to run any number of times: apt is not touched when everything is present.
set -euo pipefail

packages=(
  protobuf-compiler            # protoc, for the crates' build scripts
  libseccomp-dev pkg-config    # seccomp filters in crust-shim
  docker-registry              # local OCI registry for pull tests (hack/registry.sh)
  containernetworking-plugins  # CNI plugins (bridge, host-local, loopback, portmap)
  busybox-static               # the test images' userland (hack/build-test-images.py)
  iptables iproute2 nftables   # CNI portmap/bridge, netns inspection and cleanup in tests
  attr                         # getfattr: tests check overlay xattrs
  containerd                   # a real shim v2 peer: crust-shim runs under ctr run
  zstd                         # zstd layers in the test images
  apache2-utils                # htpasswd, for the auth registry
  curl jq python3 util-linux   # scripts: HTTP probes, JSON, image builder, nsenter/unshare
  python3-venv                 # the grpcio venv below
  systemd dbus                 # a real systemd booted in a sandbox (hack/systemd-sandbox.sh)
  dpkg-dev lintian             # hack/package.sh builds and checks the .deb
)

if [[ $(id -u) -ne 0 ]]; then
  echo "install-deps.sh: must run as root" >&2
  exit 1
fi

# A package counts as present only when dpkg says "install ok installed".
missing=()
for p in "${packages[@]}"; do
  status=$(dpkg-query -W -f='${Status}' "$p" 2>/dev/null || true)
  [[ $status == "install ok installed" ]] || missing+=("$p")
done

if [[ ${#missing[@]} -eq 0 ]]; then
  echo "install-deps.sh: all ${#packages[@]} packages already installed"
else
  echo "install-deps.sh: installing ${missing[*]}"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  # The docker-registry package ships a service on :5000. Without systemd it
  # does not start; if it does, it is harmless: our registries use 5098/5099.
  apt-get install -y --no-install-recommends "${missing[@]}"
fi

# A gRPC C-core client for e2e/tests/cri_137.rs: grpcio from PyPI, pinned.
# Debian's python3-grpcio (1.51) is too old to show the bug the test guards
# (C-core sends the percent-encoded socket path as :authority since ~1.6x).
grpcio_version=1.85.3
grpcio_venv=/var/tmp/crust-grpcio
if ! "$grpcio_venv/bin/python" -c "import grpc, sys; sys.exit(grpc.__version__ != '$grpcio_version')" 2>/dev/null; then
  echo "install-deps.sh: installing grpcio $grpcio_version into $grpcio_venv"
  rm -rf "$grpcio_venv"
  /usr/bin/python3 -m venv "$grpcio_venv"
  "$grpcio_venv/bin/pip" install --quiet "grpcio==$grpcio_version"
fi

# Helm, kubectl, kubernetes-validate and shellcheck for the chart's tests.
"$(dirname "$0")/install-chart-tools.sh"
