{{/* Chart name, overridable. */}}
{{- define "otter.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{/* Release-scoped base name: "<release>" when it contains the chart name, else "<release>-<chart>". */}}
{{- define "otter.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 54 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 54 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{/* Name of the operator's objects (Deployment, RBAC, Lease): "<fullname>-operator". */}}
{{- define "otter.operatorName" -}}
{{- printf "%s-operator" (include "otter.fullname" .) }}
{{- end }}

{{- define "otter.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "otter.operatorName" .) .Values.serviceAccount.name }}
{{- else }}
{{- required "serviceAccount.name is required when serviceAccount.create is false" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{- define "otter.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otter.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/component: operator
{{- end }}

{{- define "otter.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "otter.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/part-of: otter
app.kubernetes.io/managed-by: {{ .Release.Service }}
{{- end }}

{{- define "otter.image" -}}
{{- if .Values.image.digest }}
{{- printf "%s@%s" .Values.image.repository .Values.image.digest }}
{{- else }}
{{- printf "%s:%s" .Values.image.repository (default .Chart.AppVersion .Values.image.tag) }}
{{- end }}
{{- end }}

{{/* "true" or "false": leader election on? auto = more than one replica. */}}
{{- define "otter.leaderElection" -}}
{{- $le := .Values.leaderElection.enabled }}
{{- if eq (toString $le) "auto" }}
{{- if gt (int .Values.replicaCount) 1 }}true{{ else }}false{{ end }}
{{- else }}
{{- ternary "true" "false" (eq (toString $le) "true") }}
{{- end }}
{{- end }}

{{/*
The operator's namespaced permissions (docs/operator.md, "RBAC"): in the ClusterRole when it
watches every namespace, in a Role of the watched namespace with operator.watchNamespace.
*/}}
{{- define "otter.namespacedRules" -}}
- apiGroups: [otter.dev]
  resources: [otterdeployments]
  verbs: [list, watch]
- apiGroups: [otter.dev]
  resources: [otterdeployments/status]
  verbs: [patch]
- apiGroups: [otter.dev]
  resources: [otterdeployments/finalizers]
  verbs: [update]
- apiGroups: [""]
  resources: [secrets]
  verbs: [get, list, watch, create, patch, delete]
- apiGroups: [""]
  resources: [pods]
  verbs: [list, watch]
- apiGroups: [""]
  resources: [configmaps, services]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [apps]
  resources: [deployments]
  verbs: [list, watch, create, patch]
- apiGroups: [apps]
  resources: [daemonsets, statefulsets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [autoscaling]
  resources: [horizontalpodautoscalers]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [policy]
  resources: [poddisruptionbudgets]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [networking.k8s.io]
  resources: [networkpolicies]
  verbs: [list, watch, create, patch, delete]
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create, patch]
{{- end }}

{{/* Cluster-scoped permissions: TURN node addresses. */}}
{{- define "otter.clusterRules" -}}
- apiGroups: [""]
  resources: [nodes]
  verbs: [list, watch]
{{- end }}

{{/* Rules across values that the schema cannot explain well: fail with the fix. */}}
{{- define "otter.validate" -}}
{{- if and (eq (toString .Values.leaderElection.enabled) "false") (gt (int .Values.replicaCount) 1) }}
{{- fail (printf "leaderElection.enabled is false but replicaCount is %d: every replica would reconcile at once. Set leaderElection.enabled to auto (or true), or replicaCount to 1." (int .Values.replicaCount)) }}
{{- end }}
{{- $watch := .Values.operator.watchNamespace }}
{{- $crNs := default .Release.Namespace .Values.otterDeployment.namespace }}
{{- if and .Values.otterDeployment.enabled $watch (ne $watch $crNs) }}
{{- fail (printf "otterDeployment.namespace is %s but the operator only watches operator.watchNamespace=%s: nothing would reconcile it. Put the OtterDeployment in %s or clear operator.watchNamespace." $crNs $watch $watch) }}
{{- end }}
{{- end }}
