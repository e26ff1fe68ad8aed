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

# Usage: hack/k8s-binaries.sh
#
# Makes sure that every binary of the single-node cluster of
# hack/local-cluster.sh is present under bin/k8s/<version>-<os>-<arch>/ and
# prints that directory, and nothing else, on stdout:
#
#   kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy
#   kubectl                  Kubernetes, the version pinned in hack/tools/kube
#   etcd                     the version pinned in hack/tools/etcd
#   coredns                  hack/tools/coredns
#   local-path-provisioner   hack/tools/local-path-provisioner
#   crictl                   hack/tools/crictl
#
# It is the same directory as hack/envtest-binaries.sh uses (KUBEBUILDER_ASSETS),
# so kube-apiserver and etcd built or downloaded for envtest are reused.
# Missing binaries are built from source through the Go module proxy from
# those scratch modules (CGO_ENABLED=0, -trimpath, the same flags as
# hack/envtest-binaries.sh so that the Go build cache is shared). The
# Kubernetes binaries are stamped with their version (component-base and
# client-go), so `kubectl version` and clients that check the server version
# work. A cold build takes 10-20 minutes of CPU on 2 cores; a warm run returns
# at once.
#
# Each binary built here has a <name>.version file beside it naming the module
# version it was built from; a binary whose pin changed is rebuilt. Writes are atomic (temporary file + rename), concurrent runs are
# serialised with flock. Progress goes to stderr. Works from any directory.

set -euo pipefail

# Everything but the final answer goes to stderr; fd 3 is the real stdout.
exec 3>&1 1>&2

log() { echo "k8s-binaries: $*"; }
die() {
  echo "k8s-binaries: error: $*"
  exit 1
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${REPO_ROOT}/bin"
TOOLS_DIR="${REPO_ROOT}/hack/tools"

command -v go >/dev/null || die "go is not on PATH"

# Binaries run on this machine: build for the host even if GOOS/GOARCH are set
# for cross-compiling. GOWORK=off keeps a go.work at the root out of the way.
GOHOSTOS="$(go env GOHOSTOS)"
GOHOSTARCH="$(go env GOHOSTARCH)"
export GOOS="${GOHOSTOS}" GOARCH="${GOHOSTARCH}" GOWORK=off CGO_ENABLED=0

# pinned MODULE_DIR MODULE prints the version of MODULE required by the go.mod
# in MODULE_DIR.
pinned() {
  local v
  v="$(awk -v m="$2" '($1 == "require" && $2 == m) { print $3; exit } ($1 == m && $2 ~ /^v/) { print $2; exit }' "$1/go.mod" 2>/dev/null)" || true
  [[ -n "${v}" ]] || die "cannot find the version of $2 in ${1#"${REPO_ROOT}/"}/go.mod"
  echo "${v}"
}

K8S_VERSION="$(pinned "${TOOLS_DIR}/kube" k8s.io/kubernetes)" # v1.37.2
K8S_MINOR="$(cut -d. -f2 <<<"${K8S_VERSION}")"
OUT_DIR="${BIN_DIR}/k8s/${K8S_VERSION#v}-${GOHOSTOS}-${GOHOSTARCH}"

KUBE_CMDS=(kube-apiserver kube-controller-manager kube-scheduler kubelet kube-proxy kubectl)

# The other binaries: NAME MODULE_DIR MODULE PACKAGE [VERSION_VARIABLE]
# (a string variable stamped with the module version, if it has one).
OTHER=(
  "etcd etcd go.etcd.io/etcd/server/v3 go.etcd.io/etcd/server/v3"
  "coredns coredns github.com/coredns/coredns github.com/coredns/coredns"
  "local-path-provisioner local-path-provisioner github.com/rancher/local-path-provisioner github.com/rancher/local-path-provisioner main.VERSION"
  "crictl crictl sigs.k8s.io/cri-tools sigs.k8s.io/cri-tools/cmd/crictl sigs.k8s.io/cri-tools/pkg/version.Version"
)

is_bin() { [[ -f "$1" && -x "$1" ]]; }

# version_arg NAME prints the flag that makes NAME print its version.
version_arg() {
  case "$1" in
  coredns) echo -version ;;
  *) echo --version ;;
  esac
}

# KUBE_RECORD is what NAME.version holds for a Kubernetes binary built here.
KUBE_RECORD="k8s.io/kubernetes@${K8S_VERSION} stamped"

# bin_ok NAME RECORD: the cached binary exists and its NAME.version file holds
# RECORD. Without such a file (kube-apiserver and etcd built or downloaded by
# hack/envtest-binaries.sh), the binary must report the pinned version: an
# unstamped Kubernetes build reports v0.0.0-master+$Format:%H$.
bin_ok() {
  local b="${OUT_DIR}/$1" want="$2"
  is_bin "${b}" || return 1
  if [[ -f "${b}.version" ]]; then
    [[ "$(cat "${b}.version")" == "${want}" ]]
    return
  fi
  local out
  case "$1" in
  etcd)
    out="$("${b}" --version 2>/dev/null)" || return 1
    [[ "${out}" == *"etcd Version: ${want#*@v}"* ]]
    ;;
  kubectl)
    out="$("${b}" version --client 2>/dev/null)" || return 1
    [[ "${out}" == *"${K8S_VERSION}"* ]]
    ;;
  kube-*)
    out="$("${b}" --version 2>/dev/null)" || return 1
    [[ "${out}" == *"Kubernetes ${K8S_VERSION}"* ]]
    ;;
  *) return 1 ;;
  esac
}

missing_kube=()
missing_other=()
check_all() {
  missing_kube=()
  missing_other=()
  local c spec name moddir mod pkg var
  for c in "${KUBE_CMDS[@]}"; do
    bin_ok "${c}" "${KUBE_RECORD}" || missing_kube+=("${c}")
  done
  for spec in "${OTHER[@]}"; do
    read -r name moddir mod pkg var <<<"${spec}"
    bin_ok "${name}" "${mod}@$(pinned "${TOOLS_DIR}/${moddir}" "${mod}")" || missing_other+=("${spec}")
  done
}

check_all
if ((${#missing_kube[@]} == 0 && ${#missing_other[@]} == 0)); then
  echo "${OUT_DIR}" >&3
  exit 0
fi

mkdir -p "${OUT_DIR}"
# Serialise concurrent runs; the second one finds what the first one built.
# kube-apiserver and etcd are shared with hack/envtest-binaries.sh: hold its
# lock too while this run may write them.
if command -v flock >/dev/null; then
  exec 9>"${BIN_DIR}/.k8s-binaries.lock"
  if ! flock -n 9; then
    log "waiting for another run of this script to finish"
    flock 9
  fi
  exec 8>"${BIN_DIR}/.envtest-binaries.lock"
  if ! flock -n 8; then
    log "waiting for hack/envtest-binaries.sh to finish"
    flock 8
  fi
  check_all
fi

tmp_paths=()
cleanup() {
  if ((${#tmp_paths[@]})); then
    rm -rf "${tmp_paths[@]}"
  fi
}
trap cleanup EXIT

# install_bin TMPFILE NAME [VERSION_RECORD] checks that TMPFILE runs, then
# moves it into place atomically.
install_bin() {
  local tmp="$1" name="$2" record="${3:-}" target="${OUT_DIR}/$2"
  chmod 0755 "${tmp}"
  if [[ "${name}" == kubectl ]]; then
    "${tmp}" version --client >/dev/null || die "the freshly built ${name} does not run"
  else
    # shellcheck disable=SC2046 # the flag is one word
    "${tmp}" $(version_arg "${name}") >/dev/null || die "the freshly built ${name} does not run"
  fi
  mv -f "${tmp}" "${target}"
  if [[ -n "${record}" ]]; then
    echo "${record}" >"${target}.version.tmp"
    mv -f "${target}.version.tmp" "${target}.version"
  fi
  log "installed ${target#"${REPO_ROOT}/"}"
}

total_start=${SECONDS}

if ((${#missing_kube[@]})); then
  # Version stamps: without them every component reports
  # v0.0.0-master+$Format:%H$, which kubectl cannot parse.
  ldflags="-s -w"
  for p in k8s.io/component-base/version k8s.io/client-go/pkg/version; do
    ldflags+=" -X ${p}.gitVersion=${K8S_VERSION} -X ${p}.gitMajor=1 -X ${p}.gitMinor=${K8S_MINOR}"
    ldflags+=" -X ${p}.gitTreeState=clean"
  done
  pkgs=()
  for c in "${missing_kube[@]}"; do
    pkgs+=("k8s.io/kubernetes/cmd/${c}")
  done
  tmpdir="$(mktemp -d "${OUT_DIR}/.build.XXXXXX")"
  tmp_paths+=("${tmpdir}")
  log "building Kubernetes ${K8S_VERSION}: ${missing_kube[*]} (a cold build takes 10-20 minutes)"
  start=${SECONDS}
  # One `go build` for all of them: packages compile in parallel and once.
  if ! (cd "${TOOLS_DIR}/kube" && go build -trimpath -ldflags "${ldflags}" -o "${tmpdir}/" "${pkgs[@]}"); then
    die "building ${missing_kube[*]} failed (see the go output above); the Go module proxy must be reachable for a cold build"
  fi
  log "built ${missing_kube[*]} in $((SECONDS - start))s"
  for c in "${missing_kube[@]}"; do
    install_bin "${tmpdir}/${c}" "${c}" "${KUBE_RECORD}"
  done
fi

for spec in ${missing_other[@]+"${missing_other[@]}"}; do
  read -r name moddir mod pkg var <<<"${spec}"
  version="$(pinned "${TOOLS_DIR}/${moddir}" "${mod}")"
  ldflags="-s -w"
  [[ -z "${var}" ]] || ldflags+=" -X ${var}=${version}"
  tmp="$(mktemp "${OUT_DIR}/.${name}.XXXXXX")"
  tmp_paths+=("${tmp}")
  log "building ${name} from ${mod}@${version} (hack/tools/${moddir})"
  start=${SECONDS}
  if ! (cd "${TOOLS_DIR}/${moddir}" && go build -trimpath -ldflags "${ldflags}" -o "${tmp}" "${pkg}"); then
    die "building ${name} failed (see the go output above); the Go module proxy must be reachable for a cold build"
  fi
  log "built ${name} in $((SECONDS - start))s"
  install_bin "${tmp}" "${name}" "${mod}@${version}"
done

check_all
if ((${#missing_kube[@]} || ${#missing_other[@]})); then
  die "still missing or wrong after the build: ${missing_kube[*]} $(printf '%s\n' ${missing_other[@]+"${missing_other[@]}"} | awk '{print $1}' | xargs)"
fi
log "all binaries ready in ${OUT_DIR#"${REPO_ROOT}/"} ($((SECONDS - total_start))s)"
echo "${OUT_DIR}" >&3
