#!/bin/sh
# crust's node installer: puts crust on a Kubernetes node as a systemd
# service, optionally switches kubelet to it, and undoes all of it. Run by
# the chart's DaemonSet (charts/crust) from the installer image, or by hand
# on a node (manual recovery: `install.sh uninstall`). POSIX sh: it runs
# under the image's busybox as under a host's dash or bash.
#
#   install.sh install            install (idempotent), switch kubelet if asked, label the node
#   install.sh uninstall          restore kubelet, remove crust's pods, crust and its data, the labels
#   install.sh uninstall-host     (the host half of uninstall, run by crust-uninstall.service)
#   install.sh daemon             install, then wait for SIGTERM (keeps crust installed)
#   install.sh uninstall-daemon   uninstall, then wait for SIGTERM
#   install.sh probe              exit 0 when crust is installed, active and CRI-ready
#   install.sh probe-uninstalled  exit 0 when nothing of crust is left
#
# Environment (the contract with the chart: /var/tmp/crust15/contract.md
# when it was written; charts/crust/README.md now):
#   CRUST_VERSION (required), CRUST_HOST_ROOT (/host; / when run on the
#   host), CRUST_HOST_EXEC (dbus: this systemctl talks to the host's
#   systemd through /run/systemd; nsenter: run host commands in PID 1's
#   namespaces), CRUST_CONFIG_DIR (drop-ins to install), NODE_NAME,
#   CRUST_KUBELET_SWITCH, CRUST_KUBELET_DISTRIBUTION (auto|kubeadm|k3s|rke2),
#   CRUST_DRAIN, CRUST_DRAIN_TIMEOUT, CRUST_RUNTIME_REQUEST_TIMEOUT.
set -eu

here=$(cd "$(dirname "$0")" && pwd)
host=${CRUST_HOST_ROOT:-/host}
host=${host%/}
version=${CRUST_VERSION:-}
exec_mode=${CRUST_HOST_EXEC:-dbus}
config_src=${CRUST_CONFIG_DIR:-$here/config.d}
switch=${CRUST_KUBELET_SWITCH:-false}
distribution=${CRUST_KUBELET_DISTRIBUTION:-auto}
drain=${CRUST_DRAIN:-false}
drain_timeout=${CRUST_DRAIN_TIMEOUT:-300}
request_timeout=${CRUST_RUNTIME_REQUEST_TIMEOUT:-15m}
endpoint=unix:///run/crust/crust.sock
state=$host/var/lib/crust-install
label_prefix=crust.dev

log() { echo "crust-install: $*" >&2; }

# A version names a dir under /opt/crust: nothing that could leave it.
valid_version() {
	case $1 in
	"" | . | .. | *[!0-9A-Za-z.+~_-]*) return 1 ;;
	esac
}
die() {
	log "error: $*"
	exit 1
}

# A command on the host: its systemctl, its kubelet.
on_host() {
	case $exec_mode in
	nsenter) nsenter -t 1 -m -u -i -n -p -- "$@" ;;
	dbus) "$@" ;;
	*) die "CRUST_HOST_EXEC must be dbus or nsenter, not $exec_mode" ;;
	esac
}

# Whether there is a Kubernetes API to talk to about this node (in the
# chart's pod; not when run by hand on the node).
have_api() { [ -n "${NODE_NAME:-}" ] && [ -n "${KUBERNETES_SERVICE_HOST:-}" ]; }

# Node labels, when there is an API to tell.
label() {
	have_api || return 0
	"$here/bin/kubectl" label node "$NODE_NAME" --overwrite "$label_prefix/runtime=$1" >/dev/null ||
		log "cannot label node $NODE_NAME $label_prefix/runtime=$1"
}

# Copies $1 to $2 unless equal; the new file is renamed over the old, so a
# running crustd or shim keeps its own (old) inode. Says whether it wrote.
put_file() {
	if [ -f "$2" ] && cmp -s "$1" "$2"; then
		return 1
	fi
	mkdir -p "$(dirname "$2")"
	cp "$1" "$2.crust-new"
	chmod "${3:-0644}" "$2.crust-new"
	mv -f "$2.crust-new" "$2"
	return 0
}

# Keeps the first copy of a host file before crust changes it (a marker
# when it did not exist), so uninstall restores it byte for byte.
backup() {
	saved=$state/backup$1
	[ -e "$saved" ] || [ -e "$saved.absent" ] && return 0
	mkdir -p "$(dirname "$saved")"
	if [ -e "$host$1" ]; then
		cp -p "$host$1" "$saved"
	else
		# The dirs that will be made for it, deepest first, go with it.
		d=$(dirname "$1")
		: >"$saved.absent"
		while [ ! -d "$host$d" ]; do
			echo "$d" >>"$saved.absent"
			d=$(dirname "$d")
		done
	fi
	echo "$1" >>"$state/backed-up"
}

# Sets top-level `key: value` in a YAML file (a KubeletConfiguration, a k3s
# config): replaces the key's line, or appends one.
set_yaml_key() {
	file=$1 key=$2 value=$3
	mkdir -p "$(dirname "$file")"
	[ -f "$file" ] || : >"$file"
	if grep -q "^$key:" "$file"; then
		sed -i "s|^$key:.*|$key: $value|" "$file"
	else
		[ -s "$file" ] && [ "$(tail -c 1 "$file")" != "" ] && echo >>"$file"
		echo "$key: $value" >>"$file"
	fi
}

yaml_value() { sed -n "s|^$2:[[:space:]]*||p" "$1" 2>/dev/null | head -1 | tr -d "\"'"; }

# Whether the host's systemd knows unit $1 (wherever its file is: /etc,
# /lib, /usr/lib, /usr/local/lib; the pod mounts none of the latter).
unit_exists() { [ "$(on_host systemctl show -p LoadState --value "$1" 2>/dev/null)" = loaded ]; }

# How kubelet runs here: kubeadm (kubelet.service + /var/lib/kubelet/config.yaml),
# k3s or rke2 (their own service embeds kubelet).
detect_distribution() {
	found=
	if unit_exists k3s.service || unit_exists k3s-agent.service; then
		found=k3s
	elif unit_exists rke2-server.service || unit_exists rke2-agent.service; then
		found=rke2
	elif unit_exists kubelet.service && [ -f "$host/var/lib/kubelet/config.yaml" ]; then
		found=kubeadm
	fi
	if [ "$distribution" = auto ]; then
		[ -n "$found" ] || die "cannot tell how kubelet runs on this node (no kubelet.service with /var/lib/kubelet/config.yaml, no k3s or rke2 unit); set kubelet.distribution"
		echo "$found"
	elif [ "$distribution" != "$found" ]; then
		die "kubelet.distribution is $distribution, but this node looks like ${found:-none of kubeadm, k3s, rke2}: refusing to edit it"
	else
		echo "$found"
	fi
}

kubelet_unit() {
	case $1 in
	kubeadm) echo kubelet.service ;;
	k3s) if unit_exists k3s.service; then echo k3s.service; else echo k3s-agent.service; fi ;;
	rke2) if unit_exists rke2-server.service; then echo rke2-server.service; else echo rke2-agent.service; fi ;;
	esac
}

# Restarting kubelet kills this installer pod's supervision (its runtime
# changes), so a host one-shot unit does it, outliving us.
restart_kubelet() {
	unit=$1
	cat >"$host/etc/systemd/system/crust-kubelet-restart.service" <<EOF
[Unit]
Description=crust installer: restart $unit on its new container runtime
[Service]
Type=oneshot
ExecStart=/bin/systemctl restart $unit
EOF
	on_host systemctl daemon-reload
	restarted=0
	on_host systemctl start crust-kubelet-restart.service || restarted=$?
	rm -f "$host/etc/systemd/system/crust-kubelet-restart.service"
	on_host systemctl daemon-reload
	[ "$restarted" = 0 ] || die "restarting $unit failed: journalctl -u crust-kubelet-restart -u $unit"
}

# Before kubelet changes runtime: no new pods (cordon), and with
# CRUST_DRAIN the running ones moved elsewhere (they would be orphaned on
# the old runtime). Needs the Kubernetes API (not when run by hand).
drain_node() {
	have_api || return 0
	"$here/bin/kubectl" cordon "$NODE_NAME"
	[ "$drain" = true ] || return 0
	"$here/bin/kubectl" drain "$NODE_NAME" --ignore-daemonsets --delete-emptydir-data \
		--timeout="${drain_timeout}s"
}

uncordon_node() {
	have_api || return 0
	"$here/bin/kubectl" uncordon "$NODE_NAME" || log "cannot uncordon $NODE_NAME"
}

switch_kubelet() {
	[ "$switch" = true ] || return 0
	dist=$(detect_distribution)
	if [ -f "$state/kubelet-switched" ]; then
		log "kubelet ($dist) already runs on crust"
		uncordon_node
		return 0
	fi
	drain_node
	case $dist in
	kubeadm)
		cfg=/var/lib/kubelet/config.yaml
		backup $cfg
		set_yaml_key "$host$cfg" containerRuntimeEndpoint "$endpoint"
		set_yaml_key "$host$cfg" imageServiceEndpoint "$endpoint"
		set_yaml_key "$host$cfg" runtimeRequestTimeout "$request_timeout"
		# Kubelets before 1.27 took the endpoint as a flag from kubeadm.
		flags=/var/lib/kubelet/kubeadm-flags.env
		if grep -q -- '--container-runtime-endpoint' "$host$flags" 2>/dev/null; then
			backup $flags
			sed -i "s|--container-runtime-endpoint=[^ \"]*|--container-runtime-endpoint=$endpoint|" "$host$flags"
		fi
		;;
	k3s | rke2)
		cfg=/etc/rancher/$dist/config.yaml
		backup "$cfg"
		set_yaml_key "$host$cfg" container-runtime-endpoint "$endpoint"
		;;
	esac
	restart_kubelet "$(kubelet_unit "$dist")"
	# Only once kubelet restarted: a rerun after a failed restart retries.
	echo "$dist" >"$state/kubelet-switched"
	uncordon_node
	log "kubelet ($dist) switched to $endpoint"
}

# Whether kubelet (kubeadm's, k3s's or rke2's) is configured for crust's socket.
kubelet_uses_crust() {
	for f in /var/lib/kubelet/config.yaml /var/lib/kubelet/kubeadm-flags.env \
		/etc/rancher/k3s/config.yaml /etc/rancher/rke2/config.yaml; do
		grep -qs -- "$endpoint" "$host$f" && return 0
	done
	return 1
}

# crust must use kubelet's cgroup driver (kubeadm sets systemd).
match_cgroup_driver() {
	[ "$switch" = true ] || return 0
	[ -f "$host/var/lib/kubelet/config.yaml" ] || return 0
	driver=$(yaml_value "$host/var/lib/kubelet/config.yaml" cgroupDriver)
	[ -n "$driver" ] || driver=cgroupfs # kubelet's own default
	printf '# Written by crust-install: kubelet uses the %s cgroup driver.\ncgroup_driver: %s\n' \
		"$driver" "$driver" >"$tmp/40-kubelet.yaml"
	put_file "$tmp/40-kubelet.yaml" "$host/etc/crust/config.d/40-kubelet.yaml" && changed=1
	return 0
}

wait_ready() {
	i=0
	while [ $i -lt 120 ]; do
		if on_host systemctl is-active --quiet crust.service &&
			"$here/bin/crustd" status --socket "$host/run/crust/crust.sock" 2>/dev/null | grep -q '^runtime ready: *yes'; then
			return 0
		fi
		i=$((i + 1))
		sleep 0.5
	done
	on_host systemctl status crust.service --no-pager >&2 || true
	die "crust did not become ready within 60 s"
}

install() {
	[ -n "$version" ] || die "CRUST_VERSION is not set"
	valid_version "$version" || die "CRUST_VERSION $version is not a version (letters, digits, . + ~ _ -)"
	# Refuse a node we would not know how to switch before touching it.
	[ "$switch" != true ] || detect_distribution >/dev/null
	label installing
	mkdir -p "$state"
	tmp=$(mktemp -d)
	trap 'rm -rf "$tmp"' EXIT
	changed=0
	# Binaries in a versioned dir; `current` swapped atomically.
	bin=$host/opt/crust/$version/bin
	for b in crustd crust-shim; do
		put_file "$here/bin/$b" "$bin/$b" 0755 && changed=1
	done
	if [ "$(readlink "$host/opt/crust/current" 2>/dev/null || true)" != "$version" ]; then
		ln -sfn "$version" "$host/opt/crust/current.new"
		mv -fT "$host/opt/crust/current.new" "$host/opt/crust/current"
		changed=1
	fi
	echo "$version" >>"$state/versions"
	# The unit: the package's, run from /opt/crust/current.
	sed 's|^ExecStart=/usr/bin/crustd|ExecStart=/opt/crust/current/bin/crustd|' \
		"$here/crust.service" >"$tmp/crust.service"
	put_file "$tmp/crust.service" "$host/etc/systemd/system/crust.service" && changed=1
	# The config: defaults once (an admin's edits are theirs), drop-ins ours.
	if [ ! -e "$host/etc/crust/config.yaml" ]; then
		mkdir -p "$host/etc/crust"
		"$here/bin/crustd" config default >"$host/etc/crust/config.yaml.crust-new"
		mv -f "$host/etc/crust/config.yaml.crust-new" "$host/etc/crust/config.yaml"
		: >"$state/created-config"
		changed=1
	fi
	mkdir -p "$host/etc/crust/config.d"
	for f in "$config_src"/*.yaml; do
		[ -f "$f" ] || continue
		put_file "$f" "$host/etc/crust/config.d/$(basename "$f")" && changed=1
		basename "$f" >>"$state/dropins"
	done
	match_cgroup_driver
	"$here/bin/crustd" --config "$host/etc/crust/config.yaml" \
		--config-dir "$host/etc/crust/config.d" config check >/dev/null ||
		die "the crust config on this node is invalid (see above)"
	# Enabled by its symlink, made here: `systemctl enable` from inside a
	# container would edit the container's files, not the host's.
	wants=$host/etc/systemd/system/multi-user.target.wants
	mkdir -p "$wants"
	[ -L "$wants/crust.service" ] || ln -s /etc/systemd/system/crust.service "$wants/crust.service"
	on_host systemctl daemon-reload
	if [ "$changed" = 1 ]; then
		# A restart signals crustd alone (KillMode=process): pods keep running.
		on_host systemctl restart crust.service
	else
		on_host systemctl start crust.service
	fi
	wait_ready
	echo "$version" >"$state/installed"
	switch_kubelet
	# `ready` (what the RuntimeClasses select) only where kubelet runs its
	# pods on crust: elsewhere a pod of a crust RuntimeClass would land on
	# a kubelet whose runtime has no such handler.
	if kubelet_uses_crust; then
		label ready
	else
		label installed
	fi
	log "crust $version installed and ready"
}

uninstall() {
	label removing
	if [ -f "$state/kubelet-switched" ]; then
		dist=$(cat "$state/kubelet-switched")
		drain_node
		while read -r path; do
			if [ -e "$state/backup$path.absent" ]; then
				rm -f "$host$path"
				while read -r d; do rmdir "$host$d" 2>/dev/null || true; done <"$state/backup$path.absent"
			else
				cp -p "$state/backup$path" "$host$path"
			fi
		done <"$state/backed-up"
		rm -f "$state/kubelet-switched"
		restart_kubelet "$(kubelet_unit "$dist")"
		uncordon_node
		log "kubelet ($dist) restored to its previous runtime"
	fi
	# The rest runs on the host, from a one-shot unit: where kubelet ran on
	# crust, this installer is itself one of the pods the wipe removes (the
	# installer pod kubelet starts on its restored runtime then finds
	# nothing left to do).
	mkdir -p "$state"
	# Renamed into place: a host job already running the old copy keeps
	# reading its own file.
	cp "$here/install.sh" "$state/install.sh.crust-new"
	mv -f "$state/install.sh.crust-new" "$state/install.sh"
	cat >"$host/etc/systemd/system/crust-uninstall.service" <<EOF
[Unit]
Description=crust installer: remove crust from this node
[Service]
Type=oneshot
Environment=CRUST_HOST_ROOT=/ CRUST_HOST_EXEC=dbus
ExecStart=/bin/sh /var/lib/crust-install/install.sh uninstall-host
EOF
	on_host systemctl daemon-reload
	on_host systemctl start crust-uninstall.service ||
		die "removing crust failed: journalctl -u crust-uninstall"
	label removed
	log "crust removed"
}

# On the host, as root (crust-uninstall.service): every pod of crust
# removed through CRI (containers stopped, networks and mounts gone), then
# crust's unit, files and data.
uninstall_host() {
	if [ -x /opt/crust/current/bin/crustd ] && [ -e /etc/systemd/system/crust.service ]; then
		# A crustd to remove the pods through, even if it was stopped
		# (its containers keep running without it: KillMode=process).
		systemctl start crust.service || log "crust does not start; its pods cannot be removed through it"
		/opt/crust/current/bin/crustd wipe ||
			log "wipe failed (above); stopping crust with what is left"
	fi
	systemctl stop crust.service || true
	rm -f /etc/systemd/system/multi-user.target.wants/crust.service \
		/etc/systemd/system/crust.service
	if [ -f "$state/dropins" ]; then
		while read -r f; do rm -f "/etc/crust/config.d/$f"; done <"$state/dropins"
	fi
	rm -f /etc/crust/config.d/40-kubelet.yaml
	if [ -f "$state/created-config" ]; then rm -f /etc/crust/config.yaml; fi
	rmdir /etc/crust/config.d /etc/crust 2>/dev/null || true
	if [ -f "$state/versions" ]; then
		sort -u "$state/versions" | while read -r v; do
			if valid_version "$v"; then rm -rf "/opt/crust/$v"; fi
		done
	fi
	rm -f /opt/crust/current
	rmdir /opt/crust 2>/dev/null || true
	# crust's data, once nothing is mounted there but crustd's read-only
	# copies of its own binaries (left mounted after it stops).
	awk 'index($5, "/run/crust/bin/") == 1 { print $5 }' /proc/self/mountinfo |
		while read -r m; do umount "$m" || true; done
	for dir in /var/lib/crust /run/crust; do
		[ -d "$dir" ] || continue
		if awk -v d="$dir" 'index($5, d "/") == 1 { found = 1 } END { exit !found }' /proc/self/mountinfo; then
			log "$dir still has mounts; left in place"
			continue
		fi
		rm -rf "${dir:?}"/*
		rmdir "$dir" 2>/dev/null || true
	done
	# Emptied, then removed where it is not a mount point (the chart's
	# hostPath for it is); this script's own file goes with it.
	rm -rf "${state:?}"/*
	rmdir "$state" 2>/dev/null || true
	rm -f /etc/systemd/system/crust-uninstall.service
	systemctl daemon-reload
}

probe() {
	[ "$(cat "$state/installed" 2>/dev/null)" = "$version" ] || return 1
	on_host systemctl is-active --quiet crust.service || return 1
	"$here/bin/crustd" status --socket "$host/run/crust/crust.sock" 2>/dev/null | grep -q '^runtime ready: *yes'
}

probe_uninstalled() {
	[ ! -e "$state/installed" ] && [ ! -e "$host/etc/systemd/system/crust.service" ] &&
		[ ! -e "$host/opt/crust/current" ]
}

wait_for_term() {
	trap 'exit 0' TERM INT
	while :; do sleep 3600 & wait $! || true; done
}

case ${1:-} in
install) install ;;
uninstall) uninstall ;;
uninstall-host) uninstall_host ;;
daemon)
	install
	wait_for_term
	;;
uninstall-daemon)
	uninstall
	wait_for_term
	;;
probe) probe ;;
probe-uninstalled) probe_uninstalled ;;
*)
	echo "usage: $0 install|uninstall|daemon|uninstall-daemon|probe|probe-uninstalled" >&2
	exit 2
	;;
esac
