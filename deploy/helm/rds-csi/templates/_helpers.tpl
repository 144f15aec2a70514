{{/* The driver image, tag defaulting to the chart's appVersion. */}}
{{- define "rds-csi.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Labels of one component; the same as deploy/kubernetes. */}}
{{- define "rds-csi.labels" -}}
app.kubernetes.io/name: rds-csi
app.kubernetes.io/component: {{ . }}
{{- end -}}

{{/* The plugin directory of the driver's socket on the node. */}}
{{- define "rds-csi.pluginDir" -}}
{{ .Values.node.kubeletDir }}/plugins/{{ .Values.driverName }}
{{- end -}}
