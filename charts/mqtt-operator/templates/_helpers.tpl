{{/*
Name of the chart, or nameOverride.
*/}}
{{- define "mqtt-operator.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every object name: fullnameOverride, else the release name, followed by the
chart name unless the release name already contains it. Truncated to 63 characters, the
longest DNS label; suffixed names stay under the 253-character limit of most kinds.
*/}}
{{- define "mqtt-operator.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/*
Chart name and version, for the helm.sh/chart label.
*/}}
{{- define "mqtt-operator.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Labels of the operator's objects.
*/}}
{{- define "mqtt-operator.labels" -}}
{{ include "mqtt-operator.commonLabels" . }}
{{ include "mqtt-operator.selectorLabels" . }}
{{- end }}

{{/*
Labels of every object of the release, the MQTTCluster included (which must not carry
the manager's selector labels).
*/}}
{{- define "mqtt-operator.commonLabels" -}}
helm.sh/chart: {{ include "mqtt-operator.chart" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: mqtt-operator
{{- end }}

{{/*
Labels that select the manager pods.
*/}}
{{- define "mqtt-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "mqtt-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
control-plane: controller-manager
{{- end }}

{{/*
Name of the manager's ServiceAccount.
*/}}
{{- define "mqtt-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "mqtt-operator.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/*
Operator image: repository:tag, the tag defaulting to the chart's appVersion.
*/}}
{{- define "mqtt-operator.image" -}}
{{- printf "%s:%s" .Values.image.repository (.Values.image.tag | default .Chart.AppVersion) }}
{{- end }}

{{/*
Name of the metrics port: https when the endpoint is secure, else http.
*/}}
{{- define "mqtt-operator.metricsPortName" -}}
{{- if .Values.metrics.secure }}https{{ else }}http{{ end }}
{{- end }}

{{/*
The namespaces the operator watches, as a JSON list (empty: every namespace): the
watchNamespaces value without blanks or repeats. An MQTTCluster created by the chart
lives in the release namespace, which must then be one of them.
*/}}
{{- define "mqtt-operator.watchNamespaces" -}}
{{- $namespaces := list }}
{{- range .Values.watchNamespaces }}
{{- if and . (not (has . $namespaces)) }}
{{- $namespaces = append $namespaces . }}
{{- end }}
{{- end }}
{{- if and $namespaces .Values.cluster.enabled (not (has .Release.Namespace $namespaces)) }}
{{- fail (printf "cluster.enabled creates an MQTTCluster in the release namespace %q, which watchNamespaces %v leaves out: add it" .Release.Namespace $namespaces) }}
{{- end }}
{{- toJson $namespaces }}
{{- end }}
