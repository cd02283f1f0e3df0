{{- define "statuslist.name" -}}{{ .Chart.Name }}{{- end -}}
{{- define "statuslist.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 50 | trimSuffix "-" }}
{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 50 | trimSuffix "-" }}{{- end -}}
{{- end -}}
{{- define "statuslist.image" -}}{{ .Values.image.repository }}:{{ default .Chart.AppVersion .Values.image.tag }}{{- end -}}
{{- define "statuslist.labels" -}}
app.kubernetes.io/name: {{ include "statuslist.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}
{{- define "statuslist.selector" -}}
app.kubernetes.io/name: {{ include "statuslist.name" .root }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}
{{- define "statuslist.podSecurity" -}}
runAsNonRoot: true
runAsUser: 65532
runAsGroup: 65532
fsGroup: 65532
seccompProfile:
  type: RuntimeDefault
{{- end -}}
{{- define "statuslist.containerSecurity" -}}
allowPrivilegeEscalation: false
readOnlyRootFilesystem: true
capabilities:
  drop: ["ALL"]
{{- end -}}
{{- define "statuslist.databaseEnv" -}}
- name: DATABASE_URL
  valueFrom:
    secretKeyRef:
      name: {{ .Values.database.existingSecret }}
      key: {{ .Values.database.key }}
{{- end -}}

{{/* TLS material for the database connection (see values: database.tls). */}}
{{- define "statuslist.databaseMounts" -}}
{{- if or .Values.database.tls.caSecret .Values.database.tls.caConfigMap }}
- name: database-ca
  mountPath: /etc/statuslist/database-ca
  readOnly: true
{{- end }}
{{- if .Values.database.tls.clientCertSecret }}
- name: database-client
  mountPath: /etc/statuslist/database-client
  readOnly: true
{{- end }}
{{- end -}}
{{- define "statuslist.databaseVolumes" -}}
{{- if .Values.database.tls.caSecret }}
- name: database-ca
  secret:
    secretName: {{ .Values.database.tls.caSecret }}
{{- else if .Values.database.tls.caConfigMap }}
- name: database-ca
  configMap:
    name: {{ .Values.database.tls.caConfigMap }}
{{- end }}
{{- if .Values.database.tls.clientCertSecret }}
- name: database-client
  secret:
    secretName: {{ .Values.database.tls.clientCertSecret }}
    defaultMode: 256  # 0400: the client key readable by the owner only
{{- end }}
{{- end -}}
{{/* The namespace the operator watches: the release's unless operator.watchAllNamespaces. */}}
{{- define "statuslist.operatorScopeEnv" -}}
- name: WATCH_NAMESPACE
  value: {{ ternary "" .Release.Namespace .Values.operator.watchAllNamespaces | quote }}
- name: POD_NAMESPACE
  value: {{ .Release.Namespace | quote }}
- name: LEASE_NAME
  value: {{ include "statuslist.leaseName" . | quote }}
{{- end -}}
{{- define "statuslist.leaseName" -}}{{ include "statuslist.fullname" . }}-operator{{- end -}}
{{/* Helm's record of this revision (its default Secret storage). */}}
{{- define "statuslist.helmRecord" -}}sh.helm.release.v1.{{ .Release.Name }}.v{{ .Release.Revision }}{{- end -}}
{{- define "statuslist.tracingEnv" -}}
{{- with .Values.tracing.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ . | quote }}
- name: OTEL_TRACES_SAMPLER
  value: {{ $.Values.tracing.sampler | quote }}
{{- with $.Values.tracing.samplerArg }}
- name: OTEL_TRACES_SAMPLER_ARG
  value: {{ . | quote }}
{{- end }}
- name: OTEL_RESOURCE_ATTRIBUTES
  value: "service.namespace={{ $.Release.Namespace }}/{{ $.Release.Name }},k8s.namespace.name={{ $.Release.Namespace }}"
{{- end }}
{{- end -}}
{{- define "statuslist.tracingEgress" -}}
{{- if .Values.tracing.otlpEndpoint }}
# The OpenTelemetry collector (traces)
- ports:
    - port: {{ .Values.tracing.collectorPort }}
      protocol: TCP
  {{- with .Values.tracing.collectorCidr }}
  to:
    - ipBlock:
        cidr: {{ . }}
  {{- end }}
{{- end }}
{{- end -}}
