{{- define "alignserve.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "alignserve.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "alignserve.labels" -}}
{{ include "alignserve.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- /* The fleet (fleet.enabled): vLLM replicas and the vLLM Router. Their own
app.kubernetes.io/name, so alignserve's selectors (Service, PDB, NetworkPolicy) never
match their pods. */ -}}
{{- define "alignserve.fleetName" -}}
{{- printf "%s-%s" (include "alignserve.fullname" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "alignserve.fleetSelectorLabels" -}}
app.kubernetes.io/name: {{ printf "%s-%s" .root.Chart.Name .component }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
{{- end -}}

{{- define "alignserve.fleetLabels" -}}
{{ include "alignserve.fleetSelectorLabels" . }}
app.kubernetes.io/component: {{ .component }}
app.kubernetes.io/part-of: {{ .root.Chart.Name }}
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version }}
{{- end -}}

{{- /* The engine URL alignserve sends its calls to: remote.engineUrl, else the fleet's
router; empty: the in-process engine. */ -}}
{{- define "alignserve.engineUrl" -}}
{{- if .Values.remote.engineUrl -}}
{{- .Values.remote.engineUrl -}}
{{- else if .Values.fleet.enabled -}}
{{- printf "http://%s:%d" (include "alignserve.fleetName" (dict "root" . "component" "router")) (int .Values.fleet.router.port) -}}
{{- end -}}
{{- end -}}

{{- /* --upstream-affinity-header: remote.affinityHeader (a router of your own), else the
chart's router's fleet.router.affinityHeader; empty: none. */ -}}
{{- define "alignserve.affinityHeader" -}}
{{- if .Values.remote.affinityHeader -}}
{{- .Values.remote.affinityHeader -}}
{{- else if and .Values.fleet.enabled (not .Values.remote.engineUrl) -}}
{{- .Values.fleet.router.affinityHeader -}}
{{- end -}}
{{- end -}}
