{{/* The chart's name, overridable. */}}
{{- define "llm-gateway.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* The release's object name: <release>-<chart> unless the release name already contains the chart name. */}}
{{- define "llm-gateway.fullname" -}}
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

{{- define "llm-gateway.chart" -}}
{{- printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Kubernetes' recommended labels. */}}
{{- define "llm-gateway.labels" -}}
helm.sh/chart: {{ include "llm-gateway.chart" . }}
{{ include "llm-gateway.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "llm-gateway.selectorLabels" -}}
app.kubernetes.io/name: {{ include "llm-gateway.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "llm-gateway.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "llm-gateway.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* The Service label whose value the ServiceMonitor turns into the job label (jobLabel). */}}
{{- define "llm-gateway.jobLabelKey" -}}
llm-gateway.io/job
{{- end }}

{{/* keda or hpa: "auto" picks KEDA when the cluster serves its API. */}}
{{- define "llm-gateway.autoscalingEngine" -}}
{{- $engine := .Values.autoscaling.engine }}
{{- if eq $engine "auto" }}
{{- ternary "keda" "hpa" (.Capabilities.APIVersions.Has "keda.sh/v1alpha1/ScaledObject") }}
{{- else }}
{{- $engine }}
{{- end }}
{{- end }}

{{/* Per-replica target of requests in flight (running plus queued): defaults to one full batch. */}}
{{- define "llm-gateway.inFlightTarget" -}}
{{- if kindIs "invalid" .Values.autoscaling.inFlightPerReplica }}
{{- .Values.gateway.maxBatchSize | int }}
{{- else }}
{{- .Values.autoscaling.inFlightPerReplica | int }}
{{- end }}
{{- end }}

{{/* Per-replica target of queued requests: defaults to an eighth of the admission queue, at least 1. */}}
{{- define "llm-gateway.queueDepthTarget" -}}
{{- if kindIs "invalid" .Values.autoscaling.queueDepthPerReplica }}
{{- max 1 (div (.Values.gateway.maxQueue | int) 8) }}
{{- else }}
{{- .Values.autoscaling.queueDepthPerReplica | int }}
{{- end }}
{{- end }}

{{/* The PromQL selector of this release's gateway series, as the Prometheus Operator labels them. */}}
{{- define "llm-gateway.seriesSelector" -}}
namespace="{{ .Release.Namespace }}",service="{{ include "llm-gateway.fullname" . }}"
{{- end }}
