#!/usr/bin/env bash
# Local test registries (Debian's docker-registry, distribution v2.8):
#   plain: http://127.0.0.1:5099  no auth
#   auth:  http://127.0.0.1:5098  basic auth, user crust / password crust-secret
# Usage: hack/registry.sh start|stop|status
# State (config, storage, log, pid) lives in ${CRUST_REGISTRY_DIR:-/var/tmp/crust-registry}/{plain,auth}.
set -euo pipefail

STATE=${CRUST_REGISTRY_DIR:-/var/tmp/crust-registry}
REGISTRY_BIN=/usr/bin/docker-registry
AUTH_USER=crust
AUTH_PASS=crust-secret

port_of() { [[ $1 == plain ]] && echo 5099 || echo 5098; }

# curl options that the instance needs to answer /v2/.
curl_auth() { if [[ $1 == auth ]]; then echo "-u $AUTH_USER:$AUTH_PASS"; fi; }

# Write the instance's config. Nothing in it points at another host: no
# notifications, no proxy (pull-through cache), no redis, no reporting.
write_config() {
  local name=$1 dir=$STATE/$1
  mkdir -p "$dir/data"
  {
    cat <<EOF
version: 0.1
log:
  level: info
  formatter: text
storage:
  filesystem:
    rootdirectory: $dir/data
  delete:
    enabled: true
  maintenance:
    uploadpurging:
      enabled: false
http:
  addr: 127.0.0.1:$(port_of "$name")
  secret: crust-test-registry-$name
  headers:
    X-Content-Type-Options: [nosniff]
EOF
    if [[ $name == auth ]]; then
      cat <<EOF
auth:
  htpasswd:
    realm: crust-test
    path: $dir/htpasswd
EOF
    fi
  } >"$dir/config.yml"
  # bcrypt (-B): distribution's htpasswd backend only accepts bcrypt hashes.
  if [[ $name == auth && ! -s $dir/htpasswd ]]; then
    htpasswd -B -b -c "$dir/htpasswd" "$AUTH_USER" "$AUTH_PASS" 2>/dev/null
  fi
}

# Pid from the pid file, if that process is alive and really a registry
# (guards against a stale pid file whose pid was reused).
live_pid() {
  local pidfile=$STATE/$1/registry.pid pid
  [[ -f $pidfile ]] || return 1
  pid=$(<"$pidfile")
  [[ $pid =~ ^[0-9]+$ ]] || return 1
  tr '\0' ' ' 2>/dev/null <"/proc/$pid/cmdline" | grep -q "docker-registry serve $STATE/$1/config.yml" || return 1
  echo "$pid"
}

answers() {
  # shellcheck disable=SC2046
  curl -fsS -o /dev/null --max-time 2 --noproxy '*' $(curl_auth "$1") "http://127.0.0.1:$(port_of "$1")/v2/" 2>/dev/null
}

start_one() {
  local name=$1 dir=$STATE/$1
  if live_pid "$name" >/dev/null && answers "$name"; then
    echo "registry $name: already running on 127.0.0.1:$(port_of "$name")"
    return 0
  fi
  if ! live_pid "$name" >/dev/null; then
    write_config "$name"
    # env -i: no REGISTRY_* variables from the caller can override the config.
    # setsid + nohup: the registry outlives this script and its terminal.
    setsid nohup env -i PATH=/usr/sbin:/usr/bin:/sbin:/bin \
      "$REGISTRY_BIN" serve "$dir/config.yml" >>"$dir/registry.log" 2>&1 </dev/null &
    echo $! >"$dir/registry.pid"
  fi
  for _ in $(seq 1 100); do # ~20s
    if answers "$name"; then
      echo "registry $name: running on 127.0.0.1:$(port_of "$name") (pid $(<"$dir/registry.pid"))"
      return 0
    fi
    live_pid "$name" >/dev/null || break # it died: no point waiting
    sleep 0.2
  done
  echo "registry $name: did not come up on 127.0.0.1:$(port_of "$name"); log tail:" >&2
  tail -n 10 "$dir/registry.log" >&2 || true
  return 1
}

stop_one() {
  local name=$1 pid
  if pid=$(live_pid "$name"); then
    kill "$pid"
    for _ in $(seq 1 50); do kill -0 "$pid" 2>/dev/null || break; sleep 0.1; done
    echo "registry $name: stopped (pid $pid)"
  else
    echo "registry $name: not running"
  fi
  rm -f "$STATE/$name/registry.pid"
}

status_one() {
  local name=$1 pid
  if pid=$(live_pid "$name") && answers "$name"; then
    echo "registry $name: running on 127.0.0.1:$(port_of "$name") (pid $pid)"
  else
    echo "registry $name: not running"
    return 1
  fi
}

case ${1:-} in
  start) start_one plain && start_one auth ;;
  stop) stop_one plain; stop_one auth ;;
  status) rc=0; status_one plain || rc=1; status_one auth || rc=1; exit $rc ;;
  *) echo "usage: $0 start|stop|status" >&2; exit 2 ;;
esac
