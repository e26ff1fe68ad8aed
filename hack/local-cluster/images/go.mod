// Sources of the images that hack/local-cluster.sh builds FROM scratch: the pod
// sandbox (pause) and the test workload of hack/local-cluster/smoke-test.sh
// (testapp). A module of its own, without dependencies, so that these small
// programs stay out of ./... of the repository.

module github.com/mqtt-operator/mqtt-operator/hack/local-cluster/images

go 1.26.0
