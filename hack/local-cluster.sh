#!/usr/bin/env bash
# Copyright 2026 The mqtt-operator Authors.
#
# Licensed under the Apache License, Version 2.0 (the "License");
# you may not use this file except in compliance with the License.
# You may obtain a copy of the License at
#
#     http://www.apache.org/licenses/LICENSE-2.0
#
# Unless required by applicable law or agreed to in writing, software
# distributed under the License is distributed on an "AS IS" BASIS,
# WITHOUT WARRANTIES OR CONDITIONS OF ANY KIND, either express or implied.
# See the License for the specific language governing permissions and
# limitations under the License.

# Usage: hack/local-cluster.sh up | down | status | kubeconfig | env | load-image IMAGE...
#
# A single-node Kubernetes cluster made of host processes, for machines where
# kind cannot run (no privileged containers, no pullable node image, offline).
# Needs root on Linux. See docs/local-cluster.md.
#
#   up          builds or reuses the binaries (hack/k8s-binaries.sh), installs
#               missing Debian packages, and starts etcd, a containerd of its
#               own, kube-apiserver, kube-controller-manager, kube-scheduler,
#               kubelet, kube-proxy, CoreDNS and local-path-provisioner (default
#               StorageClass "standard"). Waits until the node is Ready, the
#               default ServiceAccount exists and DNS answers. Prints the admin
#               kubeconfig path on stdout (progress goes to stderr). A healthy
#               cluster is left alone; stale state of a crashed one is cleaned
#               up first.
#   down        stops everything by the PIDs that up recorded (pods first,
#               through CRI, so that CNI cleans up after them) and removes all
#               state, network set-up and iptables rules. Safe to repeat.
#   status      shows the components, their memory and the node; exit status 0
#               when the cluster is up, 1 when it is partly up, 3 when it is down.
#   kubeconfig  prints the admin kubeconfig path.
#   env         prints shell exports for KUBECONFIG and a PATH with kubectl and
#               crictl (CONTAINER_RUNTIME_ENDPOINT): eval "$(hack/local-cluster.sh env)"
#   load-image  imports local Docker images into the cluster's containerd
#               (docker save | ctr -n k8s.io images import). Pods must use them
#               with imagePullPolicy IfNotPresent or Never.
#
# All traffic stays on this machine: the node IP is an address on lo, pods are
# on a bridge with no masquerading, iptables rules drop anything of the pod and
# service networks that would leave through another interface, CoreDNS has no
# upstream, and containerd's registry traffic goes to a dead local proxy.
#
# Environment:
#   LOCAL_CLUSTER_DIR  work folder: kubeconfig, certificates, rendered
#                      configuration, logs, image archive
#                      (default <repo>/bin/local-cluster)

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
ASSETS="${REPO_ROOT}/hack/local-cluster"

WORK="${LOCAL_CLUSTER_DIR:-${REPO_ROOT}/bin/local-cluster}"
ETC_DIR="${WORK}/etc"
PKI_DIR="${WORK}/pki"
LOG_DIR="${WORK}/logs"
IMAGES_DIR="${WORK}/images"
ADMIN_KUBECONFIG="${WORK}/admin.kubeconfig"

# Machine-wide state: one such cluster per machine. RUN_DIR records who
# started it and the PIDs, so that any checkout can stop it.
RUN_DIR=/run/local-cluster
PID_DIR="${RUN_DIR}/pids"
STATE_DIR=/var/lib/local-cluster
CTRD_SOCK="${RUN_DIR}/containerd/containerd.sock"
LOCK_FILE=/run/local-cluster.lock

NODE_NAME=local-cluster
NODE_IP=10.201.0.1
NODE_NET=10.201.0.0/24 # guarded: never routed off the machine
POD_CIDR=10.88.0.0/24
POD_NET=10.88.0.0/16 # guarded
POD_GW=10.88.0.1
SVC_CIDR=10.96.0.0/16
API_SVC_IP=10.96.0.1
BRIDGE=lcbr0
CNI_NET=local-cluster
API_PORT=6443
ETCD_PORT=2379
DNS_READY_PORT=8181
GUARD_CHAIN=LC-EGRESS-GUARD

PAUSE_IMAGE=localhost/local-cluster/pause:1
BUSYBOX_IMAGE=localhost/local-cluster/busybox:1

# Start order; down stops them in reverse groups (see do_down).
COMPONENTS=(etcd containerd kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy coredns local-path-provisioner)

# Host settings changed while the cluster runs and restored by down: kubelet
# sets the vm/kernel ones (protectKernelDefaults: false).
SYSCTLS=(net.ipv4.ip_forward net.bridge.bridge-nf-call-iptables vm.overcommit_memory vm.panic_on_oom
  kernel.panic kernel.panic_on_oops kernel.keys.root_maxkeys kernel.keys.root_maxbytes)

# Debian packages the cluster needs: command-or-path=package. Docker counts as
# installed when dockerd is: some base images ship only the docker client.
PACKAGES=(/usr/bin/containerd=containerd /usr/bin/containerd-shim-runc-v2=containerd /usr/bin/ctr=containerd
  runc=runc /usr/lib/cni/bridge=containernetworking-plugins /usr/lib/cni/host-local=containernetworking-plugins
  /usr/lib/cni/portmap=containernetworking-plugins /usr/lib/cni/firewall=containernetworking-plugins
  conntrack=conntrack socat=socat iptables=iptables openssl=openssl curl=curl ip=iproute2 ss=iproute2 sysctl=procps
  dockerd=docker.io)

# Whatever proxy the caller uses, the cluster's own addresses are reached
# directly (kubectl, curl and the components).
for v in NO_PROXY no_proxy; do
  export "${v}=${!v:+${!v},}${NODE_IP},127.0.0.1,localhost,${POD_NET},${SVC_CIDR},.svc,.cluster.local"
done

T0="${EPOCHREALTIME/./}"
log() {
  local now="${EPOCHREALTIME/./}"
  printf 'local-cluster: %6.1fs %s\n' "$(((now - T0) / 100000))e-1" "$*" >&2
}
die() {
  echo "local-cluster: error: $*" >&2
  exit 1
}

# ---------------------------------------------------------------- helpers

require_root() {
  [[ "$(uname -s)" == Linux ]] || die "Linux only"
  [[ "$(id -u)" == 0 ]] || die "must run as root (it starts kubelet and containerd and changes iptables)"
}

# lock serialises up/down/load-image of every checkout on this machine.
lock() {
  exec 7>"${LOCK_FILE}"
  if ! flock -n 7; then
    log "waiting for another hack/local-cluster.sh to finish"
    flock 7
  fi
}

ensure_packages() {
  local missing=() spec what pkg
  for spec in "${PACKAGES[@]}"; do
    what="${spec%%=*}"
    pkg="${spec#*=}"
    if [[ "${what}" == /* ]]; then
      [[ -x "${what}" ]] && continue
    else
      command -v "${what}" >/dev/null && continue
    fi
    [[ " ${missing[*]} " == *" ${pkg} "* ]] || missing+=("${pkg}")
  done
  ((${#missing[@]})) || return 0
  command -v apt-get >/dev/null || die "missing packages (${missing[*]}) and no apt-get to install them"
  log "installing Debian packages: ${missing[*]}"
  local out
  out="$(mktemp)"
  if ! DEBIAN_FRONTEND=noninteractive NEEDRESTART_SUSPEND=1 \
    bash -c 'apt-get update -qq && apt-get install -y -qq --no-install-recommends "$@"' apt "${missing[@]}" >"${out}" 2>&1; then
    cat "${out}" >&2
    rm -f "${out}"
    die "apt-get install ${missing[*]} failed"
  fi
  rm -f "${out}"
}

# render SRC DST fills in the @NAME@ placeholders of SRC.
render() {
  local tmp="$2.tmp"
  sed -e "s|@STATE_DIR@|${STATE_DIR}|g" -e "s|@RUN_DIR@|${RUN_DIR}|g" -e "s|@ETC_DIR@|${ETC_DIR}|g" \
    -e "s|@PKI_DIR@|${PKI_DIR}|g" -e "s|@CTRD_SOCK@|${CTRD_SOCK}|g" -e "s|@NODE_IP@|${NODE_IP}|g" \
    -e "s|@NODE_NAME@|${NODE_NAME}|g" -e "s|@POD_CIDR@|${POD_CIDR}|g" -e "s|@POD_GW@|${POD_GW}|g" \
    -e "s|@BRIDGE@|${BRIDGE}|g" -e "s|@CNI_NET@|${CNI_NET}|g" -e "s|@PAUSE_IMAGE@|${PAUSE_IMAGE}|g" \
    -e "s|@BUSYBOX_IMAGE@|${BUSYBOX_IMAGE}|g" -e "s|@ADMIN_KUBECONFIG@|${ADMIN_KUBECONFIG}|g" \
    -e "s|@DNS_READY_PORT@|${DNS_READY_PORT}|g" -e "s|@VOLUMES_DIR@|${STATE_DIR}/local-path|g" "$1" >"${tmp}"
  if grep -q '@[A-Z_]*@' "${tmp}"; then
    die "unfilled placeholder in $1: $(grep -o '@[A-Z_]*@' "${tmp}" | head -1)"
  fi
  mv -f "${tmp}" "$2"
}

# ---------------------------------------------------------------- processes

# pid_of NAME prints the PID of a running component, or fails. The PID file
# holds "PID EXE"; a recycled PID running something else does not count.
pid_of() {
  local f="${PID_DIR}/$1.pid" pid exe
  [[ -f "${f}" ]] || return 1
  read -r pid exe <"${f}" || return 1
  [[ -n "${pid}" && -d "/proc/${pid}" ]] || return 1
  [[ "$(readlink "/proc/${pid}/exe" 2>/dev/null)" == "${exe}" ]] || return 1
  echo "${pid}"
}

alive() { pid_of "$1" >/dev/null; }

# start NAME [VAR=VALUE...] EXE ARGS... starts a component in its own session,
# with the extra environment, its output in LOG_DIR/NAME.log, and records its
# PID and executable.
start() {
  local name="$1" envs=() exe pid i
  shift
  while [[ "$1" == *=* && "$1" != -* ]]; do
    envs+=("$1")
    shift
  done
  exe="$(readlink -f "$1")"
  [[ -x "${exe}" ]] || die "cannot start ${name}: no executable $1"
  # 7>&-: the lock of this script must not outlive it in the component.
  setsid env ${envs[@]+"${envs[@]}"} "$@" >>"${LOG_DIR}/${name}.log" 2>&1 </dev/null 7>&- &
  pid=$!
  echo "${pid} ${exe}" >"${PID_DIR}/${name}.pid"
  # Until setsid and env have exec'd, the PID runs something else.
  for ((i = 0; i < 40; i++)); do
    [[ "$(readlink "/proc/${pid}/exe" 2>/dev/null)" == "${exe}" ]] && return
    [[ -d "/proc/${pid}" ]] || break
    sleep 0.05
  done
  tail -n 20 "${LOG_DIR}/${name}.log" >&2 || true
  die "${name} did not start; its log is ${LOG_DIR}/${name}.log"
}

# running PID: the process exists and is not a zombie waiting to be reaped.
running() {
  local state
  state="$(awk '/^State:/ { print $2 }' "/proc/$1/status" 2>/dev/null)" || return 1
  [[ -n "${state}" && "${state}" != Z && "${state}" != X ]]
}

# stop NAME... sends SIGTERM to the components (by recorded PID), waits up to
# 15 s, then SIGKILLs what is left.
stop() {
  local pids=() name pid i left
  for name in "$@"; do
    if pid="$(pid_of "${name}")"; then
      pids+=("${pid}")
    fi
  done
  if ((${#pids[@]})); then
    log "stopping $*"
    kill -TERM "${pids[@]}" 2>/dev/null || true
    for ((i = 0; i < 60; i++)); do
      left=()
      for pid in "${pids[@]}"; do
        running "${pid}" && left+=("${pid}")
      done
      ((${#left[@]})) || break
      sleep 0.25
    done
    if ((${#left[@]})); then
      log "killing PIDs ${left[*]}, still running after 15s"
      kill -KILL "${left[@]}" 2>/dev/null || true
    fi
  fi
  for name in "$@"; do
    rm -f "${PID_DIR}/${name}.pid"
  done
}

# wait_for NAME WHAT SECONDS CMD... polls CMD until it succeeds; fails early,
# with the end of NAME's log, if component NAME dies.
wait_for() {
  local name="$1" what="$2" secs="$3"
  shift 3
  local deadline=$((SECONDS + secs))
  until "$@" >/dev/null 2>&1; do
    if [[ -n "${name}" ]] && ! alive "${name}"; then
      tail -n 30 "${LOG_DIR}/${name}.log" >&2 || true
      die "${name} exited while waiting for ${what}; its log is ${LOG_DIR}/${name}.log"
    fi
    if ((SECONDS >= deadline)); then
      [[ -n "${name}" ]] && tail -n 30 "${LOG_DIR}/${name}.log" >&2
      die "timed out after ${secs}s waiting for ${what}; logs are in ${LOG_DIR}"
    fi
    sleep 0.25
  done
  log "${what}"
}

# cluster_env NAME prints NAME as recorded by the up that started the cluster
# (RUN_DIR/cluster.env, written by this script).
cluster_env() {
  (
    # shellcheck source=/dev/null
    . "${RUN_DIR}/cluster.env" && echo "${!1}"
  )
}

# cached_bin_dir prints a directory of this checkout that holds the cluster
# binaries already (without building anything), or fails.
cached_bin_dir() {
  local d
  for d in ${BIN:+"${BIN}"} "${REPO_ROOT}"/bin/k8s/*-linux-*; do
    if [[ -x "${d}/kubectl" && -x "${d}/crictl" && -x "${d}/kube-proxy" ]]; then
      echo "${d}"
      return 0
    fi
  done
  return 1
}

kc() { "${BIN}/kubectl" --kubeconfig "${ADMIN_KUBECONFIG}" "$@"; }
ctr_() { ctr -a "${CTRD_SOCK}" -n k8s.io "$@"; }
crictl_() { "${BIN}/crictl" -r "unix://${CTRD_SOCK}" -i "unix://${CTRD_SOCK}" --timeout 10s "$@"; }

port_owner() { ss -Hltnp "sport = :$1" 2>/dev/null | sed -n 's/.*\(users:.*\)/\1/p' | head -1 || true; }

check_ports() {
  local p owner busy=()
  for p in "${API_PORT}" "${ETCD_PORT}" $((ETCD_PORT + 1)) $((ETCD_PORT + 2)) 10248 10249 10250 10256 10257 10259 "${DNS_READY_PORT}" 53; do
    owner="$(port_owner "${p}")"
    [[ -z "${owner}" ]] && continue
    # 53 is only a conflict on the node IP or the wildcard address.
    if [[ "${p}" == 53 ]] && ! ss -Hltn "sport = :53" | awk '{print $4}' | grep -qE "^(${NODE_IP}|0\.0\.0\.0|\*|\[::\]):53$"; then
      continue
    fi
    busy+=("${p} (${owner})")
  done
  ((${#busy[@]} == 0)) || die "ports in use, needed by the cluster: ${busy[*]}"
}

# ---------------------------------------------------------------- certificates

# Self-signed CA plus one certificate per component (ECDSA P-256), and
# kubeconfigs with embedded credentials. Kept across runs while the node
# parameters are the same and nothing expires within a day.
gen_pki() {
  local params="${NODE_NAME} ${NODE_IP} ${API_SVC_IP} v1" f ok=1
  if [[ -f "${PKI_DIR}/params" && "$(cat "${PKI_DIR}/params")" == "${params}" ]]; then
    for f in ca apiserver admin apiserver-kubelet-client controller-manager scheduler kubelet kubelet-serving kube-proxy front-proxy-ca front-proxy-client; do
      openssl x509 -checkend 86400 -noout -in "${PKI_DIR}/${f}.crt" >/dev/null 2>&1 || ok=0
    done
    [[ -f "${PKI_DIR}/sa.key" && -f "${ADMIN_KUBECONFIG}" ]] || ok=0
    if ((ok)); then
      log "certificates reused (${PKI_DIR})"
      return
    fi
  fi
  log "generating certificates (${PKI_DIR})"
  rm -rf "${PKI_DIR}"
  mkdir -p "${PKI_DIR}"
  (
    umask 077
    cd "${PKI_DIR}"
    key() { openssl genpkey -algorithm EC -pkeyopt ec_paramgen_curve:P-256 -out "$1.key" 2>/dev/null; }
    ca() { # NAME CN
      key "$1"
      openssl req -x509 -new -key "$1.key" -subj "/CN=$2" -days 3650 -sha256 -out "$1.crt" \
        -addext "basicConstraints=critical,CA:TRUE" -addext "keyUsage=critical,keyCertSign,cRLSign,digitalSignature" 2>/dev/null
    }
    cert() { # NAME CA SUBJECT [SANS]
      local n="$1" signer="$2" subj="$3" sans="${4:-}"
      key "${n}"
      openssl req -new -key "${n}.key" -subj "${subj}" -out "${n}.csr" 2>/dev/null
      {
        echo "basicConstraints=critical,CA:FALSE"
        echo "keyUsage=critical,digitalSignature,keyEncipherment"
        if [[ -n "${sans}" ]]; then
          echo "extendedKeyUsage=serverAuth,clientAuth"
          echo "subjectAltName=${sans}"
        else
          echo "extendedKeyUsage=clientAuth"
        fi
      } >"${n}.ext"
      openssl x509 -req -in "${n}.csr" -CA "${signer}.crt" -CAkey "${signer}.key" -set_serial "0x$(openssl rand -hex 16)" \
        -days 365 -sha256 -extfile "${n}.ext" -out "${n}.crt" 2>/dev/null
      rm -f "${n}.csr" "${n}.ext"
    }
    ca ca local-cluster-ca
    ca front-proxy-ca local-cluster-front-proxy-ca
    cert apiserver ca "/CN=kube-apiserver" \
      "DNS:kubernetes,DNS:kubernetes.default,DNS:kubernetes.default.svc,DNS:kubernetes.default.svc.cluster.local,DNS:localhost,DNS:${NODE_NAME},IP:127.0.0.1,IP:${API_SVC_IP},IP:${NODE_IP}"
    cert admin ca "/O=system:masters/CN=local-cluster-admin"
    cert apiserver-kubelet-client ca "/O=system:masters/CN=kube-apiserver-kubelet-client"
    cert controller-manager ca "/CN=system:kube-controller-manager"
    cert scheduler ca "/CN=system:kube-scheduler"
    cert kubelet ca "/O=system:nodes/CN=system:node:${NODE_NAME}"
    cert kubelet-serving ca "/CN=${NODE_NAME}" "DNS:${NODE_NAME},IP:${NODE_IP},IP:127.0.0.1"
    cert kube-proxy ca "/CN=system:kube-proxy"
    cert front-proxy-client front-proxy-ca "/CN=front-proxy-client"
    key sa
    openssl pkey -in sa.key -pubout -out sa.pub 2>/dev/null
    echo "${params}" >params
  ) || die "certificate generation failed"
  local n
  mkdir -p "${ETC_DIR}"
  for n in controller-manager scheduler kubelet kube-proxy; do
    write_kubeconfig "${ETC_DIR}/${n}.kubeconfig" "${n}"
  done
  write_kubeconfig "${ADMIN_KUBECONFIG}" admin
}

# write_kubeconfig FILE CERT_NAME
write_kubeconfig() {
  local b64=(base64 -w0)
  (
    umask 077
    cat >"$1.tmp" <<EOF
apiVersion: v1
kind: Config
clusters:
- name: local-cluster
  cluster:
    server: https://${NODE_IP}:${API_PORT}
    certificate-authority-data: $("${b64[@]}" "${PKI_DIR}/ca.crt")
users:
- name: local-cluster-$2
  user:
    client-certificate-data: $("${b64[@]}" "${PKI_DIR}/$2.crt")
    client-key-data: $("${b64[@]}" "${PKI_DIR}/$2.key")
contexts:
- name: local-cluster
  context:
    cluster: local-cluster
    user: local-cluster-$2
current-context: local-cluster
EOF
  )
  mv -f "$1.tmp" "$1"
}

# ---------------------------------------------------------------- images

# busybox_binary prints the path of a static busybox, from Debian's
# busybox-static package (downloaded and unpacked, not installed, so the
# machine's own busybox stays as it is).
busybox_binary() {
  local dir="${IMAGES_DIR}/cache/busybox-static"
  if [[ ! -x "${dir}/bin/busybox" ]]; then
    log "fetching Debian's busybox-static"
    rm -rf "${dir}.tmp"
    mkdir -p "${dir}.tmp"
    # As root, apt warns that it downloads unsandboxed: not worth showing.
    if ! (cd "${dir}.tmp" && apt-get download -qq busybox-static >/dev/null 2>&1); then
      apt-get update -qq >&2 || true
      (cd "${dir}.tmp" && apt-get download -qq busybox-static >&2) || die "apt-get download busybox-static failed"
    fi
    dpkg-deb -x "${dir}.tmp"/busybox-static_*.deb "${dir}.tmp/root" || die "cannot unpack busybox-static"
    mkdir -p "${dir}.tmp/bin"
    mv "${dir}.tmp/root/bin/busybox" "${dir}.tmp/bin/busybox"
    rm -rf "${dir}.tmp/root" "${dir}.tmp"/*.deb "${dir}"
    mv "${dir}.tmp" "${dir}"
  fi
  echo "${dir}/bin/busybox"
}

# ensure_images makes IMAGES_DIR/base-images.tar (pause and busybox, built
# FROM scratch with Docker), rebuilding it only when its inputs change.
ensure_images() {
  local ctx="${IMAGES_DIR}/context" tar="${IMAGES_DIR}/base-images.tar" sum
  mkdir -p "${ctx}/pause" "${ctx}/busybox/bin"
  if [[ ! -x "${ctx}/pause/pause" || "${ASSETS}/images/pause/main.go" -nt "${ctx}/pause/pause" ]]; then
    log "building the pause binary"
    (cd "${ASSETS}/images" && GOWORK=off CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o "${ctx}/pause/pause.tmp" ./pause) ||
      die "building the pause binary failed"
    mv -f "${ctx}/pause/pause.tmp" "${ctx}/pause/pause"
  fi
  cp "${ASSETS}/images/pause/Dockerfile" "${ctx}/pause/Dockerfile"
  local bb
  bb="$(busybox_binary)"
  if ! cmp -s "${bb}" "${ctx}/busybox/bin/busybox"; then
    rm -rf "${ctx}/busybox/bin"
    mkdir -p "${ctx}/busybox/bin"
    cp "${bb}" "${ctx}/busybox/bin/busybox"
    local applet
    for applet in $("${bb}" --list); do
      [[ "${applet}" == busybox ]] || ln -s busybox "${ctx}/busybox/bin/${applet}"
    done
  fi
  cp "${ASSETS}/images/busybox/Dockerfile" "${ctx}/busybox/Dockerfile"
  sum="$({
    echo "${PAUSE_IMAGE} ${BUSYBOX_IMAGE}"
    cd "${ctx}" && find . -type f -print0 | sort -z | xargs -0 sha256sum
    find . -type l -printf '%p -> %l\n' | sort
  } | sha256sum | cut -d' ' -f1)"
  if [[ -f "${tar}" && "$(cat "${tar}.sum" 2>/dev/null)" == "${sum}" ]]; then
    return
  fi
  ensure_docker
  log "building images ${PAUSE_IMAGE} and ${BUSYBOX_IMAGE} (docker, FROM scratch)"
  docker_build "${PAUSE_IMAGE}" "${ctx}/pause"
  docker_build "${BUSYBOX_IMAGE}" "${ctx}/busybox"
  docker save -o "${tar}.tmp" "${PAUSE_IMAGE}" "${BUSYBOX_IMAGE}" || die "docker save failed"
  mv -f "${tar}.tmp" "${tar}"
  echo "${sum}" >"${tar}.sum"
}

# docker_build TAG CONTEXT builds with the classic builder (no BuildKit
# needed; FROM scratch needs no pull), quietly unless it fails.
docker_build() {
  local out
  if ! out="$(DOCKER_BUILDKIT=0 docker build -q -t "$1" "$2" 2>&1)"; then
    echo "${out}" >&2
    die "docker build of $1 failed"
  fi
}

# ensure_docker makes sure a Docker daemon answers, starting dockerd if it
# does not. Docker is a service of the machine that other tools use too, not a
# part of the cluster: down leaves it running.
ensure_docker() {
  command -v docker >/dev/null || die "docker is not installed (Debian package docker.io)"
  docker info >/dev/null 2>&1 && return
  command -v dockerd >/dev/null || die "the Docker daemon does not answer and there is no dockerd to start (Debian package docker.io)"
  log "starting dockerd (log: ${WORK}/dockerd.log); it stays running after down"
  mkdir -p "${WORK}"
  setsid dockerd >>"${WORK}/dockerd.log" 2>&1 </dev/null 7>&- &
  wait_until 60 docker info || die "dockerd did not answer within 60s; see ${WORK}/dockerd.log"
}

# import_images ARCHIVE imports a docker-save archive into containerd's
# k8s.io namespace (the one the CRI plugin uses).
import_images() {
  ctr_ images import "$1" >>"${LOG_DIR}/ctr-import.log" 2>&1 || die "importing $1 into containerd failed; see ${LOG_DIR}/ctr-import.log"
}

# ---------------------------------------------------------------- network

save_sysctls() {
  [[ -f "${RUN_DIR}/sysctl.orig" ]] && return
  local k
  for k in "${SYSCTLS[@]}"; do
    echo "${k} $(sysctl -n "${k}" 2>/dev/null || echo -)"
  done >"${RUN_DIR}/sysctl.orig"
}

restore_sysctls() {
  [[ -f "${RUN_DIR}/sysctl.orig" ]] || return 0
  local k v
  while read -r k v; do
    [[ "${v}" == - ]] && continue
    [[ "$(sysctl -n "${k}" 2>/dev/null)" == "${v}" ]] || sysctl -qw "${k}=${v}" || true
  done <"${RUN_DIR}/sysctl.orig"
  rm -f "${RUN_DIR}/sysctl.orig"
}

# guard_rules TARGET: the egress guard. Packets to or from the pod network, to
# the service network or to the node network may use lo and the pod bridge
# only; whatever would leave through another interface (eth0, docker0) is
# stopped. In filter they are REJECTed, for a fast failure: the chain is
# jumped to first in OUTPUT and FORWARD, and from CNI-ADMIN, because the CNI
# firewall plugin later inserts its own FORWARD rule (which ACCEPTs everything
# from a pod) above ours but consults CNI-ADMIN first. Whatever any chain
# accepts, mangle POSTROUTING, which every routed packet passes after DNAT,
# DROPs them.
guard_rules() {
  echo "-o lo -j RETURN"
  echo "-o ${BRIDGE} -j RETURN"
  echo "-s ${POD_NET} -j $1"
  echo "-d ${POD_NET} -j $1"
  echo "-d ${SVC_CIDR} -j $1"
  echo "-d ${NODE_NET} -j $1"
}

has_node_ip() { [[ "$(ip -4 addr show dev lo)" == *" ${NODE_IP}/32 "* ]]; }

net_up() {
  if [[ ! -d /proc/sys/net/bridge ]]; then
    command -v modprobe >/dev/null && modprobe br_netfilter 2>/dev/null
    [[ -d /proc/sys/net/bridge ]] || die "br_netfilter is not available (no /proc/sys/net/bridge)"
  fi
  save_sysctls
  sysctl -qw net.ipv4.ip_forward=1 net.bridge.bridge-nf-call-iptables=1
  has_node_ip || ip addr add "${NODE_IP}/32" dev lo
  local table target chain rule
  for table in filter mangle; do
    target=REJECT
    [[ "${table}" == mangle ]] && target=DROP
    iptables -w -t "${table}" -N "${GUARD_CHAIN}" 2>/dev/null || iptables -w -t "${table}" -F "${GUARD_CHAIN}"
    while read -r rule; do
      # shellcheck disable=SC2086 # a rule is several words
      iptables -w -t "${table}" -A "${GUARD_CHAIN}" ${rule}
    done < <(guard_rules "${target}")
    if [[ "${table}" == filter ]]; then
      set -- OUTPUT FORWARD
    else
      set -- POSTROUTING
    fi
    for chain in "$@"; do
      iptables -w -t "${table}" -C "${chain}" -j "${GUARD_CHAIN}" 2>/dev/null ||
        iptables -w -t "${table}" -I "${chain}" 1 -j "${GUARD_CHAIN}"
    done
  done
  iptables -w -N CNI-ADMIN 2>/dev/null || true
  iptables -w -C CNI-ADMIN -j "${GUARD_CHAIN}" 2>/dev/null || iptables -w -I CNI-ADMIN 1 -j "${GUARD_CHAIN}"
}

# del_chains PREFIX_REGEX: removes the jumps to, then the chains whose names
# match, in every table.
del_chains() {
  local table rule chain
  for table in filter nat mangle raw; do
    iptables -w -t "${table}" -S 2>/dev/null | { grep -E "^-A .* -j ($1)( |$)" || true; } | sed 's/^-A/-D/' |
      while read -r rule; do
        # shellcheck disable=SC2086 # the rule as iptables -S prints it
        eval iptables -w -t "${table}" ${rule} 2>/dev/null || true
      done
    for chain in $(iptables -w -t "${table}" -S 2>/dev/null | awk -v re="^($1)$" '$1 == "-N" && $2 ~ re { print $2 }'); do
      iptables -w -t "${table}" -F "${chain}" 2>/dev/null || true
    done
    for chain in $(iptables -w -t "${table}" -S 2>/dev/null | awk -v re="^($1)$" '$1 == "-N" && $2 ~ re { print $2 }'); do
      iptables -w -t "${table}" -X "${chain}" 2>/dev/null || true
    done
  done
}

net_down() {
  ip link del "${BRIDGE}" 2>/dev/null || true
  # kube-proxy --cleanup removes its own rules; this catches kubelet's
  # (KUBE-FIREWALL, KUBE-KUBELET-CANARY), the CNI firewall and portmap
  # chains, and the egress guard.
  del_chains "KUBE-[A-Z0-9-]+|CNI-[A-Za-z0-9-]+|${GUARD_CHAIN}"
  ip addr del "${NODE_IP}/32" dev lo 2>/dev/null || true
  restore_sysctls
}

# ---------------------------------------------------------------- down

# unmount_under DIR...: everything mounted below DIR (deepest first; stacked
# mounts too), so that removing DIR cannot reach into bind-mounted host paths.
unmount_under() {
  local d m i
  for d in "$@"; do
    for ((i = 0; i < 5; i++)); do
      mapfile -t mounts < <(findmnt -rn -o TARGET | awk -v d="${d}" 'index($0, d "/") == 1 || $0 == d' | sort -r)
      ((${#mounts[@]})) || break
      for m in "${mounts[@]}"; do
        umount "${m}" 2>/dev/null || umount -l "${m}" 2>/dev/null || true
      done
    done
  done
}

# remove_pods stops and removes every pod sandbox through CRI, so that the CNI
# plugins release addresses and rules. If containerd died, it is started again
# for this (it finds its shims and containers from its state).
remove_pods() {
  [[ -x "${BIN:-}/crictl" ]] || return 0
  if ! alive containerd && [[ -d "${STATE_DIR}/containerd" && -f "${ETC_DIR}/containerd.toml" ]]; then
    log "starting containerd again to remove the pods of a crashed cluster"
    mkdir -p "${PID_DIR}" "${LOG_DIR}"
    start_containerd
    if ! wait_until 20 ctr -a "${CTRD_SOCK}" version; then
      log "containerd did not come back; pods cannot be removed through CRI"
      return 0
    fi
  fi
  if alive containerd; then
    local pods
    pods="$(crictl_ pods -q 2>/dev/null || true)"
    if [[ -n "${pods}" ]]; then
      log "removing $(wc -w <<<"${pods}") pods through CRI"
      # shellcheck disable=SC2086 # one ID per word
      crictl_ stopp ${pods} >/dev/null 2>&1 || true
      # shellcheck disable=SC2086
      crictl_ rmp -f ${pods} >/dev/null 2>&1 || true
    fi
  fi
}

# wait_until SECONDS CMD... polls CMD quietly; fails after SECONDS.
wait_until() {
  local deadline=$((SECONDS + $1))
  shift
  until "$@" >/dev/null 2>&1; do
    ((SECONDS < deadline)) || return 1
    sleep 0.25
  done
}

# kill_shims ends containerd-shim processes of this cluster's containerd that
# outlived it (only after a crash; normally removing the pods ends them).
kill_shims() {
  local p pids=()
  for p in /proc/[0-9]*; do
    [[ "$(readlink "${p}/exe" 2>/dev/null)" == */containerd-shim-runc-v2 ]] || continue
    [[ "$(tr '\0' ' ' <"${p}/cmdline" 2>/dev/null)" == *"-address ${CTRD_SOCK} "* ]] && pids+=("${p#/proc/}")
  done
  if ((${#pids[@]})); then
    log "killing leftover containerd shims: ${pids[*]}"
    kill -KILL "${pids[@]}" 2>/dev/null || true
  fi
}

# remove_cgroups removes the (empty) kubepods cgroups that kubelet created.
remove_cgroups() {
  local d
  for d in /sys/fs/cgroup/*/kubepods /sys/fs/cgroup/unified/kubepods /sys/fs/cgroup/kubepods; do
    [[ -d "${d}" ]] || continue
    find "${d}" -depth -type d -exec rmdir {} \; 2>/dev/null || true
  done
}

do_down() {
  # The cluster may have been started from another checkout: use its binaries
  # and folders (local: the functions called from here see these).
  local BIN="${BIN:-}" ETC_DIR="${ETC_DIR}" LOG_DIR="${LOG_DIR}"
  if [[ -f "${RUN_DIR}/cluster.env" ]]; then
    BIN="$(cluster_env BIN)"
    ETC_DIR="$(cluster_env ETC_DIR)"
    LOG_DIR="$(cluster_env LOG_DIR)"
  fi
  # That checkout may be gone (e.g. a CI clone): any cached binaries will do.
  if [[ ! -x "${BIN}/crictl" || ! -x "${BIN}/kube-proxy" ]]; then
    BIN="$(cached_bin_dir || true)"
  fi
  mkdir -p "${LOG_DIR}"
  stop local-path-provisioner coredns kube-controller-manager kube-scheduler
  stop kubelet
  remove_pods
  stop kube-proxy
  if [[ -x "${BIN}/kube-proxy" ]]; then
    "${BIN}/kube-proxy" --cleanup >>"${LOG_DIR}/kube-proxy-cleanup.log" 2>&1 || true
  fi
  stop kube-apiserver
  stop etcd containerd
  kill_shims
  unmount_under "${STATE_DIR}" "${RUN_DIR}"
  rm -rf --one-file-system "${STATE_DIR}"
  rm -f /var/lib/cni/results/"${CNI_NET}"-* 2>/dev/null || true
  net_down
  remove_cgroups
  rm -rf --one-file-system "${RUN_DIR}"
}

# ---------------------------------------------------------------- up

start_containerd() {
  # Registry traffic (a pull of an image that was not imported) goes to a dead
  # local proxy instead of leaving the machine.
  mkdir -p "${RUN_DIR}/containerd"
  start containerd PATH=/usr/sbin:/usr/bin:/sbin:/bin HTTP_PROXY=http://127.0.0.1:9 HTTPS_PROXY=http://127.0.0.1:9 \
    http_proxy=http://127.0.0.1:9 https_proxy=http://127.0.0.1:9 NO_PROXY= no_proxy= \
    /usr/bin/containerd --config "${ETC_DIR}/containerd.toml"
}

# healthy: every component runs and the API server is ready.
healthy() {
  local c
  for c in "${COMPONENTS[@]}"; do
    alive "${c}" || return 1
  done
  kc get --raw /readyz >/dev/null 2>&1
}

# owner prints the work folder of the running (or crashed) cluster.
owner() {
  [[ -f "${RUN_DIR}/cluster.env" ]] && cluster_env WORK
}

leftovers() {
  [[ -d "${PID_DIR}" || -f "${RUN_DIR}/cluster.env" || -d "${STATE_DIR}" || -e "/sys/class/net/${BRIDGE}" ]] && return 0
  has_node_ip && return 0
  iptables -w -S "${GUARD_CHAIN}" >/dev/null 2>&1
}

do_up() {
  local o
  o="$(owner || true)"
  if [[ -n "${o}" && "${o}" != "${WORK}" ]]; then
    for c in "${COMPONENTS[@]}"; do
      if alive "${c}"; then
        die "a local cluster started from ${o} is running; stop it first with hack/local-cluster.sh down"
      fi
    done
  fi
  if [[ "${o}" == "${WORK}" ]] && healthy; then
    log "the cluster is already up"
    ensure_docker # images are built with it (load-image)
    echo "${ADMIN_KUBECONFIG}"
    return
  fi
  if leftovers; then
    log "cleaning up the state of a previous cluster"
    do_down
  fi
  check_ports

  mkdir -p "${ETC_DIR}/cni" "${PID_DIR}" "${IMAGES_DIR}"
  rm -rf "${LOG_DIR}.previous"
  [[ -d "${LOG_DIR}" ]] && mv "${LOG_DIR}" "${LOG_DIR}.previous"
  mkdir -p "${LOG_DIR}"
  cat >"${RUN_DIR}/cluster.env" <<EOF
WORK='${WORK}'
BIN='${BIN}'
ETC_DIR='${ETC_DIR}'
LOG_DIR='${LOG_DIR}'
ADMIN_KUBECONFIG='${ADMIN_KUBECONFIG}'
EOF

  ensure_images
  gen_pki
  render "${ASSETS}/config/containerd.toml" "${ETC_DIR}/containerd.toml"
  render "${ASSETS}/config/cni.conflist" "${ETC_DIR}/cni/10-${CNI_NET}.conflist"
  render "${ASSETS}/config/kubelet.yaml" "${ETC_DIR}/kubelet.yaml"
  render "${ASSETS}/config/kube-proxy.yaml" "${ETC_DIR}/kube-proxy.yaml"
  render "${ASSETS}/config/Corefile" "${ETC_DIR}/Corefile"
  render "${ASSETS}/manifests/local-path-storage.yaml" "${ETC_DIR}/local-path-storage.yaml"
  echo "nameserver ${NODE_IP}" >"${ETC_DIR}/pod-resolv.conf"

  net_up
  log "network ready: node IP ${NODE_IP} on lo, egress guard in place"
  mkdir -p "${STATE_DIR}/local-path" "${STATE_DIR}/cni/networks"

  local P="${PKI_DIR}"
  start etcd "${BIN}/etcd" --name local-cluster --data-dir "${STATE_DIR}/etcd" \
    --listen-client-urls "http://127.0.0.1:${ETCD_PORT}" --advertise-client-urls "http://127.0.0.1:${ETCD_PORT}" \
    --listen-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" --initial-advertise-peer-urls "http://127.0.0.1:$((ETCD_PORT + 1))" \
    --initial-cluster "local-cluster=http://127.0.0.1:$((ETCD_PORT + 1))" \
    --listen-metrics-urls "http://127.0.0.1:$((ETCD_PORT + 2))" \
    --quota-backend-bytes 2147483648 --unsafe-no-fsync --log-level warn
  start_containerd
  wait_for etcd "etcd ready" 60 curl -sf "http://127.0.0.1:${ETCD_PORT}/health"

  start kube-apiserver "${BIN}/kube-apiserver" --advertise-address="${NODE_IP}" --bind-address="${NODE_IP}" \
    --secure-port="${API_PORT}" --etcd-servers="http://127.0.0.1:${ETCD_PORT}" \
    --service-cluster-ip-range="${SVC_CIDR}" --service-node-port-range=30000-32767 \
    --client-ca-file="${P}/ca.crt" --tls-cert-file="${P}/apiserver.crt" --tls-private-key-file="${P}/apiserver.key" \
    --kubelet-client-certificate="${P}/apiserver-kubelet-client.crt" --kubelet-client-key="${P}/apiserver-kubelet-client.key" \
    --kubelet-preferred-address-types=InternalIP \
    --service-account-key-file="${P}/sa.pub" --service-account-signing-key-file="${P}/sa.key" \
    --service-account-issuer=https://kubernetes.default.svc.cluster.local \
    --authorization-mode=Node,RBAC --enable-admission-plugins=NodeRestriction --allow-privileged=true \
    --requestheader-client-ca-file="${P}/front-proxy-ca.crt" --requestheader-allowed-names=front-proxy-client \
    --requestheader-username-headers=X-Remote-User --requestheader-group-headers=X-Remote-Group \
    --requestheader-extra-headers-prefix=X-Remote-Extra- \
    --proxy-client-cert-file="${P}/front-proxy-client.crt" --proxy-client-key-file="${P}/front-proxy-client.key" \
    --endpoint-reconciler-type=lease --profiling=false
  wait_for containerd "containerd ready" 60 ctr -a "${CTRD_SOCK}" version
  import_images "${IMAGES_DIR}/base-images.tar"
  log "images imported: ${PAUSE_IMAGE} ${BUSYBOX_IMAGE}"
  wait_for kube-apiserver "kube-apiserver ready" 120 kc get --raw /readyz

  start kube-controller-manager "${BIN}/kube-controller-manager" --kubeconfig="${ETC_DIR}/controller-manager.kubeconfig" \
    --authentication-kubeconfig="${ETC_DIR}/controller-manager.kubeconfig" \
    --authorization-kubeconfig="${ETC_DIR}/controller-manager.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --use-service-account-credentials=true \
    --service-account-private-key-file="${P}/sa.key" --root-ca-file="${P}/ca.crt" \
    --cluster-signing-cert-file="${P}/ca.crt" --cluster-signing-key-file="${P}/ca.key" \
    --allocate-node-cidrs=false --service-cluster-ip-range="${SVC_CIDR}" --profiling=false
  start kube-scheduler "${BIN}/kube-scheduler" --kubeconfig="${ETC_DIR}/scheduler.kubeconfig" \
    --authentication-kubeconfig="${ETC_DIR}/scheduler.kubeconfig" --authorization-kubeconfig="${ETC_DIR}/scheduler.kubeconfig" \
    --bind-address=127.0.0.1 --leader-elect=false --profiling=false
  start kubelet "${BIN}/kubelet" --config="${ETC_DIR}/kubelet.yaml" --kubeconfig="${ETC_DIR}/kubelet.kubeconfig" \
    --root-dir="${STATE_DIR}/kubelet" --node-ip="${NODE_IP}" --hostname-override="${NODE_NAME}"
  start kube-proxy "${BIN}/kube-proxy" --config="${ETC_DIR}/kube-proxy.yaml"
  start coredns "${BIN}/coredns" -conf "${ETC_DIR}/Corefile"
  kc apply -f "${ETC_DIR}/local-path-storage.yaml" >>"${LOG_DIR}/local-path-storage-apply.log" 2>&1 ||
    die "applying the local-path storage objects failed; see ${LOG_DIR}/local-path-storage-apply.log"
  start local-path-provisioner "${BIN}/local-path-provisioner" start --kubeconfig "${ADMIN_KUBECONFIG}" \
    --namespace local-path-storage --configmap-name local-path-config \
    --service-account-name local-path-provisioner-service-account \
    --provisioner-name rancher.io/local-path --helper-image "${BUSYBOX_IMAGE}"

  wait_for kubelet "node ${NODE_NAME} registered" 120 kc get node "${NODE_NAME}"
  wait_for kubelet "node ${NODE_NAME} Ready" 120 kc wait --for=condition=Ready "node/${NODE_NAME}" --timeout=2s
  wait_for kube-controller-manager "default ServiceAccount created" 120 kc -n default get serviceaccount default
  wait_for kube-controller-manager "kube-root-ca.crt published" 60 kc -n default get configmap kube-root-ca.crt
  wait_for coredns "DNS ready" 60 curl -sf "http://127.0.0.1:${DNS_READY_PORT}/ready"
  local c
  for c in "${COMPONENTS[@]}"; do
    alive "${c}" || die "${c} exited during start-up; see ${LOG_DIR}/${c}.log"
  done
  # Images for the cluster are built with Docker (load-image): make sure it answers
  # even when the cached base images meant it was not needed above.
  ensure_docker
  log "cluster up; kubeconfig ${ADMIN_KUBECONFIG}, logs in ${LOG_DIR}"
  echo "${ADMIN_KUBECONFIG}"
}

# ---------------------------------------------------------------- status

do_status() {
  local c pid rss total=0 up=0 n=0
  if [[ -f "${RUN_DIR}/cluster.env" ]]; then
    WORK="$(cluster_env WORK)"
    BIN="$(cluster_env BIN)"
    LOG_DIR="$(cluster_env LOG_DIR)"
    ADMIN_KUBECONFIG="$(cluster_env ADMIN_KUBECONFIG)"
    echo "started from: ${WORK}"
  fi
  echo "kubeconfig:   ${ADMIN_KUBECONFIG}"
  echo "binaries:     ${BIN:-unknown}"
  echo "logs:         ${LOG_DIR}"
  echo "node:         ${NODE_NAME} (${NODE_IP}), pods ${POD_CIDR}, services ${SVC_CIDR}"
  printf '%-24s %8s %9s\n' COMPONENT PID RSS_MiB
  for c in "${COMPONENTS[@]}"; do
    n=$((n + 1))
    if pid="$(pid_of "${c}")"; then
      rss="$(awk '/^VmRSS:/ { print int($2 / 1024) }' "/proc/${pid}/status")"
      total=$((total + rss))
      up=$((up + 1))
      printf '%-24s %8s %9s\n' "${c}" "${pid}" "${rss}"
    else
      printf '%-24s %8s %9s\n' "${c}" - "not running"
    fi
  done
  local shims=0 p
  for p in /proc/[0-9]*; do
    [[ "$(readlink "${p}/exe" 2>/dev/null)" == */containerd-shim-runc-v2 ]] || continue
    if [[ "$(tr '\0' ' ' <"${p}/cmdline" 2>/dev/null)" == *"-address ${CTRD_SOCK} "* ]]; then
      shims=$((shims + 1))
      total=$((total + $(awk '/^VmRSS:/ { print int($2 / 1024) }' "${p}/status")))
    fi
  done
  printf '%-24s %8s %9s\n' "containerd shims" "${shims}" "" "total" "" "${total}"
  if ((up == n)) && [[ -n "${BIN:-}" ]]; then
    echo
    "${BIN}/kubectl" --kubeconfig "${ADMIN_KUBECONFIG}" get nodes -o wide 2>&1 || true
    local g
    g="$({
      iptables -w -t filter -L "${GUARD_CHAIN}" -v -n -x 2>/dev/null
      iptables -w -t mangle -L "${GUARD_CHAIN}" -v -n -x 2>/dev/null
    } | awk '$3 == "REJECT" || $3 == "DROP" { s += $1 } END { print s + 0 }')"
    echo "egress guard: ${g} packets stopped"
    return 0
  fi
  ((up == 0)) && return 3
  return 1
}

# ---------------------------------------------------------------- load-image

do_load_image() {
  (($#)) || die "usage: hack/local-cluster.sh load-image IMAGE..."
  alive containerd || die "the cluster is not running (hack/local-cluster.sh up)"
  ensure_docker
  local img
  for img in "$@"; do
    docker image inspect "${img}" >/dev/null 2>&1 || die "no Docker image ${img} (build it first)"
  done
  log "importing $* into the cluster's containerd"
  docker save "$@" | ctr -a "${CTRD_SOCK}" -n k8s.io images import - >&2 ||
    die "importing $* failed"
  log "imported $*"
}

# ---------------------------------------------------------------- main

main() {
  local cmd="${1:-}"
  (($#)) && shift
  case "${cmd}" in
  up)
    require_root
    ensure_packages
    BIN="$("${REPO_ROOT}/hack/k8s-binaries.sh")" || die "could not provide the Kubernetes binaries"
    lock
    do_up
    ;;
  down)
    require_root
    lock
    T0="${EPOCHREALTIME/./}"
    if leftovers; then
      do_down
      log "cluster down"
    else
      log "no cluster to stop"
    fi
    rmdir "${RUN_DIR}" 2>/dev/null || true
    ;;
  status)
    do_status
    ;;
  kubeconfig)
    echo "${ADMIN_KUBECONFIG}"
    ;;
  env)
    local bin
    bin="$(cached_bin_dir)" || die "no binaries yet: run hack/local-cluster.sh up"
    printf 'export KUBECONFIG=%q\n' "${ADMIN_KUBECONFIG}"
    # shellcheck disable=SC2016 # $PATH is for the shell that evals this
    printf 'export PATH=%q:"$PATH"\n' "${bin}"
    printf 'export CONTAINER_RUNTIME_ENDPOINT=%q IMAGE_SERVICE_ENDPOINT=%q\n' "unix://${CTRD_SOCK}" "unix://${CTRD_SOCK}"
    ;;
  load-image)
    require_root
    lock
    [[ -f "${RUN_DIR}/cluster.env" ]] && LOG_DIR="$(cluster_env LOG_DIR)"
    do_load_image "$@"
    ;;
  *)
    sed -n '/^# Usage:/,/^$/p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//' >&2
    [[ "${cmd}" == -h || "${cmd}" == --help || "${cmd}" == help ]] && exit 0
    exit 2
    ;;
  esac
}

main "$@"
