{{/* Names: every object is <namePrefix>-<part>, as in deploy/ (kmod-controller, kmod-agent, ...). */}}
{{- define "kmod.name" -}}
{{- required "namePrefix must not be empty" .Values.namePrefix | trunc 40 | trimSuffix "-" -}}
{{- end -}}
{{- define "kmod.controller" -}}{{ include "kmod.name" . }}-controller{{- end -}}
{{- define "kmod.agent" -}}{{ include "kmod.name" . }}-agent{{- end -}}
{{- define "kmod.modulePolicy" -}}{{ include "kmod.name" . }}-module-policy{{- end -}}
{{- define "kmod.agentConfig" -}}{{ include "kmod.name" . }}-agent-config{{- end -}}

{{/* The agent's identity as the apiserver sees it (request.userInfo.username). */}}
{{- define "kmod.agentUser" -}}
system:serviceaccount:{{ .Release.Namespace }}:{{ include "kmod.agent" . }}
{{- end -}}

{{- define "kmod.image" -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}

{{/* Selector labels: exactly deploy/'s, so an install made with `kubectl apply -f deploy/` can move to the chart (selectors are immutable). */}}
{{- define "kmod.selectorLabels" -}}
app.kubernetes.io/name: kmod-operator
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Object labels: the selector labels plus Helm's. */}}
{{- define "kmod.labels" -}}
app.kubernetes.io/name: kmod-operator
{{- with .component }}
app.kubernetes.io/component: {{ . }}
{{- end }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/version: {{ .root.Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* Container env that points the client at apiServer.host/port instead of the kubernetes Service. */}}
{{- define "kmod.apiServerEnv" -}}
{{- $api := .Values.apiServer -}}
{{- if or $api.host $api.port }}
{{- if not (and $api.host $api.port) }}
{{- fail "apiServer.host and apiServer.port must be set together (or both left empty for the kubernetes Service)" }}
{{- end }}
- name: KUBERNETES_SERVICE_HOST
  value: {{ $api.host | toString | quote }}
- name: KUBERNETES_SERVICE_PORT
  value: {{ $api.port | toString | quote }}
{{- end }}
{{- end -}}

{{/*
--metrics-address for a component: (dict "root" . "bind" VALUE "port" PORT "what" NAME). VALUE ''
means every address of the pod's network; with hostNetwork that would be every address of the
NODE, where no NetworkPolicy applies, so there '' means the pod's IP (status.podIP: the node's own
address, the one kubelet probes and Prometheus use). `podIP` means that in any case; an IP literal
binds that address only. Loopback is refused: kubelet probes reach the pod's IP.
*/}}
{{- define "kmod.metricsAddress" -}}
{{- $bind := .bind | default "" | toString -}}
{{- if and (not $bind) .root.Values.hostNetwork }}{{ $bind = "podIP" }}{{ end -}}
{{- if or (hasPrefix "127." $bind) (eq $bind "::1") (eq $bind "localhost") (eq $bind "[::1]") -}}
{{- fail (printf "%s.metricsBindAddress %q: the kubelet's probes reach the pod's IP, not loopback; use podIP (the node's address with hostNetwork) or leave it empty" .what $bind) -}}
{{- end -}}
--metrics-address={{ if eq $bind "podIP" }}$(POD_IP){{ else }}{{ $bind }}{{ end }}:{{ .port }}
{{- end -}}

{{/* The POD_IP env a `$(POD_IP)` metrics address needs (same arguments as kmod.metricsAddress). */}}
{{- define "kmod.podIpEnv" -}}
{{- if contains "$(POD_IP)" (include "kmod.metricsAddress" .) }}
- name: POD_IP
  valueFrom: { fieldRef: { fieldPath: status.podIP } }
{{- end }}
{{- end -}}
