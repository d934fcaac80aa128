#!/usr/bin/env bash
# Builds crust's Debian package: crust_<version>_<arch>.deb in target/debian/.
#   hack/package.sh                      release build, xz-compressed
#   CRUST_PACKAGE_PROFILE=debug hack/package.sh
#                                        the debug binaries (the e2e suite's), stripped
#   CRUST_PACKAGE_VERSION=0.1.0+1 ...    another version (upgrade tests)
#   CRUST_PACKAGE_NO_BUILD=1 ...         package what target/<profile>/ holds
#   CRUST_PACKAGE_BIN_DIR=DIR            ... or what DIR holds (implies no build)
#   CRUST_PACKAGE_OUT=DIR                write the .deb there (default target/debian)
# Prints the .deb's path on its last line.
set -euo pipefail

here=$(cd "$(dirname "$0")" && pwd)
repo=$(dirname "$here")
profile=${CRUST_PACKAGE_PROFILE:-release}
target_dir=${CARGO_TARGET_DIR:-$repo/target}
version=${CRUST_PACKAGE_VERSION:-$(sed -n 's/^version = "\(.*\)"/\1/p' "$repo/Cargo.toml" | head -1)}
arch=$(dpkg --print-architecture)
out=${CRUST_PACKAGE_OUT:-$target_dir/debian}
stage=$out/crust_${version}_$arch
[[ -n ${CRUST_PACKAGE_BIN_DIR:-} ]] && CRUST_PACKAGE_NO_BUILD=1
mkdir -p "$out"

if [[ -z ${CRUST_PACKAGE_NO_BUILD:-} ]]; then
  flag=(); [[ $profile == release ]] && flag=(--release)
  (cd "$repo" && cargo build --locked "${flag[@]}" -p crustd -p crust-shim >&2)
fi
bin=${CRUST_PACKAGE_BIN_DIR:-$target_dir/$profile}
for b in crustd crust-shim; do
  [[ -x $bin/$b ]] || { echo "package.sh: $bin/$b is missing (build it, or unset CRUST_PACKAGE_NO_BUILD)" >&2; exit 1; }
done

rm -rf "$stage"
install -d "$stage/DEBIAN" "$stage/usr/bin" "$stage/lib/systemd/system" \
  "$stage/etc/crust/config.d" "$stage/usr/share/doc/crust/examples" \
  "$stage/usr/share/man/man8" "$stage/usr/share/lintian/overrides"
install -m 0755 "$bin/crustd" "$bin/crust-shim" "$stage/usr/bin/"
strip --strip-unneeded --remove-section=.comment --remove-section=.note \
  "$stage/usr/bin/crustd" "$stage/usr/bin/crust-shim"
install -m 0644 "$repo/packaging/crust.service" "$stage/lib/systemd/system/"
# The conffile: the documented defaults, exactly what crustd uses without it.
"$bin/crustd" config default > "$stage/etc/crust/config.yaml"
chmod 0644 "$stage/etc/crust/config.yaml"
install -m 0644 "$repo/packaging/crictl.yaml" "$stage/usr/share/doc/crust/examples/"
install -m 0644 "$repo/packaging/copyright" "$stage/usr/share/doc/crust/copyright"
gzip -9n < "$repo/packaging/changelog" > "$stage/usr/share/doc/crust/changelog.gz"
gzip -9n < "$repo/README.md" > "$stage/usr/share/doc/crust/README.md.gz"
for page in crustd.8 crust-shim.8; do
  gzip -9n < "$repo/packaging/man/$page" > "$stage/usr/share/man/man8/$page.gz"
done
install -m 0644 "$repo/packaging/lintian-overrides" "$stage/usr/share/lintian/overrides/crust"
install -d "$stage/usr/share/bash-completion/completions" "$stage/usr/share/zsh/vendor-completions"
"$bin/crustd" completions bash > "$stage/usr/share/bash-completion/completions/crustd"
"$bin/crustd" completions zsh > "$stage/usr/share/zsh/vendor-completions/_crustd"
chmod 0644 "$stage/usr/share/bash-completion/completions/crustd" "$stage/usr/share/zsh/vendor-completions/_crustd"
install -m 0755 "$repo/packaging/debian/postinst" "$repo/packaging/debian/prerm" \
  "$repo/packaging/debian/postrm" "$stage/DEBIAN/"
echo /etc/crust/config.yaml > "$stage/DEBIAN/conffiles"
size=$(du -sk --exclude=DEBIAN "$stage" | cut -f1)
sed -e "s/@VERSION@/$version/" -e "s/@ARCH@/$arch/" -e "s/@SIZE@/$size/" \
  "$repo/packaging/debian/control.in" > "$stage/DEBIAN/control"

# Release packages are xz-compressed; a test build is compressed fast.
compress=(-Zxz); [[ $profile == release ]] || compress=(-Zgzip -z1)
deb=$out/crust_${version}_$arch.deb
dpkg-deb --root-owner-group "${compress[@]}" --build "$stage" "$deb" >&2
rm -rf "$stage"
echo "$deb"
