#!/usr/bin/env python3
"""Build crust's test images from local files and push them to a registry.

Usage: hack/build-test-images.py [REGISTRY_HOST:PORT] [--out FILE]
                                 [--auth-registry HOST:PORT]

Everything is deterministic (fixed mtimes, uid/gid 0, sorted entries, gzip
mtime 0, single-threaded zstd), so every run yields the same digests. Images
are pushed with the registry HTTP API v2 directly: HEAD to skip blobs already
there, monolithic upload (POST then PUT ?digest=), PUT manifests with their
exact media type. Needs Python 3.11 stdlib, the zstd CLI and /bin/busybox
(Debian busybox-static).
"""

import argparse
import base64
import gzip
import hashlib
import random
import io
import json
import platform
import subprocess
import sys
import tarfile
import urllib.error
import urllib.request

MTIME = 1700000000
CREATED = "2023-11-14T22:13:20Z"  # MTIME as RFC 3339
AUTH = ("crust", "crust-secret")  # hack/registry.sh's auth registry
ENV_PATH = "PATH=/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"

OCI_MANIFEST = "application/vnd.oci.image.manifest.v1+json"
OCI_INDEX = "application/vnd.oci.image.index.v1+json"
OCI_CONFIG = "application/vnd.oci.image.config.v1+json"
OCI_TAR = "application/vnd.oci.image.layer.v1.tar"
OCI_GZIP = OCI_TAR + "+gzip"
OCI_ZSTD = OCI_TAR + "+zstd"
DOCKER_MANIFEST = "application/vnd.docker.distribution.manifest.v2+json"
DOCKER_LIST = "application/vnd.docker.distribution.manifest.list.v2+json"
DOCKER_CONFIG = "application/vnd.docker.container.image.v1+json"
DOCKER_GZIP = "application/vnd.docker.image.rootfs.diff.tar.gzip"

# Go's GOARCH names for platform.machine() values.
GOARCH = {"x86_64": "amd64", "amd64": "amd64", "aarch64": "arm64",
          "arm64": "arm64", "armv7l": "arm", "ppc64le": "ppc64le",
          "s390x": "s390x", "riscv64": "riscv64"}
HOST_ARCH = GOARCH.get(platform.machine(), platform.machine())


def sha256(data):
    return "sha256:" + hashlib.sha256(data).hexdigest()


# ---------------------------------------------------------------- tar layers

def entry(path, kind="file", data=b"", mode=None, uid=0, gid=0, link="",
          xattrs=None):
    """One tar member. kind: file, dir, symlink, hardlink."""
    default_mode = {"dir": 0o755, "symlink": 0o777}.get(kind, 0o644)
    return dict(path=path, kind=kind, data=data, uid=uid, gid=gid, link=link,
                mode=default_mode if mode is None else mode,
                xattrs=xattrs or {})


def make_tar(entries):
    """Uncompressed tar bytes, members sorted by path (parents come first)."""
    types = {"file": tarfile.REGTYPE, "dir": tarfile.DIRTYPE,
             "symlink": tarfile.SYMTYPE, "hardlink": tarfile.LNKTYPE}
    buf = io.BytesIO()
    with tarfile.open(fileobj=buf, mode="w", format=tarfile.PAX_FORMAT) as tar:
        for e in sorted(entries, key=lambda e: e["path"]):
            ti = tarfile.TarInfo(e["path"])
            ti.type = types[e["kind"]]
            ti.mode, ti.uid, ti.gid, ti.mtime = e["mode"], e["uid"], e["gid"], MTIME
            ti.linkname = e["link"]
            # xattrs travel as PAX records, the way GNU tar and Docker write them.
            ti.pax_headers = {f"SCHILY.xattr.{k}": v for k, v in e["xattrs"].items()}
            if e["kind"] == "file":
                ti.size = len(e["data"])
                tar.addfile(ti, io.BytesIO(e["data"]))
            else:
                tar.addfile(ti)
    return buf.getvalue()


def compress(tar, how):
    if how == "gzip":
        return gzip.compress(tar, compresslevel=9, mtime=0)
    if how == "zstd":
        return subprocess.run(["zstd", "-q", "-c", "-19", "-T1", "--no-check"],
                              input=tar, capture_output=True, check=True).stdout
    return tar  # uncompressed


class Layer:
    """A layer blob plus what configs and manifests need to say about it."""

    def __init__(self, entries, how, comment):
        tar = make_tar(entries)
        self.blob = compress(tar, how)
        self.how = how
        self.diff_id = sha256(tar)
        self.digest = sha256(self.blob)
        self.comment = comment

    def media_type(self, docker=False):
        if docker:
            assert self.how == "gzip", "Docker schema2 layers here are gzip only"
            return DOCKER_GZIP
        return {"gzip": OCI_GZIP, "zstd": OCI_ZSTD, "none": OCI_TAR}[self.how]


def busybox_rootfs():
    """Debian's static busybox with a link per applet and a minimal /etc."""
    with open("/bin/busybox", "rb") as f:
        busybox = f.read()
    applets = subprocess.run(["/bin/busybox", "--list-full"], capture_output=True,
                             text=True, check=True).stdout.split()
    files = {"bin/busybox": entry("bin/busybox", data=busybox, mode=0o755)}
    for path in applets:  # e.g. usr/bin/wget, bin/sh
        if path != "bin/busybox":
            files[path] = entry(path, "symlink", link="/bin/busybox")
    dirs = {"bin", "dev", "etc", "home", "proc", "root", "sys", "tmp", "var",
            "usr", "usr/bin", "usr/sbin", "sbin"}
    dirs |= {p.rsplit("/", 1)[0] for p in files if "/" in p}
    for d in dirs:
        files[d] = entry(d, "dir")
    files["tmp"] = entry("tmp", "dir", mode=0o1777)
    files["root"] = entry("root", "dir", mode=0o700)
    files["home/crust"] = entry("home/crust", "dir", uid=1000, gid=1000)
    files["etc/passwd"] = entry("etc/passwd", data=(
        b"root:x:0:0:root:/root:/bin/sh\n"
        b"nobody:x:65534:65534:nobody:/nonexistent:/bin/false\n"
        b"crust:x:1000:1000::/home/crust:/bin/sh\n"))
    # "extra" gives user crust a supplementary group (gid 2000).
    files["etc/group"] = entry("etc/group", data=(
        b"root:x:0:\nnogroup:x:65534:\ncrust:x:1000:\nextra:x:2000:crust\n"))
    return list(files.values())


def multilayer_layers():
    """The layers above busybox in crust-test/multilayer:latest.

    Expected final tree under /data (besides busybox's files):
      /data/a.txt            "layer 3: a\\n"  0644 (overwritten by the zstd layer)
      /data/hard             "layer 1: a\\n"  0644 (hardlink made in layer 1; layer 3
                                              replaced a.txt, not the inode)
      /data/link -> a.txt    symlink
      /data/dir1/            0755, holds only keep.txt ("keep\\n"); f was whited out
      /data/opaque/          opaque in layer 2: only new.txt ("new\\n"), no old.txt
      /data/setuid           "#!/bin/sh\\nid -u\\n" mode 04755
      /data/sticky/          mode 01777, empty
      /data/owned            "secret\\n" mode 0600, uid 1000 gid 1000
      /data/xattr            "xattr\\n" with xattr user.crust=yes
      /data/empty/           empty dir (layer 4)
    """
    data_dir = entry("data", "dir")
    l1 = Layer([
        data_dir,
        entry("data/a.txt", data=b"layer 1: a\n"),
        entry("data/hard", "hardlink", link="data/a.txt"),
        entry("data/link", "symlink", link="a.txt"),
        entry("data/dir1", "dir"),
        entry("data/dir1/f", data=b"f\n"),
        entry("data/dir1/keep.txt", data=b"keep\n"),
        entry("data/opaque", "dir"),
        entry("data/opaque/old.txt", data=b"old\n"),
        entry("data/setuid", data=b"#!/bin/sh\nid -u\n", mode=0o4755),
        entry("data/sticky", "dir", mode=0o1777),
        entry("data/owned", data=b"secret\n", mode=0o600, uid=1000, gid=1000),
        entry("data/xattr", data=b"xattr\n", xattrs={"user.crust": "yes"}),
    ], "gzip", "files, links, special modes, owner, xattr")
    l2 = Layer([
        data_dir,
        entry("data/dir1", "dir"),
        entry("data/dir1/.wh.f", data=b""),  # deletes /data/dir1/f
        entry("data/opaque", "dir"),
        entry("data/opaque/.wh..wh..opq", data=b""),  # hides lower /data/opaque/*
        entry("data/opaque/new.txt", data=b"new\n"),
    ], "none", "whiteout and opaque dir (uncompressed)")
    l3 = Layer([data_dir, entry("data/a.txt", data=b"layer 3: a\n")],
               "zstd", "overwrite a.txt (zstd)")
    l4 = Layer([data_dir, entry("data/empty", "dir")], "gzip", "empty dir")
    return [l1, l2, l3, l4]


# ---------------------------------------------------------- configs, manifests

def canonical(obj):
    return json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()


class Image:
    """An image: layers + config, as OCI or Docker schema2."""

    def __init__(self, layers, config=None, docker=False, arch=HOST_ARCH, variant=None):
        self.layers, self.docker = layers, docker
        cfg = {"Env": [ENV_PATH], "Cmd": ["sh"]}
        cfg.update(config or {})
        conf = {
            "created": CREATED,
            "architecture": arch,
            "os": "linux",
            "config": cfg,
            "rootfs": {"type": "layers", "diff_ids": [l.diff_id for l in layers]},
            "history": [{"created": CREATED, "created_by": "hack/build-test-images.py",
                         "comment": l.comment} for l in layers],
        }
        if variant:
            conf["variant"] = variant
        self.config = canonical(conf)
        self.media_type = DOCKER_MANIFEST if docker else OCI_MANIFEST
        self.manifest = canonical({
            "schemaVersion": 2,
            "mediaType": self.media_type,
            "config": {"mediaType": DOCKER_CONFIG if docker else OCI_CONFIG,
                       "digest": sha256(self.config), "size": len(self.config)},
            "layers": [{"mediaType": l.media_type(docker), "digest": l.digest,
                        "size": len(l.blob)} for l in layers],
        })
        self.digest = sha256(self.manifest)

    def blobs(self):
        return [l.blob for l in self.layers] + [self.config]

    def describe(self):
        layers = [{"digest": l.digest, "mediaType": l.media_type(self.docker),
                   "size": len(l.blob), "diff_id": l.diff_id} for l in self.layers]
        return {
            "mediaType": self.media_type,
            "manifest_digest": self.digest,
            "config_digest": sha256(self.config),  # the image ID
            "layers": layers,
            # Manifest + config + compressed layers: what a pull downloads.
            "total_size": len(self.manifest) + len(self.config)
                          + sum(l["size"] for l in layers),
        }


class Index:
    """An OCI image index or Docker manifest list over per-platform Images."""

    def __init__(self, platforms, docker=False):
        self.images = platforms  # {(arch, variant): Image}
        self.media_type = DOCKER_LIST if docker else OCI_INDEX
        manifests = []
        for (arch, variant), img in platforms.items():
            plat = {"architecture": arch, "os": "linux"}
            if variant:
                plat["variant"] = variant
            manifests.append({"mediaType": img.media_type, "digest": img.digest,
                              "size": len(img.manifest), "platform": plat})
        self.manifest = canonical({"schemaVersion": 2, "mediaType": self.media_type,
                                   "manifests": manifests})
        self.digest = sha256(self.manifest)

    def describe(self):
        per_platform = {}
        for (arch, variant), img in self.images.items():
            key = f"linux/{arch}" + (f"/{variant}" if variant else "")
            per_platform[key] = img.digest
        host = next((i for (a, _), i in self.images.items() if a == HOST_ARCH), None)
        return {"mediaType": self.media_type, "manifest_digest": self.digest,
                "manifests": per_platform,
                "host_platform_image": host.describe() if host else None}


def multiarch(busybox_layer, docker):
    """linux/amd64, arm64/v8, arm/v7: each has a /platform file; the host's one
    also gets the busybox layer underneath so that it can run."""
    images = {}
    for arch, variant in [("amd64", None), ("arm64", "v8"), ("arm", "v7")]:
        name = f"linux/{arch}" + (f"/{variant}" if variant else "")
        layer = Layer([entry("platform", data=(name + "\n").encode())], "gzip",
                      "platform marker")
        layers = [busybox_layer, layer] if arch == HOST_ARCH else [layer]
        cmd = {"Cmd": ["cat", "/platform"]}
        images[(arch, variant)] = Image(layers, cmd, docker, arch, variant)
    return Index(images, docker)


def build_all():
    """All test images: {"repo:tag": Image or Index}."""
    base_entries = busybox_rootfs()
    bb_gz = Layer(base_entries, "gzip", "busybox rootfs")
    bb_zstd = Layer(base_entries, "zstd", "busybox rootfs (zstd)")
    web = Layer([entry("www", "dir"), entry("www/index.html", data=b"crust-web-ok\n")],
                "gzip", "web root")
    trap = "trap 'echo got-usr1; exit 0' USR1; while true; do sleep 1; done"
    return {
        "crust-test/busybox:latest": Image([bb_gz]),
        "crust-test/busybox:zstd": Image([bb_zstd]),
        # The label keeps its config (image ID) apart from busybox:latest's.
        "crust-test/busybox:docker": Image(
            [bb_gz], {"Labels": {"org.crust.test.format": "docker"}}, docker=True),
        "crust-test/busybox:stopsignal": Image(
            [bb_gz], {"StopSignal": "SIGUSR1", "Cmd": ["sh", "-c", trap]}),
        "crust-test/multilayer:latest": Image([bb_gz] + multilayer_layers()),
        "crust-test/web:latest": Image(
            [bb_gz, web], {"Cmd": ["httpd", "-f", "-p", "80", "-h", "/www"],
                           "ExposedPorts": {"80/tcp": {}}}),
        # containerd's sandbox image in the side-by-side benchmark (crust
        # itself runs pods without one).
        "crust-test/pause:latest": Image(
            [bb_gz], {"Entrypoint": ["/bin/sleep"], "Cmd": ["2147483647"]}),
        "crust-test/user-numeric:latest": Image([bb_gz], {"User": "1000"}),
        "crust-test/user-named:latest": Image([bb_gz], {"User": "crust:extra"}),
        "crust-test/multiarch:latest": multiarch(bb_gz, docker=False),
        # 64 MiB uncompressed, so a test can kill crustd in mid-pull.
        "crust-test/big:latest": Image([bb_gz, Layer(
            [entry("big.bin", data=random.Random(7).randbytes(64 << 20))],
            "none", "64 MiB of pseudo-random bytes")]),
        # Hostile layers: unpack must refuse or confine them, never write
        # to /tmp/crust-evil-* on the host.
        "crust-test/evil:dotdot": Image([bb_gz, Layer(
            [entry("../../../../../../tmp/crust-evil-dotdot", data=b"escaped\n")],
            "gzip", "path with ..")]),
        "crust-test/evil:symlink": Image([bb_gz, Layer(
            [entry("escape", "symlink", link="/tmp"),
             entry("escape/crust-evil-symlink", data=b"escaped\n")],
            "gzip", "write through a symlink to /tmp")]),
        "crust-test/multiarch:docker": multiarch(bb_gz, docker=True),
        # An image volume (CRI Mount.image) of one layer and no OS, as an
        # OCI artifact image is.
        "crust-test/artifact:latest": Image([Layer(
            [entry("artifact", "dir"),
             entry("artifact/hello.txt", data=b"hello from an image volume\n"),
             entry("artifact/setuid", data=b"#!/bin/sh\nid -u\n", mode=0o4755)],
            "gzip", "files only")]),
        # An image VOLUME: its dir must live on the persistent root and be
        # counted in the container's writable layer.
        "crust-test/volume:latest": Image([bb_gz], {"Volumes": {"/data": {}}}),
    }


def hostile_images(bb_gz):
    """Hostile image configs and rootfs symlinks (issue 12): crust must
    refuse them clearly or confine them, never stall, hang or touch a host
    file. e2e/tests/hardening_inputs.rs."""
    return {
        # 150,000 Env entries: a quadratic merge stalled crustd for minutes.
        "crust-test/hostile:env150k": Image(
            [bb_gz], {"Env": [ENV_PATH] + [f"E{i}=x" for i in range(150000)]}),
        # A StopSignal no kernel has; PID 1 ignores SIGTERM without a
        # handler, so only SIGKILL stops it.
        "crust-test/hostile:stopsignal65": Image(
            [bb_gz], {"StopSignal": "65", "Cmd": ["sleep", "3600"]}),
        "crust-test/hostile:etc-proc": Image([bb_gz, Layer(
            [entry("etc", "dir"),
             entry("etc/resolv.conf", "symlink", link="/proc/1/root/etc/shadow"),
             entry("etc/hosts", "symlink", link="../../../../etc/passwd"),
             entry("etc/hostname", "symlink", link="/proc/self/root/etc/hostname")],
            "gzip", "pod file targets that are symlinks out of the rootfs")]),
        "crust-test/hostile:etc-dotdot": Image([bb_gz, Layer(
            [entry("etc", "dir"),
             entry("etc/resolv.conf", "symlink", link="../../../../etc/passwd"),
             entry("etc/hosts", "symlink", link="/proc/1/root/etc/hosts"),
             entry("etc/hostname", "symlink", link="../../../../etc/hostname")],
            "gzip", "pod file targets that are symlinks with ..")]),
        "crust-test/hostile:volume-links": Image([bb_gz, Layer(
            [entry("vol-proc", "symlink", link="/proc/self/root"),
             entry("vol-root", "symlink", link="/"),
             entry("vol-host-tmp", "symlink", link="/proc/1/root/tmp"),
             entry("vol-dotdot", "symlink", link="../../../../tmp")],
            "gzip", "VOLUME paths that are symlinks")],
            {"Volumes": {"/vol-proc": {}, "/vol-root": {}, "/vol-host-tmp": {},
                         "/vol-dotdot": {}}}),
        # /fdN -> /proc/self/fd/N: a working dir through a symlink into the
        # runtime's file descriptors (CVE-2024-21626).
        "crust-test/hostile:fd-links": Image([bb_gz, Layer(
            [entry(f"fd{n}", "symlink", link=f"/proc/self/fd/{n}") for n in range(3, 11)],
            "gzip", "symlinks to /proc/self/fd/N")]),
    }


_build_all_without_hostile = build_all


def build_all():  # noqa: F811 (extends the one above)
    images = _build_all_without_hostile()
    images.update(hostile_images(images["crust-test/busybox:latest"].layers[0]))
    return images


# ------------------------------------------------------------------ registry

class Registry:
    """Just enough of the distribution API v2 to push."""

    def __init__(self, host, auth=None):
        self.base = f"http://{host}"
        self.headers = {}
        if auth:
            token = base64.b64encode(f"{auth[0]}:{auth[1]}".encode()).decode()
            self.headers["Authorization"] = "Basic " + token
        self.uploaded = 0
        # Talk to the registry directly, whatever *_proxy says.
        self.opener = urllib.request.build_opener(urllib.request.ProxyHandler({}))

    def request(self, method, url, data=None, headers=None):
        if url.startswith("/"):
            url = self.base + url
        req = urllib.request.Request(url, data=data, method=method,
                                     headers={**self.headers, **(headers or {})})
        try:
            with self.opener.open(req, timeout=60) as resp:
                return resp.status, resp.headers, resp.read()
        except urllib.error.HTTPError as e:
            return e.code, e.headers, e.read()

    def push_blob(self, repo, blob):
        digest = sha256(blob)
        status, _, _ = self.request("HEAD", f"/v2/{repo}/blobs/{digest}")
        if status == 200:
            return
        status, headers, body = self.request("POST", f"/v2/{repo}/blobs/uploads/", b"")
        if status != 202:
            sys.exit(f"POST upload {repo}: HTTP {status}: {body[:500]!r}")
        location = headers["Location"]
        location += ("&" if "?" in location else "?") + "digest=" + digest
        status, _, body = self.request("PUT", location, blob, {
            "Content-Type": "application/octet-stream"})
        if status != 201:
            sys.exit(f"PUT blob {repo}@{digest}: HTTP {status}: {body[:500]!r}")
        self.uploaded += 1

    def push_manifest(self, repo, ref, media_type, manifest):
        status, headers, body = self.request("PUT", f"/v2/{repo}/manifests/{ref}",
                                             manifest, {"Content-Type": media_type})
        if status != 201:
            sys.exit(f"PUT manifest {repo}:{ref}: HTTP {status}: {body[:500]!r}")
        if headers.get("Docker-Content-Digest") != sha256(manifest):
            sys.exit(f"{repo}:{ref}: registry says digest "
                     f"{headers.get('Docker-Content-Digest')}, we computed {sha256(manifest)}")

    def push(self, repo, ref, image):
        """Push image under repo, tagged ref (a tag or the manifest's digest)."""
        if isinstance(image, Index):
            for img in image.images.values():  # children first, by digest
                self.push(repo, img.digest, img)
        else:
            for blob in image.blobs():
                self.push_blob(repo, blob)
        self.push_manifest(repo, ref, image.media_type, image.manifest)


def push_all(host, images, auth=None):
    reg = Registry(host, auth)
    out = {}
    for ref, image in images.items():
        reg.push(*ref.rsplit(":", 1), image)
        desc = {"reference": f"{host}/{ref}", **image.describe()}
        out[ref] = desc
        if isinstance(image, Index):
            extra = f"index of {len(image.images)}: " + " ".join(
                f"{p}={d[:19]}" for p, d in desc["manifests"].items())
        else:
            extra = f"config {desc['config_digest'][:19]} layers {len(image.layers)} " \
                    f"size {desc['total_size']}"
        print(f"{host}/{ref}  {image.digest}  {extra}")
    print(f"{host}: {reg.uploaded} blobs uploaded, the rest were already there")
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("registry", nargs="?", default="127.0.0.1:5099")
    ap.add_argument("--out", help="write image digests, layers, sizes as JSON here")
    ap.add_argument("--auth-registry", metavar="HOST:PORT",
                    help="also push crust-test/busybox:latest here as crust:crust-secret")
    args = ap.parse_args()

    images = build_all()
    result = {"registry": args.registry, "images": push_all(args.registry, images)}
    if args.auth_registry:
        only = {"crust-test/busybox:latest": images["crust-test/busybox:latest"]}
        result["auth_registry"] = {
            "registry": args.auth_registry, "username": AUTH[0], "password": AUTH[1],
            "images": push_all(args.auth_registry, only, AUTH)}
    if args.out:
        with open(args.out, "w") as f:
            json.dump(result, f, indent=2, sort_keys=True)
            f.write("\n")


if __name__ == "__main__":
    main()
