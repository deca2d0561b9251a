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

{{- /* The chart's own Secret of the shared keys. */ -}}
{{- define "task-proxy.keysSecret" -}}
{{- printf "%s-keys" .Release.Name -}}
{{- end }}

{{- /* The Secret with current.pem (and previous.pem): empty when identity is off or no
Secret is given nor generated. */ -}}
{{- define "task-proxy.identitySecret" -}}
{{- if and .Values.identity.enabled .Values.auth.enabled -}}
{{- if .Values.identity.existingSecret -}}
{{- .Values.identity.existingSecret -}}
{{- else if .Values.keys.generate -}}
{{- include "task-proxy.keysSecret" . -}}
{{- else if gt (int .Values.replicas) 1 -}}
{{- fail "identity.existingSecret is required with keys.generate=false and 2 or more replicas: each replica would sign with its own key (see docs/operator-guide.md)" -}}
{{- end -}}
{{- end -}}
{{- end }}

{{- /* The Secret with sessionKey: empty when none is given nor generated. */ -}}
{{- define "task-proxy.portalSecret" -}}
{{- if .Values.portal.existingSecret -}}
{{- .Values.portal.existingSecret -}}
{{- else if .Values.keys.generate -}}
{{- include "task-proxy.keysSecret" . -}}
{{- else if gt (int .Values.replicas) 1 -}}
{{- fail "portal.existingSecret is required with keys.generate=false and 2 or more replicas: browser sessions and sticky-session cookies of one replica would not work on the others (see docs/operator-guide.md)" -}}
{{- end -}}
{{- end }}
