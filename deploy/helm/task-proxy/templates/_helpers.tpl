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

{{- /* Whether the original's logging values are used (any of them set). */ -}}
{{- define "task-proxy.logging" -}}
{{- if or .Values.server.logging .Values.proxy.logging .Values.proxy.accessLog }}true{{ end -}}
{{- end }}

{{- /* One stream of the logging config; a file writer gets the original's default policy. */ -}}
{{- define "task-proxy.logStream" -}}
{{- $s := deepCopy (default dict .) -}}
{{- if and (hasKey $s "rotationPolicy") (not (get $s "rotationPolicy")) -}}
{{- $_ := unset $s "rotationPolicy" -}}
{{- end -}}
{{- if and (eq (toString (get $s "writerType")) "file") (not (hasKey $s "rotationPolicy")) -}}
{{- $_ := set $s "rotationPolicy" (dict "rotationPeriodMilliseconds" 3600000 "maxSegmentSize" "100Mi" "maxTotalSizeToKeep" "1Gi" "maxSegmentCountToKeep" 10) -}}
{{- end -}}
{{- toYaml $s -}}
{{- end }}
