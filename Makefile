# mqtt-operator: the mqttd broker (broker/) and, later, its Kubernetes operator.
# Layout and target names follow the kubebuilder v4 scaffold; `make help` lists them.

# Version stamped into binaries: the nearest tag, else the commit, else "dev".
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)

# Arguments to `go test` in `make test`; override to narrow a run (which then skips
# test-lockorder), e.g.
#   make test TEST_ARGS='-run TestConnect ./broker/server'
TEST_ARGS ?= -timeout 30m ./...

# Arguments to `go test` in `make test-lockorder`: the broker's tests and the process
# tests, whose mqttd is built with the same tags (test/mqttdproc).
LOCKORDER_TEST_ARGS ?= -timeout 30m ./broker/... ./test/cluster/ ./test/abuse/

# How long `make fuzz` runs the decoder fuzz target.
FUZZTIME ?= 60s

# Config file used by `make run-broker`.
MQTTD_CONFIG ?= config/mqttd/mqttd.yaml

# Images: the operator (IMG) and the broker (MQTTD_IMG), built by `make docker-build`.
# IMG is also the image that `make build-installer` writes into dist/install.yaml.
IMG ?= mqtt-operator:dev
MQTTD_IMG ?= mqttd:dev
# Base of both images. scratch needs no pull (the images bring their own CA bundle
# and nonroot user); where images can be pulled, gcr.io/distroless/static:nonroot works too.
BASE_IMAGE ?= scratch
# Architecture of the binaries in the images (GOOS is always linux).
IMAGE_ARCH ?= $(shell go env GOARCH)
# CA bundle copied into the images (the Debian/Ubuntu path; Fedora: /etc/pki/tls/certs/ca-bundle.crt).
CA_BUNDLE ?= /etc/ssl/certs/ca-certificates.crt
# Build context of the images, staged by `make image-context`.
IMAGE_CONTEXT ?= $(LOCALBIN)/image
# Container tool that builds and pushes the images.
CONTAINER_TOOL ?= docker
# kubectl used by install/uninstall/deploy/undeploy.
KUBECTL ?= kubectl

# The Helm chart.
CHART_DIR := charts/mqtt-operator

# Setting SHELL to bash allows bash commands to be executed by recipes.
# Options are set to exit when a recipe line exits non-zero or a piped command fails.
SHELL = /usr/bin/env bash -o pipefail
.SHELLFLAGS = -ec

.DEFAULT_GOAL := help

.PHONY: all
all: build

##@ General

# The help target prints out all targets with their descriptions organized
# beneath their categories. The categories are represented by '##@' and the
# target descriptions by '##'. The awk command is responsible for reading the
# entire set of makefiles included in this invocation, looking for lines of the
# file as xyz: ## something, and then pretty-format the target and help. Then,
# if there's a line with ##@ something, that gets pretty-printed as a category.
# More info on the usage of ANSI control characters for terminal formatting:
# https://en.wikipedia.org/wiki/ANSI_escape_code#SGR_parameters
# More info on the awk command:
# http://linuxcommand.org/lc3_adv_awk.php

.PHONY: help
help: ## Display this help.
	@awk 'BEGIN {FS = ":.*##"; printf "\nUsage:\n  make \033[36m<target>\033[0m\n"} /^[a-zA-Z_0-9-]+:.*?##/ { printf "  \033[36m%-15s\033[0m %s\n", $$1, $$2 } /^##@/ { printf "\n\033[1m%s\033[0m\n", substr($$0, 5) } ' $(MAKEFILE_LIST)

##@ Development

.PHONY: manifests
manifests: controller-gen ## Generate the CRD and RBAC manifests (config/crd, config/rbac) and copy them into the chart.
	$(CONTROLLER_GEN) rbac:roleName=manager-role crd paths="{./api/...,./controllers/...}" output:crd:artifacts:config=config/crd/bases
	@# The chart installs the same CRDs and takes its manager ClusterRole rules from
	@# the generated role (templates/manager-rbac.yaml reads files/manager-role.yaml).
	rm -f $(CHART_DIR)/crds/*.yaml
	cp config/crd/bases/*.yaml $(CHART_DIR)/crds/
	cp config/rbac/role.yaml $(CHART_DIR)/files/manager-role.yaml

.PHONY: generate
generate: controller-gen ## Generate DeepCopy methods for the API types.
	$(CONTROLLER_GEN) object:headerFile="hack/boilerplate.go.txt" paths="./api/..."

.PHONY: fmt
fmt: ## Run go fmt against code.
	go fmt ./...

.PHONY: vet
vet: ## Run go vet against code.
	go vet ./...

.PHONY: lint
lint: golangci-lint helm-lint ## Run golangci-lint linter and lint the Helm chart (helm-lint).
	$(GOLANGCI_LINT) run --allow-parallel-runners

.PHONY: helm-lint
helm-lint: helm ## Lint the Helm chart with its defaults and with every optional object enabled.
	$(HELM) lint --strict $(CHART_DIR)
	$(HELM) lint --strict $(CHART_DIR) --set cluster.enabled=true --set serviceMonitor.enabled=true --set grafanaDashboard.enabled=true
	$(HELM) lint --strict $(CHART_DIR) --namespace mqtt --set cluster.enabled=true --set 'watchNamespaces={mqtt,team-a}'

.PHONY: lint-fix
lint-fix: golangci-lint ## Run golangci-lint linter and perform fixes.
	$(GOLANGCI_LINT) run --fix

.PHONY: lint-config
lint-config: golangci-lint ## Verify golangci-lint linter configuration.
	$(GOLANGCI_LINT) config verify

.PHONY: test-deps
test-deps: ## Ensure test prerequisites exist (mosquitto_pub/mosquitto_sub from mosquitto-clients; ip from iproute2, for test/partition; chromium, for the dashboard tests); installs them with apt-get as root.
	@missing=""; pkgs=""; \
	for pair in mosquitto_pub:mosquitto-clients mosquitto_sub:mosquitto-clients ip:iproute2 chromium:chromium; do \
		tool=$${pair%%:*}; pkg=$${pair#*:}; \
		if ! command -v "$$tool" >/dev/null 2>&1; then \
			missing="$$missing $$tool"; \
			case " $$pkgs " in *" $$pkg "*) ;; *) pkgs="$$pkgs $$pkg" ;; esac; \
		fi; \
	done; \
	if [ -z "$$missing" ]; then exit 0; fi; \
	if [ "$$(id -u)" -eq 0 ]; then sudo=""; \
	elif command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then sudo="sudo"; \
	else \
		echo "ERROR: the tests need$$missing (Debian packages:$$pkgs)." >&2; \
		echo "       Install them, then rerun: sudo apt-get install -y$$pkgs" >&2; \
		echo "       (run 'make test' as root, or with passwordless sudo, to have it installed for you)." >&2; \
		exit 1; \
	fi; \
	if ! command -v apt-get >/dev/null 2>&1; then \
		echo "ERROR: apt-get not found; install$$pkgs (for$$missing) with your package manager." >&2; \
		exit 1; \
	fi; \
	echo "test-deps: missing$$missing; installing Debian packages$$pkgs"; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq; \
	$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends $$pkgs; \
	for tool in $$missing; do \
		command -v "$$tool" >/dev/null 2>&1 || { echo "ERROR: $$tool still missing after installing$$pkgs" >&2; exit 1; }; \
	done

.PHONY: test
test: test-deps envtest-binaries helm ## Run all tests with the race detector, then test-lockorder (TEST_ARGS narrows the run and skips test-lockorder).
	assets="$$(ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/envtest-binaries.sh)" && \
	KUBEBUILDER_ASSETS="$$assets" go test -race -count=1 $(TEST_ARGS)
	@# The full run checks the lock order too (about 2 minutes more on 2 cores); a run
	@# narrowed with TEST_ARGS does not.
	@if [ "$(origin TEST_ARGS)" = file ]; then $(MAKE) --no-print-directory test-park test-lockorder check-monitoring; fi

.PHONY: test-park
test-park: ## Run the broker engine's tests once more with every idle connection parking after 1 ms (broker/server/park.go), with -race.
	MQTTD_TEST_PARK_AFTER=1ms go test -race -count=1 ./broker/server/

.PHONY: check-monitoring
check-monitoring: ## Check the alert rules (controllers/resource/monitoring/rules.yaml) and the Grafana dashboard's queries with Prometheus's own parsers (hack/promcheck, its own module).
	cd hack/promcheck && go run . ../../controllers/resource/monitoring/rules.yaml ../../charts/mqtt-operator/dashboards/mqttd.json

.PHONY: test-lockorder
test-lockorder: test-deps ## Run the broker and process tests with -race and the lock-order checker (-tags lockorder, broker/LOCKS.md); an inversion exits 66.
	go test -race -tags lockorder -count=1 $(LOCKORDER_TEST_ARGS)

.PHONY: bench
bench: ## Run the broker benchmarks.
	go test -run '^$$' -bench . -benchmem ./broker/...

CONNS_LEVELS ?= 5000,10000,19000
CONNS_ROUNDS ?= 1
CONNS_CLUSTER_PER_NODE ?= 19000

.PHONY: bench-conns
bench-conns: build-mqttd ## Measure RSS per idle connection (5k, 10k, 19k) and the connect rate, mqttd against Debian's mosquitto (installed if missing), then 3 mqttd nodes at 19k each under a fleet-wide publisher; about 25 minutes (hack/connbench; figures in docs/benchmarks.md).
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto; }
	go build -o bin/connbench ./hack/connbench
	bin/connbench -mqttd bin/mqttd -mosquitto "$$(command -v mosquitto || echo /usr/sbin/mosquitto)" -levels $(CONNS_LEVELS) -rounds $(CONNS_ROUNDS)
	bin/connbench cluster -mqttd bin/mqttd -per-node $(CONNS_CLUSTER_PER_NODE)

COMPARE_ROUNDS ?= 5

.PHONY: bench-compare
bench-compare: build-mqttd ## Throughput side by side: mqttd against Debian's mosquitto (installed if missing) in alternating rounds (fan-in, fan-out, QoS 1, QoS 2, latency of pairs), sharing the cores with the load tool and then each on a core of its own, plus the load tool alone; writes the medians into docs/benchmarks.md; about 10 minutes (hack/connbench load).
	@command -v mosquitto >/dev/null 2>&1 || test -x /usr/sbin/mosquitto || { \
		sudo=; [ "$$(id -u)" = 0 ] || sudo=sudo; \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get update -qq && \
		$$sudo env DEBIAN_FRONTEND=noninteractive apt-get install -y -qq --no-install-recommends mosquitto; }
	@command -v taskset >/dev/null || { echo "bench-compare: taskset (util-linux) is needed for the pinned run" >&2; exit 1; }
	@[ "$$(nproc)" -ge 2 ] || { echo "bench-compare: the pinned run needs 2 CPUs, this machine has $$(nproc)" >&2; exit 1; }
	go build -o bin/connbench ./hack/connbench
	bin/connbench load -mqttd bin/mqttd -mosquitto "$$(command -v mosquitto || echo /usr/sbin/mosquitto)" -rounds $(COMPARE_ROUNDS) -doc docs/benchmarks.md
	bin/connbench load -mqttd bin/mqttd -mosquitto "$$(command -v mosquitto || echo /usr/sbin/mosquitto)" -rounds $(COMPARE_ROUNDS) -pin -doc docs/benchmarks.md

.PHONY: measure-operator-cache
measure-operator-cache: envtest-binaries ## Measure the operator's heap before and after 5,000 unrelated Secrets, with its cache and an unfiltered one (figures in docs/benchmarks.md).
	KUBEBUILDER_ASSETS="$$(ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/envtest-binaries.sh)" go run ./hack/measure-operator-cache

.PHONY: fuzz
fuzz: ## Fuzz the packet decoder, the ACL and the users-file parser, each for FUZZTIME (default 60s).
	go test -run '^$$' -fuzz '^FuzzDecode$$' -fuzztime $(FUZZTIME) ./broker/packet
	go test -run '^$$' -fuzz '^FuzzACL$$' -fuzztime $(FUZZTIME) ./broker/auth
	go test -run '^$$' -fuzz '^FuzzParseUsers$$' -fuzztime $(FUZZTIME) ./broker/auth

# Targets whose output is committed. `verify` reruns each of them and fails if it
# changed, added or removed a file.
VERIFY_REGENERATE := generate manifests fmt build-installer

.PHONY: verify
verify: ## Check the tree is tidy, regenerated (dist/install.yaml and the chart too) and formatted (fails on any change), then vet and lint.
	hack/verify-unchanged.sh go mod tidy
	hack/verify-unchanged.sh $(MAKE) --no-print-directory $(VERIFY_REGENERATE)
	$(MAKE) --no-print-directory verify-chart
	$(MAKE) --no-print-directory vet
	$(MAKE) --no-print-directory lint

# Explicit checks that the chart carries exactly the generated CRDs and manager rules.
# (`make manifests` copies them; this catches a hand edit or a file left behind.)
.PHONY: verify-chart
verify-chart: helm ## Check that the chart's CRDs and manager rules (ClusterRole, or a Role per watched namespace) equal config/crd/bases and config/rbac/role.yaml.
	@diff -r config/crd/bases $(CHART_DIR)/crds || { echo "ERROR: $(CHART_DIR)/crds differs from config/crd/bases: run 'make manifests'" >&2; exit 1; }
	@diff config/rbac/role.yaml $(CHART_DIR)/files/manager-role.yaml || { echo "ERROR: $(CHART_DIR)/files/manager-role.yaml differs from config/rbac/role.yaml: run 'make manifests'" >&2; exit 1; }
	@# The rendered rules, cluster-wide (one ClusterRole) and namespaced (a Role in each
	@# of two namespaces), must be role.yaml's rules, once per role.
	@rules="$$(sed -n '/^rules:/,$$p' config/rbac/role.yaml)"; \
	for roles in 1 2; do \
		set=""; if [ $$roles = 2 ]; then set="--set watchNamespaces={verify-a,verify-b}"; fi; \
		rendered="$$($(HELM) template verify $(CHART_DIR) $$set --show-only templates/manager-rbac.yaml)" || exit 1; \
		got="$$(printf '%s\n' "$$rendered" | awk '/^---/ { p = 0 } /^rules:/ { p = 1 } p')"; \
		want="$$(for i in $$(seq $$roles); do printf '%s\n' "$$rules"; done)"; \
		[ "$$got" = "$$want" ] || { echo "ERROR: the chart's manager rules ($$roles role(s)$${set:+, $$set}) differ from config/rbac/role.yaml:" >&2; \
			diff <(printf '%s\n' "$$want") <(printf '%s\n' "$$got") >&2; exit 1; }; \
	done

##@ End-to-end

.PHONY: cluster-up
cluster-up: ## Start the local single-node cluster of real Kubernetes binaries (hack/local-cluster.sh; root, Linux).
	hack/local-cluster.sh up >/dev/null
	@echo "export KUBECONFIG=$$(hack/local-cluster.sh kubeconfig)"

.PHONY: cluster-down
cluster-down: ## Stop the local cluster and remove its state.
	hack/local-cluster.sh down

.PHONY: test-e2e
test-e2e: helm ## Run the e2e suite (test/e2e) on kind, the local cluster or E2E_USE_EXISTING_CLUSTER=true.
	IMG=$(IMG) MQTTD_IMG=$(MQTTD_IMG) HELM=$(HELM) MAKE=$(MAKE) hack/e2e.sh test

.PHONY: demo
demo: helm ## Start a cluster with the operator and the 3-node sample MQTTCluster, and print how to connect.
	IMG=$(IMG) MQTTD_IMG=$(MQTTD_IMG) HELM=$(HELM) MAKE=$(MAKE) hack/e2e.sh demo

##@ Build

.PHONY: build
build: build-mqttd build-manager ## Build the static mqttd and manager binaries into bin/.

.PHONY: build-mqttd
build-mqttd: | $(LOCALBIN) ## Build the static mqttd broker binary into bin/mqttd.
	CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(LOCALBIN)/mqttd ./broker/cmd/mqttd

.PHONY: build-manager
build-manager: | $(LOCALBIN) ## Build the static operator binary into bin/manager.
	CGO_ENABLED=0 go build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(LOCALBIN)/manager .

.PHONY: run-broker
run-broker: build-mqttd ## Run mqttd locally with config/mqttd/mqttd.yaml (MQTT 127.0.0.1:1883, WebSocket :8083, dashboard 127.0.0.1:18083).
	$(LOCALBIN)/mqttd --config $(MQTTD_CONFIG)

.PHONY: image-context
image-context: | $(LOCALBIN) ## Stage the images' build context in bin/image: static linux binaries, CA bundle, nonroot user.
	@[ -f "$(CA_BUNDLE)" ] || { echo "ERROR: CA bundle $(CA_BUNDLE) not found: install ca-certificates or set CA_BUNDLE" >&2; exit 1; }
	rm -rf $(IMAGE_CONTEXT)
	mkdir -p $(IMAGE_CONTEXT)/etc/ssl/certs
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) go build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(IMAGE_CONTEXT)/mqttd ./broker/cmd/mqttd
	CGO_ENABLED=0 GOOS=linux GOARCH=$(IMAGE_ARCH) go build -trimpath -ldflags "-X main.version=$(VERSION)" -o $(IMAGE_CONTEXT)/manager .
	cp -L $(CA_BUNDLE) $(IMAGE_CONTEXT)/etc/ssl/certs/ca-certificates.crt
	printf 'root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n' >$(IMAGE_CONTEXT)/etc/passwd
	printf 'root:x:0:\nnonroot:x:65532:\n' >$(IMAGE_CONTEXT)/etc/group

.PHONY: docker-build
docker-build: image-context ## Build the operator (IMG) and broker (MQTTD_IMG) images from binaries built on the host.
	$(CONTAINER_TOOL) build --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg VERSION=$(VERSION) -f Dockerfile -t $(IMG) $(IMAGE_CONTEXT)
	$(CONTAINER_TOOL) build --build-arg BASE_IMAGE=$(BASE_IMAGE) --build-arg VERSION=$(VERSION) -f Dockerfile.mqttd -t $(MQTTD_IMG) $(IMAGE_CONTEXT)

.PHONY: docker-push
docker-push: ## Push the operator (IMG) and broker (MQTTD_IMG) images.
	$(CONTAINER_TOOL) push $(IMG)
	$(CONTAINER_TOOL) push $(MQTTD_IMG)

.PHONY: build-installer
build-installer: manifests generate kustomize ## Write dist/install.yaml (CRD, RBAC, manager Deployment with image IMG) from config/default.
	mkdir -p dist
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default >dist/install.yaml

.PHONY: clean
clean: ## Remove built binaries, installed tools and coverage output (dist/install.yaml is committed and stays).
	rm -rf $(LOCALBIN) cover.out cover.html

##@ Deployment

ifndef ignore-not-found
  ignore-not-found = false
endif

.PHONY: install
install: manifests kustomize ## Install the CRD into the cluster of the current kubeconfig context.
	$(KUSTOMIZE) build config/crd | $(KUBECTL) apply --server-side -f -

.PHONY: uninstall
uninstall: manifests kustomize ## Remove the CRD from the cluster (ignore-not-found=true to ignore missing objects).
	$(KUSTOMIZE) build config/crd | $(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -f -

.PHONY: deploy
deploy: manifests kustomize ## Deploy the operator (image IMG) to the cluster of the current kubeconfig context.
	cd config/manager && $(KUSTOMIZE) edit set image controller=$(IMG)
	$(KUSTOMIZE) build config/default | $(KUBECTL) apply --server-side -f -

.PHONY: undeploy
undeploy: kustomize ## Remove the operator from the cluster (ignore-not-found=true to ignore missing objects).
	$(KUSTOMIZE) build config/default | $(KUBECTL) delete --ignore-not-found=$(ignore-not-found) -f -

##@ Dependencies

## Location to install dependencies to
LOCALBIN ?= $(shell pwd)/bin
$(LOCALBIN):
	mkdir -p $(LOCALBIN)

## Tool Binaries
GOLANGCI_LINT ?= $(LOCALBIN)/golangci-lint
CONTROLLER_GEN ?= $(LOCALBIN)/controller-gen
KUSTOMIZE ?= $(LOCALBIN)/kustomize
HELM ?= $(LOCALBIN)/helm

## Tool Versions
GOLANGCI_LINT_VERSION ?= v2.15.0
# Kubernetes version of the envtest binaries (kube-apiserver, etcd).
ENVTEST_K8S_VERSION ?= 1.37.2
CONTROLLER_TOOLS_VERSION ?= v0.23.0
# kustomize v5.8.3 needs a newer Go than 1.26.
KUSTOMIZE_VERSION ?= v5.8.2
HELM_VERSION ?= v3.22.0

.PHONY: golangci-lint
golangci-lint: | $(LOCALBIN) ## Download golangci-lint locally if necessary.
	$(call go-install-tool,$(GOLANGCI_LINT),github.com/golangci/golangci-lint/v2/cmd/golangci-lint,$(GOLANGCI_LINT_VERSION))

.PHONY: envtest-binaries
envtest-binaries: ## Get kube-apiserver and etcd for envtest into bin/k8s (setup-envtest, else built from source).
	ENVTEST_K8S_VERSION=$(ENVTEST_K8S_VERSION) hack/envtest-binaries.sh >/dev/null

.PHONY: controller-gen
controller-gen: | $(LOCALBIN) ## Download controller-gen locally if necessary.
	$(call go-install-tool,$(CONTROLLER_GEN),sigs.k8s.io/controller-tools/cmd/controller-gen,$(CONTROLLER_TOOLS_VERSION))

.PHONY: kustomize
kustomize: | $(LOCALBIN) ## Download kustomize locally if necessary.
	$(call go-install-tool,$(KUSTOMIZE),sigs.k8s.io/kustomize/kustomize/v5,$(KUSTOMIZE_VERSION))

.PHONY: helm
helm: | $(LOCALBIN) ## Build helm locally (from the Go module proxy) if necessary.
	$(call go-install-tool,$(HELM),helm.sh/helm/v3/cmd/helm,$(HELM_VERSION))

# go-install-tool will 'go install' any package with custom target and name of binary, if it doesn't exist
# $1 - target path with name of binary
# $2 - package url which can be installed
# $3 - specific version of package
# The binary is kept as <name>-<version> and <name> is a symlink to it, so changing
# a version variable installs that version on the next run.
define go-install-tool
@[ -f "$(1)-$(3)" ] || { \
set -e; \
package=$(2)@$(3) ;\
echo "Downloading $${package}" ;\
rm -f "$(1)" ;\
GOBIN="$(LOCALBIN)" go install $${package} ;\
mv "$(1)" "$(1)-$(3)" ;\
} ;\
ln -sf "$$(basename "$(1)-$(3)")" "$(1)"
endef
