#!/usr/bin/env bash
# A real systemd for tests, booted as PID 1 of private PID, mount, cgroup,
# UTS and IPC namespaces on a root that is an overlay of the host's /, so
# that what it does (units, packages, tmpfiles, cgroups, its hostname)
# stays off the host. It shares the host's network and /dev (the masked
# units below are the ones that would change them). cgroup v1/hybrid hosts
# only.
#
#   hack/systemd-sandbox.sh boot DIR    boot; DIR holds its state (created)
#   hack/systemd-sandbox.sh run DIR CMD...
#                                        run CMD inside (its mounts, PIDs, cgroups)
#   hack/systemd-sandbox.sh halt DIR    SIGKILL its PID 1 (by PID), remove its cgroups
#
# What it sees:
#   /                   overlay: lower = host /, upper on a tmpfs (writes vanish)
#   /var/lib/crust      DIR/var-lib-crust, a real directory (overlayfs cannot be
#                       the upper layer of crust's own overlays)
#   /proc               its own (PID namespace); /proc/sys read-only
#   /sys                read-only; /sys/fs/cgroup its own hierarchies, rooted at
#                       DIR's cgroup (a child of this shell's cgroup) by a cgroup
#                       namespace
#   /dev                the host's, bound
# and it boots crust-sandbox.target: journald, D-Bus and what they need;
# units that would change the host (sysctl, udev, modules, binfmt, clocks,
# tmpfiles cleanup, getty) are masked. Never boot systemd on the host's own
# root: it would start every enabled unit and empty the host's /tmp.
set -euo pipefail

cmd=${1:?usage: $0 boot|run|halt DIR [CMD...]}
dir=${2:?usage: $0 boot|run|halt DIR [CMD...]}
shift 2

cgname() { echo "crust-sandbox-$(basename "$dir")"; }

# This shell's cgroup in hierarchy $1 (a dir under /sys/fs/cgroup).
own_cgroup() {
  local h=$1 name
  if [[ $h == */unified ]]; then
    sed -n 's/^0:://p' /proc/self/cgroup
  else
    name=$(basename "$h")
    [[ $name == systemd ]] && name=name=systemd
    # A hierarchy of several controllers (cpu,cpuacct) is named by all of
    # them, or by one of them (a link such as cpu -> cpu,cpuacct).
    awk -F: -v n="$name" '{ if ($2 == n) { print $3; next } split($2, cs, ","); for (i in cs) if (cs[i] == n) print $3 }' /proc/self/cgroup | head -1
  fi
}

hierarchies() {
  for h in /sys/fs/cgroup/*/; do
    h=${h%/}
    [[ -L $h ]] && continue
    [[ -e $h/cgroup.procs ]] && echo "$h"
  done
}

pid1() { cat "$dir/pid1"; }

case $cmd in
boot)
  [[ $(id -u) == 0 ]] || { echo "systemd-sandbox: needs root" >&2; exit 1; }
  [[ -x /lib/systemd/systemd ]] || { echo "systemd-sandbox: no /lib/systemd/systemd" >&2; exit 1; }
  # The cgroup layout below is v1/hybrid's (a hierarchy per controller); on
  # a pure v2 host it would create cgroups in the host's own tree.
  if [[ -e /sys/fs/cgroup/cgroup.controllers ]]; then
    echo "systemd-sandbox: cgroup v2 hosts are not supported (v1 or hybrid only)" >&2
    exit 1
  fi
  mkdir -p "$dir"/{root,upper,var-lib-crust}
  dir=$(cd "$dir" && pwd)
  : > "$dir/cgroups"
  for h in $(hierarchies); do
    cg="$h$(own_cgroup "$h")/$(cgname)"
    mkdir -p "$cg"
    echo "$cg" >> "$dir/cgroups"
  done
  # The v1 cpuset hierarchy needs cpus and mems before a task may join.
  while read -r cg; do
    if [[ -e $cg/cpuset.cpus ]]; then
      cat "$(dirname "$cg")/cpuset.cpus" > "$cg/cpuset.cpus"
      cat "$(dirname "$cg")/cpuset.mems" > "$cg/cpuset.mems"
    fi
  done < "$dir/cgroups"
  # Runs as PID 1 of the new namespaces until it execs systemd.
  cat > "$dir/init.sh" <<'EOF'
set -euo pipefail
dir=$1; root=$dir/root
mount --make-rprivate /
mount -t tmpfs -o mode=0755 tmpfs "$dir/upper"
mkdir -p "$dir/upper/u" "$dir/upper/w"
mount -t overlay overlay -o "lowerdir=/,upperdir=$dir/upper/u,workdir=$dir/upper/w" "$root"
mount -t proc proc "$root/proc"
mount --bind "$root/proc/sys" "$root/proc/sys"
mount -o remount,bind,ro "$root/proc/sys"
mount --rbind /dev "$root/dev"
mount -t sysfs -o ro sysfs "$root/sys"
mount -t tmpfs -o mode=0755 tmpfs "$root/sys/fs/cgroup"
while read -r opts name; do
  mkdir -p "$root/sys/fs/cgroup/$name"
  if [[ $opts == cgroup2 ]]; then
    mount -t cgroup2 cgroup2 "$root/sys/fs/cgroup/$name"
  else
    mount -t cgroup -o "$opts" cgroup "$root/sys/fs/cgroup/$name"
  fi
done < "$dir/hierarchies"
mkdir -p "$root/var/lib/crust"
mount --bind "$dir/var-lib-crust" "$root/var/lib/crust"
mount -t tmpfs -o mode=1777 tmpfs "$root/tmp"
# A real node lets package scripts start services (many build images ship
# a policy-rc.d that forbids it); removing it here only hides it.
rm -f "$root/usr/sbin/policy-rc.d"
# The sandbox's own units: a minimal default target, and masks.
units=$root/etc/systemd/system
mkdir -p "$units"
cat > "$units/crust-sandbox.target" <<'UNIT'
[Unit]
Description=crust sandbox: journald and D-Bus only
Requires=systemd-journald.socket dbus.socket
After=systemd-journald.socket dbus.socket
AllowIsolate=yes
UNIT
# (systemd-tmpfiles-setup-dev would apply its modes to the host's /dev.)
for u in systemd-tmpfiles-setup-dev.service systemd-sysctl.service systemd-udevd.service systemd-udev-trigger.service \
  systemd-udev-settle.service systemd-modules-load.service systemd-binfmt.service \
  proc-sys-fs-binfmt_misc.automount proc-sys-fs-binfmt_misc.mount \
  systemd-random-seed.service systemd-timesyncd.service systemd-tmpfiles-clean.timer \
  systemd-hwdb-update.service systemd-firstboot.service systemd-machine-id-commit.service \
  sys-kernel-debug.mount sys-kernel-tracing.mount sys-kernel-config.mount sys-fs-fuse-connections.mount \
  dev-hugepages.mount dev-mqueue.mount kmod-static-nodes.service systemd-remount-fs.service \
  getty.target console-getty.service systemd-logind.service systemd-networkd.service \
  systemd-resolved.service cron.service postgresql.service apt-daily.timer apt-daily-upgrade.timer \
  e2scrub_all.timer fstrim.timer man-db.timer logrotate.timer; do
  ln -sf /dev/null "$units/$u"
done
ln -sf crust-sandbox.target "$units/default.target"
cd "$root"
mkdir -p old-root
pivot_root . old-root
cd /
umount -l /old-root
rmdir /old-root
exec env -i container=crust-sandbox PATH=/usr/sbin:/usr/bin:/sbin:/bin \
  /lib/systemd/systemd --system --unit=crust-sandbox.target
EOF
  # cgroup mount options per hierarchy, as the host has them.
  awk '$3 == "cgroup" || $3 == "cgroup2" { print }' /proc/self/mounts | while read -r _ mnt type opts _; do
    name=$(basename "$mnt")
    if [[ $type == cgroup2 ]]; then
      echo "cgroup2 $name"
    else
      echo "$(echo "$opts" | tr ',' '\n' | grep -Ev '^(rw|ro|relatime|noatime|nosuid|nodev|noexec)$' | paste -sd,) $name"
    fi
  done > "$dir/hierarchies"
  # Join the sandbox's cgroups, then unshare: the new cgroup namespace is
  # rooted there, so systemd takes over that subtree and nothing above.
  (
    while read -r cg; do echo $BASHPID > "$cg/cgroup.procs"; done < "$dir/cgroups"
    exec unshare --pid --fork --mount --cgroup --uts --ipc --propagation private \
      bash "$dir/init.sh" "$dir" > "$dir/boot.log" 2>&1 < /dev/null
  ) &
  unshare_pid=$!
  for _ in $(seq 100); do
    child=$(awk '{print $1}' "/proc/$unshare_pid/task/$unshare_pid/children" 2>/dev/null)
    [[ -n $child ]] && break
    sleep 0.05
  done
  [[ -n ${child:-} ]] || { echo "systemd-sandbox: no PID 1" >&2; cat "$dir/boot.log" >&2; exit 1; }
  echo "$child" > "$dir/pid1"
  echo "$unshare_pid" > "$dir/unshare.pid"
  # Booted when systemctl answers running (or degraded: a masked unit's
  # dependant may fail, which is fine here).
  for _ in $(seq 200); do
    state=$("$0" run "$dir" systemctl is-system-running 2>/dev/null || true)
    case $state in
    running | degraded) echo "systemd-sandbox: booted ($state), PID 1 is host PID $child"; exit 0 ;;
    esac
    if ! kill -0 "$child" 2>/dev/null; then
      echo "systemd-sandbox: systemd exited" >&2; cat "$dir/boot.log" >&2; exit 1
    fi
    sleep 0.1
  done
  echo "systemd-sandbox: not booted after 20 s (state ${state:-none})" >&2
  "$0" run "$dir" systemctl --failed --no-pager >&2 || true
  exit 1
  ;;
run)
  # Join the sandbox's root cgroups first, so CMD and its children are
  # inside what halt removes.
  while read -r cg; do echo $$ > "$cg/cgroup.procs"; done < "$dir/cgroups"
  exec nsenter --target "$(pid1)" --mount --pid --cgroup --uts --ipc -- env -i \
    PATH=/usr/sbin:/usr/bin:/sbin:/bin HOME=/root "$@"
  ;;
halt)
  if [[ -f $dir/pid1 ]]; then
    p=$(pid1)
    # Only our PID 1: a PID reused since would not be systemd in our cgroup.
    if grep -q "$(cgname)" "/proc/$p/cgroup" 2>/dev/null; then
      kill -KILL "$p" || true
    fi
    if [[ -f $dir/unshare.pid ]]; then
      u=$(cat "$dir/unshare.pid")
      for _ in $(seq 100); do kill -0 "$u" 2>/dev/null || break; sleep 0.05; done
    fi
  fi
  # Everything in the PID namespace died with its PID 1; its cgroups are
  # empty, removed leaves first.
  if [[ -f $dir/cgroups ]]; then
    while read -r cg; do
      [[ -d $cg ]] || continue
      for _ in $(seq 100); do
        find "$cg" -depth -type d -exec rmdir {} + 2>/dev/null || true
        [[ -d $cg ]] || break
        sleep 0.05
      done
      [[ -d $cg ]] && echo "systemd-sandbox: cgroup $cg left" >&2
    done < "$dir/cgroups"
  fi
  rm -f "$dir/pid1" "$dir/unshare.pid"
  ;;
*)
  echo "usage: $0 boot|run|halt DIR [CMD...]" >&2
  exit 2
  ;;
esac
