# crust-default: the AppArmor profile crust gives containers that ask for
# RuntimeDefault (or for nothing) on a host with AppArmor. Loaded by crustd
# with `apparmor_parser -Kr`; modelled on the default profile Docker and
# containerd use.
#include <tunables/global>

profile crust-default flags=(attach_disconnected,mediate_deleted) {
  #include <abstractions/base>

  network,
  capability,
  file,
  umount,

  # Signals only among the same profile, and from the host's unconfined
  # processes (kubelet, crust).
  signal (receive) peer=unconfined,
  signal (send,receive) peer=crust-default,

  # No writes to /proc outside the process's own dirs and the namespaced
  # parts of /proc/sys.
  deny @{PROC}/* w,
  deny @{PROC}/{[^1-9],[^1-9][^0-9],[^1-9s][^0-9y][^0-9s],[^1-9][^0-9][^0-9][^0-9/]*}/** w,
  deny @{PROC}/sys/[^k]** w,
  deny @{PROC}/sys/kernel/{?,??,[^s][^h][^m]**} w,
  deny @{PROC}/sysrq-trigger rwklx,
  deny @{PROC}/kcore rwklx,

  deny mount,

  # /sys is read-only except the container's cgroup files.
  deny /sys/[^f]*/** wklx,
  deny /sys/f[^s]*/** wklx,
  deny /sys/fs/[^c]*/** wklx,
  deny /sys/fs/c[^g]*/** wklx,
  deny /sys/fs/cg[^r]*/** wklx,
  deny /sys/firmware/** rwklx,
  deny /sys/devices/virtual/powercap/** rwklx,
  deny /sys/kernel/security/** rwklx,

  ptrace (trace,read,tracedby,readby) peer=crust-default,
}
