#!/usr/bin/env python3
"""Build crust's node installer image offline and push it to a registry.

Usage: hack/build-installer-image.py [REGISTRY_HOST:PORT] [--bin DIR]
                                     [--version V] [--kubectl PATH]

The image (REGISTRY/crust/installer:VERSION) is what the chart's DaemonSet
runs (charts/crust): Debian's static busybox as its userland, and in
/crust-installer the installer (installer/install.sh, the entrypoint),
the unit (packaging/crust.service), crustd and crust-shim from --bin
(default target/release), kubectl when --kubectl names one (node labels,
drain), plus systemctl, all with the shared libraries they load, from this
host: systemctl talks to the node's systemd over its private socket.
Layers are built the way hack/build-test-images.py builds the test images
(same code, deterministic), so a rebuild of the same inputs has the same
digest.
"""

import argparse
import importlib.util
import os
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
REPO = os.path.dirname(HERE)

sys.dont_write_bytecode = True  # no __pycache__ in hack/
spec = importlib.util.spec_from_file_location(
    "test_images", os.path.join(HERE, "build-test-images.py"))
images = importlib.util.module_from_spec(spec)
spec.loader.exec_module(images)
entry = images.entry


def read(path):
    with open(path, "rb") as f:
        return f.read()


def shared_libraries(binary):
    """The absolute paths ldd resolves for `binary` (the loader included)."""
    out = subprocess.run(["ldd", binary], capture_output=True, text=True)
    if out.returncode != 0:  # a static binary
        return []
    libs = []
    for line in out.stdout.splitlines():
        parts = line.split()
        for p in parts:
            if p.startswith("/"):
                libs.append(p)
                break
    return libs


def add_file(files, src, dst, mode=None):
    """`src` at image path `dst`, and the directories above it."""
    dst = dst.lstrip("/")
    real = os.path.realpath(src)
    files[dst] = entry(dst, data=read(real),
                       mode=mode if mode is not None else os.stat(real).st_mode & 0o7777)
    parent = os.path.dirname(dst)
    while parent:
        files.setdefault(parent, entry(parent, "dir"))
        parent = os.path.dirname(parent)


def installer_layer(bin_dir, kubectl):
    files = {}
    add_file(files, os.path.join(REPO, "installer/install.sh"), "crust-installer/install.sh", 0o755)
    add_file(files, os.path.join(REPO, "packaging/crust.service"), "crust-installer/crust.service", 0o644)
    binaries = [(os.path.join(bin_dir, b), f"crust-installer/bin/{b}") for b in ("crustd", "crust-shim")]
    if kubectl:
        binaries.append((kubectl, "crust-installer/bin/kubectl"))
    binaries.append(("/bin/systemctl", "usr/bin/systemctl"))
    for src, dst in binaries:
        if not os.path.exists(src):
            sys.exit(f"build-installer-image: {src} is missing")
        add_file(files, src, dst, 0o755)
        for lib in shared_libraries(src):
            # Debian's merged /usr: ldd names /lib/..., the file is in
            # /usr/lib/...; the image has the file and a link at ldd's path.
            real = os.path.realpath(lib)
            add_file(files, real, real)
            if lib != real:
                path = lib.lstrip("/")
                files[path] = entry(path, "symlink", link=real)
                parent = os.path.dirname(path)
                while parent:
                    files.setdefault(parent, entry(parent, "dir"))
                    parent = os.path.dirname(parent)
    files.setdefault("crust-installer/config.d", entry("crust-installer/config.d", "dir"))
    return images.Layer(list(files.values()), "gzip", "crust installer")


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("registry", nargs="?", default="127.0.0.1:5099")
    ap.add_argument("--bin", default=os.path.join(REPO, "target/release"),
                    help="where crustd and crust-shim are (default target/release)")
    ap.add_argument("--version", default="0.1.0")
    tools = os.environ.get("CRUST_CHART_TOOLS", "/var/tmp/crust-chart-tools")
    kubectl = os.path.join(tools, "bin/kubectl")
    ap.add_argument("--kubectl", default=kubectl if os.path.exists(kubectl) else None,
                    help="a static kubectl to include (default: hack/install-chart-tools.sh's)")
    ap.add_argument("--strip", action="store_true",
                    help="strip crustd and crust-shim first (for debug builds)")
    args = ap.parse_args()
    if args.strip:
        stripped = tempfile.mkdtemp(prefix="crust-installer-")
        for b in ("crustd", "crust-shim"):
            subprocess.run(["strip", "--strip-unneeded", "-o", os.path.join(stripped, b),
                            os.path.join(args.bin, b)], check=True)
        args.bin = stripped

    busybox = images.Layer(images.busybox_rootfs(), "gzip", "busybox")
    image = images.Image([busybox, installer_layer(args.bin, args.kubectl)], config={
        "Entrypoint": ["/crust-installer/install.sh"],
        "Cmd": ["daemon"],
        "Env": [images.ENV_PATH, f"CRUST_VERSION={args.version}"],
        "Labels": {"org.opencontainers.image.title": "crust node installer",
                   "org.opencontainers.image.version": args.version},
    })
    images.push_all(args.registry, {f"crust/installer:{args.version}": image})


if __name__ == "__main__":
    main()
