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

# Usage: hack/local-cluster/smoke-test.sh
#
# Proves that the cluster of hack/local-cluster.sh (already up) does what the
# e2e tests need: builds the FROM-scratch testapp image with Docker, loads it,
# runs a 2-replica StatefulSet with a headless Service and a PVC per pod from
# the default StorageClass "standard", then checks PVC binding, pod-to-pod
# DNS and TCP both ways, a ClusterIP Service, kubectl exec, logs and
# port-forward, in-cluster API access with the pod's service account, that a
# volume survives the deletion of its pod, and (as root, on the local cluster)
# the egress guard. Deletes its
# namespace at the end (set SMOKE_KEEP=1 to keep it). Exit status 0 on success.
#
# With KUBECONFIG set, it runs against that cluster instead (the image must
# then be loadable there, e.g. kind load docker-image).

set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/../.." && pwd)"
HERE="${REPO_ROOT}/hack/local-cluster"
IMAGE=localhost/local-cluster/testapp:1
NS=lc-smoke
CTX="${LOCAL_CLUSTER_DIR:-${REPO_ROOT}/bin/local-cluster}/images/context/testapp"

T0=${EPOCHREALTIME/./}
# since START prints the seconds since START (an ${EPOCHREALTIME/./} value).
since() { printf '%.1f' "$(((${EPOCHREALTIME/./} - $1) / 100000))e-1"; }
log() { echo "smoke-test: $(printf '%6s' "$(since "${T0}")")s $*" >&2; }
die() {
  echo "smoke-test: FAIL: $*" >&2
  if [[ -n "${KUBECTL:-}" ]]; then
    "${KUBECTL}" -n "${NS}" get pods,pvc -o wide >&2 || true
    "${KUBECTL}" -n "${NS}" get events --sort-by=.lastTimestamp >&2 | tail -n 20 || true
  fi
  exit 1
}

BIN="$("${REPO_ROOT}/hack/k8s-binaries.sh")"
export KUBECONFIG="${KUBECONFIG:-$("${REPO_ROOT}/hack/local-cluster.sh" kubeconfig)}"
KUBECTL="${BIN}/kubectl"
k() { "${KUBECTL}" "$@"; }

log "building ${IMAGE}"
mkdir -p "${CTX}"
(cd "${HERE}/images" && GOWORK=off CGO_ENABLED=0 GOOS=linux go build -trimpath -ldflags "-s -w" -o "${CTX}/testapp" ./testapp) ||
  die "go build of testapp failed"
cp "${HERE}/images/testapp/Dockerfile" "${CTX}/Dockerfile"
out="$(DOCKER_BUILDKIT=0 docker build -q -t "${IMAGE}" "${CTX}" 2>&1)" || die "docker build failed: ${out}"
LOCAL=0
if [[ "${KUBECONFIG}" == "$("${REPO_ROOT}/hack/local-cluster.sh" kubeconfig)" ]]; then
  LOCAL=1
  "${REPO_ROOT}/hack/local-cluster.sh" load-image "${IMAGE}" || die "load-image failed"
fi

k delete namespace "${NS}" --ignore-not-found --wait=true >/dev/null
log "applying the StatefulSet"
START=${EPOCHREALTIME/./}
k apply -f "${HERE}/manifests/smoke-test.yaml" >/dev/null
k -n "${NS}" rollout status statefulset/echo --timeout=180s >&2 || die "StatefulSet not ready"
log "StatefulSet 2/2 ready in $(since "${START}")s"

for i in 0 1; do
  phase="$(k -n "${NS}" get pvc "data-echo-${i}" -o jsonpath='{.status.phase}')"
  [[ "${phase}" == Bound ]] || die "PVC data-echo-${i} is ${phase}, not Bound"
  sc="$(k -n "${NS}" get pvc "data-echo-${i}" -o jsonpath='{.spec.storageClassName}')"
  [[ "${sc}" == standard ]] || die "PVC data-echo-${i} has class ${sc}"
done
log "PVCs data-echo-0 and data-echo-1 Bound (class standard)"

# expect_greeting POD TARGET NAME: from POD, resolve and dial TARGET, expect
# the greeting of pod NAME.
expect_greeting() {
  local out
  out="$(k -n "${NS}" exec "$1" -- /testapp dial "$2" 2>&1)" || die "$1 -> $2: ${out}"
  [[ "${out}" == *"hello from $3"* ]] || die "$1 -> $2: unexpected answer: ${out}"
  log "$1 -> $2: $(tail -n 1 <<<"${out}")"
}
expect_greeting echo-0 "echo-1.echo.${NS}.svc.cluster.local:7000" echo-1
expect_greeting echo-1 "echo-0.echo.${NS}.svc.cluster.local:7000" echo-0
expect_greeting echo-0 "echo-1.echo:7000" echo-1 # search path

# A ClusterIP answers once kube-proxy has programmed it (1-2 s after Ready).
ok=0
for _ in $(seq 1 20); do
  if out="$(k -n "${NS}" exec echo-0 -- /testapp dial "echo-client:7000" 2>&1)" && [[ "${out}" == *"hello from echo-"* ]]; then
    ok=1
    break
  fi
  sleep 0.5
done
((ok)) || die "ClusterIP Service echo-client did not answer: ${out}"
log "echo-0 -> echo-client (ClusterIP): $(tail -n 1 <<<"${out}")"

k -n "${NS}" logs echo-0 | grep -q "listening on :7000" || die "kubectl logs shows no start-up line"
log "kubectl logs works"

# In-cluster API access, as an operator has it: DNS name of the kubernetes
# Service, its ClusterIP, the cluster CA and the service-account token.
out="$(k -n "${NS}" exec echo-0 -- /testapp whoami 2>&1)" || die "in-cluster API access failed: ${out}"
[[ "${out}" == "system:serviceaccount:${NS}:default" ]] || die "in-cluster API access: unexpected user ${out}"
log "in-cluster API access from echo-0 as ${out}"

# port-forward to a pod, from a local port chosen by kubectl.
pf_log="$(mktemp)"
k -n "${NS}" port-forward pod/echo-1 :7000 >"${pf_log}" 2>&1 &
pf=$!
trap 'kill "${pf}" 2>/dev/null || true; rm -f "${pf_log}"' EXIT
port=""
for _ in $(seq 1 40); do
  port="$(sed -n 's/^Forwarding from 127\.0\.0\.1:\([0-9]*\) .*/\1/p' "${pf_log}" | head -1)"
  [[ -n "${port}" ]] && break
  sleep 0.25
done
[[ -n "${port}" ]] || die "kubectl port-forward did not start: $(cat "${pf_log}")"
exec 5<>"/dev/tcp/127.0.0.1/${port}"
read -r -t 10 line <&5 || die "no greeting through port-forward"
exec 5<&-
[[ "${line}" == "hello from echo-1" ]] || die "port-forward: unexpected greeting: ${line}"
kill "${pf}" 2>/dev/null || true
wait "${pf}" 2>/dev/null || true
rm -f "${pf_log}"
trap - EXIT
log "kubectl port-forward pod/echo-1 (127.0.0.1:${port}): ${line}"

# The volume outlives its pod.
k -n "${NS}" delete pod echo-1 --wait=true >/dev/null
k -n "${NS}" wait --for=condition=Ready pod/echo-1 --timeout=120s >/dev/null || die "echo-1 did not come back"
starts="$(k -n "${NS}" exec echo-1 -- /testapp cat /data/hello.txt | grep -c 'echo-1 started')"
[[ "${starts}" == 2 ]] || die "expected 2 start records on the volume of echo-1, got ${starts}"
log "PVC data survived the deletion of echo-1 (${starts} start records)"

# The egress guard of hack/local-cluster.sh: a pod must not reach anything off
# the pod network, and an unprogrammed service IP must not be routed away. The
# "outside" is a network namespace of this test behind a veth (198.18.0.0/24,
# the benchmarking range), with a listener, so nothing can leave the machine
# even if the guard failed.
OUT_NS=lc-smoke-outside
listener=""
guard_cleanup() {
  ip route del 10.96.255.254/32 dev lcso0 2>/dev/null || true
  ip link del lcso0 2>/dev/null || true
  [[ -z "${listener}" ]] || kill "${listener}" 2>/dev/null || true
  ip netns del "${OUT_NS}" 2>/dev/null || true
}
if ((LOCAL)) && [[ "$(id -u)" == 0 ]]; then
  guard_cleanup
  trap 'guard_cleanup' EXIT
  ip netns add "${OUT_NS}"
  ip link add lcso0 type veth peer name lcso1 netns "${OUT_NS}"
  ip addr add 198.18.0.254/24 dev lcso0
  ip link set lcso0 up
  ip -n "${OUT_NS}" addr add 198.18.0.1/24 dev lcso1
  ip -n "${OUT_NS}" link set lcso1 up
  ip route add 10.96.255.254/32 dev lcso0
  ip netns exec "${OUT_NS}" socat TCP-LISTEN:7000,fork,reuseaddr SYSTEM:'echo outside' 2>/dev/null &
  listener=$!
  answer=""
  for _ in $(seq 1 20); do
    answer="$(timeout 3 bash -c 'exec 3<>/dev/tcp/198.18.0.1/7000 && head -n 1 <&3' 2>/dev/null || true)"
    [[ "${answer}" == outside ]] && break
    sleep 0.25
  done
  [[ "${answer}" == outside ]] || die "the test's outside listener does not answer the host"
  if out="$(k -n "${NS}" exec echo-0 -- /testapp dial 198.18.0.1:7000 2>&1)"; then
    die "egress guard: a pod reached a host off the pod network: ${out}"
  fi
  [[ "${out}" == *refused* ]] || die "egress guard: expected a fast REJECT for pod traffic leaving the pod network, got: ${out}"
  if out="$(timeout 5 bash -c 'exec 3<>/dev/tcp/10.96.255.254/7000 && head -n 1 <&3' 2>&1)"; then
    die "egress guard: an unprogrammed service IP was routed off the node: ${out}"
  fi
  guard_cleanup
  trap - EXIT
  log "egress guard: pod -> off-cluster host and host -> unprogrammed service IP both rejected"
fi

if [[ "${SMOKE_KEEP:-}" != 1 ]]; then
  pvs="$(k -n "${NS}" get pvc -o jsonpath='{.items[*].spec.volumeName}')"
  k delete namespace "${NS}" --wait=true --timeout=120s >/dev/null || die "namespace ${NS} was not deleted"
  for _ in $(seq 1 60); do
    left=0
    for pv in ${pvs}; do
      k get pv "${pv}" >/dev/null 2>&1 && left=1
    done
    ((left)) || break
    sleep 0.5
  done
  ((left == 0)) || die "PVs ${pvs} were not deleted with their claims"
  log "namespace deleted, PVs released and deleted"
fi
echo "smoke-test: PASS in $(since "${T0}")s" >&2
