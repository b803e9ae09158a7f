{{/*
Names: every object is `<release>-<component>` (the brief's `<release>-galley`), cut to 63
characters for DNS.
*/}}
{{- define "mesh.prefix" -}}
{{- .Release.Name | trunc 50 | trimSuffix "-" -}}
{{- end -}}

{{/* Name of a component's objects. Call with (dict "root" $ "component" "galley"). */}}
{{- define "mesh.componentName" -}}
{{- printf "%s-%s" (include "mesh.prefix" .root) .component | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* The image tag: values.image.tag, else the chart's appVersion. */}}
{{- define "mesh.tag" -}}
{{- .Values.image.tag | default .Chart.AppVersion -}}
{{- end -}}

{{/* A component's image. Call with (dict "root" $ "component" "galley"). */}}
{{- define "mesh.image" -}}
{{- printf "%s/%s:%s" (trimSuffix "/" .root.Values.image.repository) .component (include "mesh.tag" .root) -}}
{{- end -}}

{{/* Labels that select a component's pods (never change these after install). */}}
{{- define "mesh.selectorLabels" -}}
app.kubernetes.io/name: {{ .root.Chart.Name }}
app.kubernetes.io/instance: {{ .root.Release.Name }}
app.kubernetes.io/component: {{ .component }}
{{- end -}}

{{/* Every label of a component's objects. */}}
{{- define "mesh.labels" -}}
{{ include "mesh.selectorLabels" . }}
app.kubernetes.io/version: {{ include "mesh.tag" .root | quote }}
app.kubernetes.io/part-of: mesh
app.kubernetes.io/managed-by: {{ .root.Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .root.Chart.Name .root.Chart.Version | replace "+" "_" }}
{{- end -}}

{{/* In-cluster URL of galley's MCP server, for pilot and mixer. */}}
{{- define "mesh.galleyAddr" -}}
{{- printf "http://%s:9901" (include "mesh.componentName" (dict "root" . "component" "galley")) -}}
{{- end -}}

{{/* Flags every service takes: monitoring on 15014 and the log filter. */}}
{{- define "mesh.commonArgs" -}}
- --monitoring-addr
- 0.0.0.0:15014
- --log-level
- {{ .Values.logLevel | quote }}
{{- end -}}

{{/* Pod-level security: the mesh's uid 1337, never root. */}}
{{- define "mesh.podSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1337
runAsGroup: 1337
fsGroup: 1337
seccompProfile:
  type: RuntimeDefault
{{- end -}}

{{/* Container-level security: read-only root, no privilege, no capabilities. */}}
{{- define "mesh.containerSecurityContext" -}}
runAsNonRoot: true
runAsUser: 1337
runAsGroup: 1337
readOnlyRootFilesystem: true
allowPrivilegeEscalation: false
privileged: false
capabilities:
  drop:
    - ALL
{{- end -}}

{{/* The monitoring port and the probes on it (`/readyz`, `/healthz`). */}}
{{- define "mesh.monitoringPort" -}}
- name: http-monitoring
  containerPort: 15014
  protocol: TCP
{{- end -}}

{{- define "mesh.probes" -}}
readinessProbe:
  httpGet:
    path: /readyz
    port: http-monitoring
  periodSeconds: 5
  timeoutSeconds: 2
  failureThreshold: 3
livenessProbe:
  httpGet:
    path: /healthz
    port: http-monitoring
  initialDelaySeconds: 5
  periodSeconds: 10
  timeoutSeconds: 2
  failureThreshold: 3
{{- end -}}

{{/* ServiceAccount of a component: no API token mounted, the services do not call the API server yet. */}}
{{- define "mesh.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "mesh.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "mesh.labels" . | nindent 4 }}
automountServiceAccountToken: false
{{- end -}}

{{/* PodDisruptionBudget for a component with more than one replica. */}}
{{- define "mesh.pdb" -}}
{{- if gt (int (index .root.Values .component).replicas) 1 }}
apiVersion: policy/v1
kind: PodDisruptionBudget
metadata:
  name: {{ include "mesh.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "mesh.labels" . | nindent 4 }}
spec:
  minAvailable: 1
  selector:
    matchLabels:
      {{- include "mesh.selectorLabels" . | nindent 6 }}
{{- end }}
{{- end -}}

{{/* Refuses replica counts a component cannot run with yet. */}}
{{- define "mesh.singleReplica" -}}
{{- $n := int (index .root.Values .component).replicas -}}
{{- if gt $n 1 -}}
{{- fail (printf "%s.replicas is %d: %s runs as one replica until its state is shared (see charts/README.md)" .component $n .component) -}}
{{- end -}}
{{- end -}}

{{/* Checks of values that no schema can express. */}}
{{- define "mesh.validateValues" -}}
{{- if not .Values.policyCheckFailOpen -}}
{{- fail "policyCheckFailOpen=false is not supported yet: the proxy always fails open when Mixer is unreachable (docs/contracts.md)" -}}
{{- end -}}
{{- end -}}
