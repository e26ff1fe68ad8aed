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

# Usage: hack/envtest-binaries.sh
#
# Makes sure that kube-apiserver and etcd for controller-runtime's envtest are
# present under bin/k8s/<version>-<os>-<arch>/ and prints that directory, and
# nothing else, on stdout, for use as KUBEBUILDER_ASSETS:
#
#   export KUBEBUILDER_ASSETS="$(hack/envtest-binaries.sh)"
#
# Environment:
#   ENVTEST_K8S_VERSION  Kubernetes version to provide (default 1.37.2).
#
# Steps, first one that succeeds wins:
#   1. both binaries already cached in the directory: print it at once;
#   2. download them with setup-envtest (needs network; bounded by a timeout);
#   3. build them from source through the Go module proxy, from the scratch
#      modules hack/tools/kube (kube-apiserver, pinned k8s.io/kubernetes
#      version) and hack/tools/etcd (etcd). A cold build takes several minutes
#      of CPU. Only the Kubernetes version pinned in hack/tools/kube/go.mod can
#      be built this way.
#
# Progress goes to stderr. Works from any directory.

set -euo pipefail

# Everything but the final answer goes to stderr; fd 3 is the real stdout.
exec 3>&1 1>&2

log() { echo "envtest-binaries: $*"; }
die() {
  echo "envtest-binaries: error: $*"
  exit 1
}

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
BIN_DIR="${REPO_ROOT}/bin"
KUBE_MOD_DIR="${REPO_ROOT}/hack/tools/kube"
ETCD_MOD_DIR="${REPO_ROOT}/hack/tools/etcd"

# setup-envtest release to try for the download path; it must exist on the
# module proxy.
SETUP_ENVTEST_VERSION="v0.25.1"
SETUP_ENVTEST_TIMEOUT="${SETUP_ENVTEST_TIMEOUT:-120}"

K8S_VERSION="${ENVTEST_K8S_VERSION:-1.37.2}"
K8S_VERSION="${K8S_VERSION#v}"

command -v go >/dev/null || die "go is not on PATH"

# Binaries run on this machine: build for the host even if GOOS/GOARCH are set
# for cross-compiling. GOWORK=off keeps a go.work at the root out of the way.
GOHOSTOS="$(go env GOHOSTOS)"
GOHOSTARCH="$(go env GOHOSTARCH)"
export GOOS="${GOHOSTOS}" GOARCH="${GOHOSTARCH}" GOWORK=off

# Same layout as setup-envtest: <bin-dir>/k8s/<version>-<os>-<arch>.
ASSETS_DIR="${BIN_DIR}/k8s/${K8S_VERSION}-${GOHOSTOS}-${GOHOSTARCH}"

have_binaries() {
  [[ -x "$1/kube-apiserver" && -f "$1/kube-apiserver" && -x "$1/etcd" && -f "$1/etcd" ]]
}

done_with() {
  echo "$1" >&3
  exit 0
}

# 1. Cached.
if have_binaries "${ASSETS_DIR}"; then
  done_with "${ASSETS_DIR}"
fi

# Not ASSETS_DIR itself yet: setup-envtest takes an existing directory of the
# right name as an installed version and would not download into it.
mkdir -p "${BIN_DIR}/k8s"

# Serialise concurrent runs (e.g. parallel make jobs); the second one finds the
# binaries that the first one made.
if command -v flock >/dev/null; then
  exec 9>"${BIN_DIR}/.envtest-binaries.lock"
  if ! flock -n 9; then
    log "waiting for another run of this script to finish"
    flock 9
  fi
  if have_binaries "${ASSETS_DIR}"; then
    done_with "${ASSETS_DIR}"
  fi
fi

# 2. Download with setup-envtest.
log "trying setup-envtest ${SETUP_ENVTEST_VERSION} to download Kubernetes ${K8S_VERSION} test binaries"
timeout_cmd=()
if command -v timeout >/dev/null; then
  timeout_cmd=(timeout "${SETUP_ENVTEST_TIMEOUT}")
fi
if downloaded="$(${timeout_cmd[@]+"${timeout_cmd[@]}"} go run "sigs.k8s.io/controller-runtime/tools/setup-envtest@${SETUP_ENVTEST_VERSION}" \
  use "${K8S_VERSION}" --bin-dir "${BIN_DIR}" -p path)" && [[ -n "${downloaded}" ]] && have_binaries "${downloaded}"; then
  log "downloaded to ${downloaded}"
  done_with "${downloaded}"
fi
log "setup-envtest could not provide the binaries"

# 3. Build from source.
[[ -f "${KUBE_MOD_DIR}/go.mod" ]] || die "missing ${KUBE_MOD_DIR}/go.mod"
[[ -f "${ETCD_MOD_DIR}/go.mod" ]] || die "missing ${ETCD_MOD_DIR}/go.mod"

pinned_k8s="$(awk '$1 == "require" && $2 == "k8s.io/kubernetes" { print $3 }' "${KUBE_MOD_DIR}/go.mod")"
pinned_k8s="${pinned_k8s#v}"
[[ -n "${pinned_k8s}" ]] || die "cannot find the k8s.io/kubernetes version in ${KUBE_MOD_DIR}/go.mod"
if [[ "${pinned_k8s}" != "${K8S_VERSION}" ]]; then
  die "ENVTEST_K8S_VERSION=${K8S_VERSION} could not be downloaded, and only ${pinned_k8s} (pinned in hack/tools/kube/go.mod) can be built from source; unset ENVTEST_K8S_VERSION or update hack/tools/kube"
fi
k8s_minor="$(cut -d. -f2 <<<"${K8S_VERSION}")"
log "building Kubernetes ${K8S_VERSION} test binaries from source instead"
mkdir -p "${ASSETS_DIR}"

tmp_files=()
cleanup() {
  if ((${#tmp_files[@]})); then
    rm -f "${tmp_files[@]}"
  fi
}
trap cleanup EXIT

# build_into NAME MODULE_DIR GO_BUILD_ARGS... builds into a temporary file next
# to the target and moves it into place, so that an interrupted build never
# leaves a partial binary behind.
build_into() {
  local name="$1" moddir="$2"
  shift 2
  local target="${ASSETS_DIR}/${name}"
  if [[ -x "${target}" && -f "${target}" ]]; then
    log "${name} already built"
    return 0
  fi
  local tmp
  tmp="$(mktemp "${ASSETS_DIR}/.${name}.XXXXXX")"
  tmp_files+=("${tmp}")
  log "building ${name} in ${moddir#"${REPO_ROOT}/"} (this can take several minutes)"
  local start=${SECONDS}
  if ! (cd "${moddir}" && CGO_ENABLED=0 go build -trimpath -o "${tmp}" "$@"); then
    die "building ${name} failed (see the go output above); the module proxy must be reachable for a cold build"
  fi
  chmod 0755 "${tmp}"
  "${tmp}" --version >/dev/null || die "the freshly built ${name} does not run"
  mv -f "${tmp}" "${target}"
  log "built ${target} in $((SECONDS - start))s"
}

kube_ldflags="-s -w"
kube_ldflags+=" -X k8s.io/component-base/version.gitVersion=v${K8S_VERSION}"
kube_ldflags+=" -X k8s.io/component-base/version.gitMajor=1"
kube_ldflags+=" -X k8s.io/component-base/version.gitMinor=${k8s_minor}"
kube_ldflags+=" -X k8s.io/component-base/version.gitTreeState=clean"

build_into etcd "${ETCD_MOD_DIR}" -ldflags "-s -w" go.etcd.io/etcd/server/v3
build_into kube-apiserver "${KUBE_MOD_DIR}" -ldflags "${kube_ldflags}" k8s.io/kubernetes/cmd/kube-apiserver

have_binaries "${ASSETS_DIR}" || die "binaries missing from ${ASSETS_DIR} after the build"
done_with "${ASSETS_DIR}"
