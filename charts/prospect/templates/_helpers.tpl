{{/* Chart name, overridable. */}}
{{- define "prospect.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/*
Prefix of every resource name: <release>-<chart>, or the release alone when it already holds
the chart name. Truncated to 50 so suffixes such as -pushgateway keep names under 63.
*/}}
{{- define "prospect.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 50 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Labels on every object; `component` says which part of the release it belongs to. */}}
{{- define "prospect.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .context.Chart.Name .context.Chart.Version | replace "+" "_" }}
app.kubernetes.io/managed-by: {{ .context.Release.Service }}
app.kubernetes.io/version: {{ .context.Chart.AppVersion | quote }}
app.kubernetes.io/part-of: prospect
{{ include "prospect.selectorLabels" . }}
{{- end }}

{{/* The subset of labels that selectors match; it never changes across upgrades. */}}
{{- define "prospect.selectorLabels" -}}
app.kubernetes.io/name: {{ include "prospect.name" .context }}
app.kubernetes.io/instance: {{ .context.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end }}

{{- define "prospect.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "prospect.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag for an image block; the operator's tag defaults to the appVersion. */}}
{{- define "prospect.image" -}}
{{- printf "%s:%s" .image.repository (default .default .image.tag) }}
{{- end }}

{{/* Name of the Secret holding the built-in MinIO's credentials. */}}
{{- define "prospect.minioSecret" -}}
{{- default (printf "%s-minio" (include "prospect.fullname" .)) .Values.minio.existingSecret }}
{{- end }}

{{/* Security context of every container the chart runs: no privileges, nothing writable. */}}
{{- define "prospect.containerSecurityContext" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end }}
