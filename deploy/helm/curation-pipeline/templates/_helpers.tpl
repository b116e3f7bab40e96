{{- define "curation.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag }}
{{- end -}}

{{- define "curation.labels" -}}
app.kubernetes.io/part-of: curation-pipeline
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ .Chart.Name }}-{{ .Chart.Version }}
{{- end -}}

{{- define "curation.rayAddress" -}}
ray://{{ .Values.ray.clusterName }}-head-svc.{{ .Release.Namespace }}.svc.cluster.local:10001
{{- end -}}

{{/* env every pod of the pipeline gets: storage, offline model loading */}}
{{- define "curation.storageEnv" -}}
{{- if .Values.storage.credentialsSecret }}
envFrom:
  - secretRef: {name: {{ .Values.storage.credentialsSecret }}}
{{- end }}
{{- end -}}

{{- /* The ConfigMap of the code location's settings file, and where the code server and run pods mount it */ -}}
{{- define "curation.settingsName" -}}{{ .Values.userCode.name }}-settings{{- end -}}
{{- define "curation.settingsDir" -}}/etc/curation{{- end -}}
