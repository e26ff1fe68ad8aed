# Image of the operator, `manager` (image mqtt-operator). Build it with `make docker-build`.
#
# The image is assembled, not compiled: `make docker-build` first builds the static
# binary on the host (CGO_ENABLED=0, GOOS=linux) and stages it, with a CA bundle and
# the nonroot user (uid/gid 65532), into bin/image/, the build context. So the build
# pulls nothing when BASE_IMAGE is scratch (the default), and works offline.
#
# On a machine that can pull images, a distroless base works too:
#   make docker-build BASE_IMAGE=gcr.io/distroless/static:nonroot
ARG BASE_IMAGE=scratch
FROM ${BASE_IMAGE}

ARG VERSION=dev
LABEL org.opencontainers.image.title="mqtt-operator" \
      org.opencontainers.image.description="Kubernetes operator for mqttd clustered MQTT brokers" \
      org.opencontainers.image.source="https://github.com/mqtt-operator/mqtt-operator" \
      org.opencontainers.image.licenses="Apache-2.0" \
      org.opencontainers.image.version="${VERSION}"

COPY etc/passwd /etc/passwd
COPY etc/group /etc/group
COPY etc/ssl/certs/ca-certificates.crt /etc/ssl/certs/ca-certificates.crt
COPY manager /manager

USER 65532:65532
ENTRYPOINT ["/manager"]
