{{/* Base name of the release's objects: the release name, with "-logstream" unless it already says so. */}}
{{- define "logstream.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{/* Name of the operator's objects (Deployment, Service, ClusterRole, ...). */}}
{{- define "logstream.operatorName" -}}
{{- printf "%s-operator" (include "logstream.fullname" .) -}}
{{- end -}}

{{- define "logstream.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "logstream.operatorName" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "logstream.rabbitmqName" -}}
{{- printf "%s-rabbitmq" (include "logstream.fullname" .) -}}
{{- end -}}

{{- define "logstream.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
app.kubernetes.io/part-of: logstream
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{- define "logstream.operatorSelector" -}}
app.kubernetes.io/name: logstream-operator
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "logstream.rabbitmqSelector" -}}
app.kubernetes.io/name: rabbitmq
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "logstream.operatorImage" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{- define "logstream.workerImage" -}}
{{- printf "%s:%s" .Values.workerImage.repository (default .Chart.AppVersion .Values.workerImage.tag) -}}
{{- end -}}

{{/* The egress rule of name resolution, for the NetworkPolicies. */}}
{{- define "logstream.dnsEgress" }}
    - ports:
        - {port: 53, protocol: UDP}
        - {port: 53, protocol: TCP}
{{- end }}
