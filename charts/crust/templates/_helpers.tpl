{{/*
Names. The full name is the release name when it already holds the chart's
name (`helm install crust charts/crust` gives "crust"), else
"<release>-<chart>"; 63 characters at most, as for any DNS label.
*/}}
{{- define "crust.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{- define "crust.fullname" -}}
{{- if .Values.fullnameOverride -}}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- $name := default .Chart.Name .Values.nameOverride -}}
{{- if contains $name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
{{- end -}}

{{- define "crust.serviceAccountName" -}}
{{- default (include "crust.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{/* The labels every object carries. */}}
{{- define "crust.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
app.kubernetes.io/name: {{ include "crust.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end -}}

{{/* The labels the DaemonSet selects its pods by (immutable once created). */}}
{{- define "crust.selectorLabels" -}}
app.kubernetes.io/name: {{ include "crust.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: installer
{{- end -}}

{{- define "crust.image" -}}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The node label the installer sets once crust serves on the node. */}}
{{- define "crust.readyLabelKey" -}}crust.dev/runtime{{- end -}}
{{- define "crust.readyLabelValue" -}}ready{{- end -}}

{{/* Whether the drain RBAC and the drain itself are on: drain only happens
as part of the kubelet switch (install) or its undoing (uninstall). */}}
{{- define "crust.drain" -}}
{{- if and .Values.kubelet.switch .Values.kubelet.drain -}}true{{- end -}}
{{- end -}}

{{- define "crust.terminationGracePeriodSeconds" -}}
{{- if kindIs "invalid" .Values.terminationGracePeriodSeconds -}}
{{- if include "crust.drain" . -}}
{{- add 300 .Values.kubelet.drainTimeoutSeconds -}}
{{- else -}}
300
{{- end -}}
{{- else -}}
{{- .Values.terminationGracePeriodSeconds -}}
{{- end -}}
{{- end -}}

{{/* Startup probe failures allowed: the install budget (plus the drain's
timeout when draining) in probe periods, rounded up. */}}
{{- define "crust.startupFailureThreshold" -}}
{{- $budget := int .Values.probes.startupSeconds -}}
{{- if include "crust.drain" . -}}
{{- $budget = add $budget .Values.kubelet.drainTimeoutSeconds -}}
{{- end -}}
{{- $period := int .Values.probes.periodSeconds -}}
{{- div (sub (add $budget $period) 1) $period -}}
{{- end -}}

{{/* Fail the render when a RuntimeClass names a handler crust would not
know: crust's built-in `crust` or one under config.runtime.handlers. */}}
{{- define "crust.checkHandlers" -}}
{{- $handlers := dict "crust" true -}}
{{- with .Values.config.runtime -}}
{{- range $name, $_ := (.handlers | default dict) -}}
{{- $_ := set $handlers $name true -}}
{{- end -}}
{{- end -}}
{{- range .Values.runtimeClasses -}}
{{- if not (hasKey $handlers .handler) -}}
{{- fail (printf "runtimeClasses: %s names handler %q, which is neither crust's built-in \"crust\" nor under config.runtime.handlers (known: %s)" .name .handler (keys $handlers | sortAlpha | join ", ")) -}}
{{- end -}}
{{- end -}}
{{- end -}}
