{{- define "task-proxy.labels" -}}
app.kubernetes.io/name: task-proxy
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: task-proxy
{{- end }}

{{- define "task-proxy.selector" -}}
app.kubernetes.io/component: task-proxy
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "task-proxy.ytProxy" -}}
{{- default (printf "http://http-proxies.%s.svc.cluster.local" .Release.Namespace) .Values.ytProxy -}}
{{- end }}
