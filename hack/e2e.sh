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

# Usage: hack/e2e.sh test | demo
#
# test  runs the end-to-end suite (test/e2e, build tag e2e) on a real cluster and
#       tears down what it created. demo starts the same cluster, installs the
#       operator and the 3-node sample MQTTCluster, waits until it is Ready and
#       prints how to connect; it leaves everything running (stop it with
#       `make cluster-down`).
#
# The cluster:
#   E2E_USE_EXISTING_CLUSTER=true  the current kubeconfig; the images IMG and
#                                  MQTTD_IMG must be pullable from there.
#   otherwise                      kind where it works (Docker can run privileged
#                                  containers and the node image is available),
#                                  else the local cluster of real Kubernetes
#                                  binaries (hack/local-cluster.sh), detected.
#
# Environment: IMG, MQTTD_IMG (images, built here with `make docker-build`; with an
# existing cluster they must be pullable from it),
# HELM (helm binary), KIND_NODE_IMAGE, E2E_ARGS (extra `go test` arguments),
# E2E_KEEP=1 (leave the cluster and the installation running after `test`),
# UPGRADE_FROM (the commit of the previous release, whose mqttd the upgrade spec
# starts from: built here from `git archive`, so the clone needs that history),
# MQTTD_PREV_IMG (that image, default mqttd:prev-<commit>; with an existing cluster,
# one it can pull, built with -X main.version=<the commit's first 12 digits>).
set -euo pipefail

REPO_ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "${REPO_ROOT}"

IMG="${IMG:-mqtt-operator:dev}"
MQTTD_IMG="${MQTTD_IMG:-mqttd:dev}"
HELM="${HELM:-${REPO_ROOT}/bin/helm}"
KIND_CLUSTER="${KIND_CLUSTER:-mqtt-e2e}"
KIND_NODE_IMAGE="${KIND_NODE_IMAGE:-kindest/node:v1.37.0}"
# The last commit before the cluster link's binary frames and the store's format 2
# ([scale]): what a cluster upgrades from in the upgrade spec. Its image is tagged
# and versioned by the commit it resolves to.
UPGRADE_FROM="${UPGRADE_FROM:-16cf53406c71f7dfc37cf12932eec5d1c1dc9c29}"
WITH_PREV= # set by the test mode only: cluster_up then builds and loads MQTTD_PREV_IMG
OPERATOR_NS="mqtt-operator-system"

log() { echo "e2e: $*" >&2; }
die() {
  echo "e2e: error: $*" >&2
  exit 1
}

# pick_cluster prints existing, kind or local.
pick_cluster() {
  if [[ "${E2E_USE_EXISTING_CLUSTER:-}" == true ]]; then
    echo existing
    return
  fi
  # kind needs Docker, its node image and privileged containers (checked with the
  # node image itself).
  if command -v kind >/dev/null && docker info >/dev/null 2>&1 &&
    { docker image inspect "${KIND_NODE_IMAGE}" >/dev/null 2>&1 || timeout 300 docker pull "${KIND_NODE_IMAGE}" >/dev/null 2>&1; } &&
    docker run --rm --privileged --entrypoint true "${KIND_NODE_IMAGE}" >/dev/null 2>&1; then
    echo kind
    return
  fi
  echo local
}

KIND_KUBECONFIG="${REPO_ROOT}/bin/kind-${KIND_CLUSTER}.kubeconfig"

# build_images builds IMG and MQTTD_IMG (the local cluster's `up` has made sure
# Docker runs).
build_images() {
  log "building the images ${IMG} and ${MQTTD_IMG}"
  "${MAKE:-make}" --no-print-directory docker-build IMG="${IMG}" MQTTD_IMG="${MQTTD_IMG}" >&2
}

# build_prev_image builds MQTTD_PREV_IMG, the broker of commit UPGRADE_FROM, unless
# Docker has it: its sources from `git archive` (no network), its binary built like
# the image-context target builds this one, in the same image layout. A subshell:
# its temporary tree goes whatever happens.
build_prev_image() (
  if docker image inspect "${MQTTD_PREV_IMG}" >/dev/null 2>&1; then
    exit 0
  fi
  log "building ${MQTTD_PREV_IMG} from commit ${UPGRADE_FROM}"
  src="$(mktemp -d)"
  trap 'rm -rf "${src}"' EXIT
  git archive "${UPGRADE_FROM}" | tar -x -C "${src}"
  mkdir -p "${src}/ctx"
  cp -r "${IMAGE_CONTEXT:-bin/image}/etc" "${src}/ctx/" # the CA bundle and nonroot user build_images staged
  cd "${src}"
  CGO_ENABLED=0 GOOS=linux GOARCH="$(go env GOARCH)" go build -trimpath -buildvcs=false \
    -ldflags "-X main.version=${MQTTD_PREV_VERSION}" -o ctx/mqttd ./broker/cmd/mqttd >&2
  docker build --build-arg BASE_IMAGE="${BASE_IMAGE:-scratch}" -f Dockerfile.mqttd -t "${MQTTD_PREV_IMG}" ctx >&2
)

# cluster_up starts the cluster, builds and loads the images and exports KUBECONFIG
# and KUBECTL.
cluster_up() {
  case "$1" in
  existing)
    [[ -n "${KUBECONFIG:-}" ]] || export KUBECONFIG="${HOME}/.kube/config"
    KUBECTL="$(command -v kubectl)" || die "kubectl not found"
    ;;
  kind)
    log "creating kind cluster ${KIND_CLUSTER}"
    build_images
    if [[ "${WITH_PREV:-}" == 1 ]]; then build_prev_image; fi
    kind get clusters 2>/dev/null | grep -x "${KIND_CLUSTER}" >/dev/null ||
      kind create cluster --name "${KIND_CLUSTER}" --image "${KIND_NODE_IMAGE}" --kubeconfig "${KIND_KUBECONFIG}" --wait 3m
    kind load docker-image --name "${KIND_CLUSTER}" "${IMG}" "${MQTTD_IMG}"
    if [[ "${WITH_PREV:-}" == 1 ]]; then kind load docker-image --name "${KIND_CLUSTER}" "${MQTTD_PREV_IMG}"; fi
    export KUBECONFIG="${KIND_KUBECONFIG}"
    KUBECTL="$(command -v kubectl)" || die "kubectl not found"
    ;;
  local)
    log "starting the local cluster (hack/local-cluster.sh up)"
    export KUBECONFIG
    KUBECONFIG="$(hack/local-cluster.sh up)"
    build_images
    images=("${IMG}" "${MQTTD_IMG}")
    if [[ "${WITH_PREV:-}" == 1 ]]; then
      build_prev_image
      images+=("${MQTTD_PREV_IMG}")
    fi
    hack/local-cluster.sh load-image "${images[@]}"
    KUBECTL="$(hack/k8s-binaries.sh)/kubectl"
    ;;
  esac
  export KUBECTL
  log "cluster: $1, kubeconfig ${KUBECONFIG}"
}

cluster_down() {
  case "$1" in
  kind) kind delete cluster --name "${KIND_CLUSTER}" || true ;;
  local) hack/local-cluster.sh down || true ;;
  esac
}

install_operator() {
  log "installing the operator (${IMG}) with Helm"
  "${HELM}" upgrade --install mqtt-operator charts/mqtt-operator --namespace "${OPERATOR_NS}" --create-namespace \
    --set image.repository="${IMG%:*}" --set image.tag="${IMG##*:}" --set image.pullPolicy=IfNotPresent \
    --wait --timeout 5m
}

case "${1:-}" in
test)
  commit="$(git rev-parse --verify --quiet "${UPGRADE_FROM}^{commit}")" ||
    die "commit ${UPGRADE_FROM} (the release the upgrade spec starts from) is not in this clone: clone the whole history"
  UPGRADE_FROM="${commit}"
  MQTTD_PREV_VERSION="${MQTTD_PREV_VERSION:-${commit:0:12}}"
  MQTTD_PREV_IMG="${MQTTD_PREV_IMG:-mqttd:prev-${MQTTD_PREV_VERSION}}"
  kind_of="$(pick_cluster)"
  if [[ -z "${E2E_KEEP:-}" && "${kind_of}" != existing ]]; then
    trap 'cluster_down "${kind_of}"' EXIT
  fi
  WITH_PREV=1 cluster_up "${kind_of}"
  # The suite installs the operator itself (BeforeSuite) and uninstalls it after.
  # shellcheck disable=SC2086 # E2E_ARGS is a list of arguments
  E2E_KUBECTL="${KUBECTL}" E2E_HELM="${HELM}" E2E_OPERATOR_IMAGE="${IMG}" E2E_MQTTD_IMAGE="${MQTTD_IMG}" \
    E2E_MQTTD_PREV_IMAGE="${MQTTD_PREV_IMG}" E2E_MQTTD_PREV_VERSION="${MQTTD_PREV_VERSION}" \
    go test -tags e2e -count=1 -timeout 45m -v ./test/e2e/ -ginkgo.v ${E2E_ARGS:-}
  ;;
demo)
  kind_of="$(pick_cluster)"
  cluster_up "${kind_of}"
  install_operator
  sample=config/samples/broker_v1alpha1_mqttcluster.yaml
  name="$("${KUBECTL}" create --dry-run=client -f "${sample}" -o jsonpath='{.metadata.name}')"
  # MQTT over TLS too: a demo CA and a certificate for the names a port-forward and
  # in-cluster clients use, in the listener's Secret (kept across demo runs).
  tls_dir="${PWD}/bin/demo-tls"
  go run ./hack/democert -dir "${tls_dir}" -names "localhost,127.0.0.1,${name},${name}.default.svc"
  "${KUBECTL}" create secret tls "${name}-tls" --cert="${tls_dir}/tls.crt" --key="${tls_dir}/tls.key" \
    --dry-run=client -o yaml | "${KUBECTL}" apply -f -
  log "applying the 3-node sample MQTTCluster, with an mqtts listener on 8883 and the dashboard"
  "${KUBECTL}" patch --local -f "${sample}" --type merge -o yaml -p "{\"spec\":{\"listeners\":[
    {\"name\":\"mqtt\",\"port\":1883},{\"name\":\"ws\",\"port\":8083},
    {\"name\":\"mqtts\",\"port\":8883,\"tlsSecretName\":\"${name}-tls\"}],
    \"dashboard\":{\"enabled\":true}}}" | "${KUBECTL}" apply -f -
  "${KUBECTL}" wait "mqc/${name}" --for=condition=Ready --timeout=5m
  "${KUBECTL}" get mqc,pods,svc -o wide
  # The sample refuses anonymous clients: the operator generated the users Secret.
  "${KUBECTL}" get secret "${name}-users" >/dev/null
  clients=""
  if ! command -v mosquitto_pub >/dev/null || ! command -v mosquitto_sub >/dev/null; then
    clients=" (first apt-get install mosquitto-clients, for mosquitto_pub and mosquitto_sub)"
  fi
  cat <<EOM

The MQTT cluster "${name}" is Ready. Clients log in with the user the operator
generated in the Secret ${name}-users. To talk to it${clients}:

  export KUBECONFIG=${KUBECONFIG}
  MQTT_USER="\$(${KUBECTL} get secret ${name}-users -o jsonpath='{.data.username}' | base64 -d)"
  MQTT_PASSWORD="\$(${KUBECTL} get secret ${name}-users -o jsonpath='{.data.password}' | base64 -d)"
  ${KUBECTL} port-forward svc/${name} 1883:1883 8883:8883 &
  mosquitto_sub -h 127.0.0.1 -p 1883 -u "\$MQTT_USER" -P "\$MQTT_PASSWORD" -t 'demo/#' -v &
  mosquitto_pub -h 127.0.0.1 -p 1883 -u "\$MQTT_USER" -P "\$MQTT_PASSWORD" -t demo/hello -m 'hello from the demo'
  mosquitto_pub -h localhost -p 8883 --cafile ${tls_dir}/ca.crt -u "\$MQTT_USER" -P "\$MQTT_PASSWORD" -t demo/hello -m 'hello over TLS'

The dashboard (log in as admin / public; a banner stays until you set
spec.dashboard.adminSecretRef): ${KUBECTL} port-forward svc/${name}-dashboard 18083:18083 &
then open http://127.0.0.1:18083.

Without -u/-P the broker refuses the connection (not authorised). The nodes link with
mutual TLS 1.3 ($("${KUBECTL}" get mqc "${name}" -o jsonpath='{.status.clusterTLS}'): the
operator's CA in the Secret ${name}-cluster-ca).

Stop everything with: make cluster-down
EOM
  ;;
*)
  sed -n '/^# Usage:/,/^set -euo/p' "${BASH_SOURCE[0]}" | sed '$d; s/^# \{0,1\}//' >&2
  exit 2
  ;;
esac
