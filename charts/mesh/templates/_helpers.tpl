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
- --log-format
- {{ .Values.logFormat }}
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
seccompProfile:
  type: RuntimeDefault
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

{{/*
Whether a component's code calls the API server (rbac-needs.yaml `calls_api_server`, which
check_rendered.py keeps in step with the crate's sources): only then is an API token mounted.
*/}}
{{- define "mesh.callsApiServer" -}}
{{- $needs := .root.Files.Get "rbac-needs.yaml" | fromYaml -}}
{{- $n := index $needs .component | default dict -}}
{{- if $n.calls_api_server }}true{{ else }}false{{ end -}}
{{- end -}}

{{/* ServiceAccount of a component: an API token only for a component that calls the API server. */}}
{{- define "mesh.serviceAccount" -}}
apiVersion: v1
kind: ServiceAccount
metadata:
  name: {{ include "mesh.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "mesh.labels" . | nindent 4 }}
automountServiceAccountToken: {{ include "mesh.callsApiServer" . }}
{{- end -}}

{{/* Smallest number of pods a component runs: its HPA's minReplicas, else its replicas. */}}
{{- define "mesh.minReplicas" -}}
{{- $v := index .root.Values (.valuesKey | default .component) -}}
{{- if and $v.autoscaling $v.autoscaling.enabled -}}
{{- int $v.autoscaling.minReplicas -}}
{{- else -}}
{{- int $v.replicas -}}
{{- end -}}
{{- end -}}

{{/* `replicas:` of a Deployment, left out when an HPA owns the count. */}}
{{- define "mesh.replicas" -}}
{{- $v := index .root.Values (.valuesKey | default .component) -}}
{{- if not (and $v.autoscaling $v.autoscaling.enabled) -}}
replicas: {{ $v.replicas }}
{{- end -}}
{{- end -}}

{{/* PodDisruptionBudget for a component that runs more than one pod. */}}
{{- define "mesh.pdb" -}}
{{- if gt (int (include "mesh.minReplicas" .)) 1 }}
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

{{/* HorizontalPodAutoscaler (CPU utilisation) for a component whose autoscaling is on. */}}
{{- define "mesh.hpa" -}}
{{- $a := (index .root.Values (.valuesKey | default .component)).autoscaling -}}
{{- if $a.enabled }}
{{- if lt (int $a.maxReplicas) (int $a.minReplicas) }}
{{- fail (printf "%s.autoscaling: maxReplicas %d is below minReplicas %d" .component (int $a.maxReplicas) (int $a.minReplicas)) }}
{{- end }}
apiVersion: autoscaling/v2
kind: HorizontalPodAutoscaler
metadata:
  name: {{ include "mesh.componentName" . }}
  namespace: {{ .root.Release.Namespace }}
  labels:
    {{- include "mesh.labels" . | nindent 4 }}
spec:
  scaleTargetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: {{ include "mesh.componentName" . }}
  minReplicas: {{ $a.minReplicas }}
  maxReplicas: {{ $a.maxReplicas }}
  metrics:
    - type: Resource
      resource:
        name: cpu
        target:
          type: Utilization
          averageUtilization: {{ $a.targetCPUUtilizationPercentage }}
{{- end }}
{{- end -}}

{{/* Pod annotations: Prometheus scraping of a port's /metrics. Call with (dict "root" $ "port" 15014). */}}
{{- define "mesh.podAnnotations" -}}
{{- if .root.Values.prometheusScrape -}}
annotations:
  prometheus.io/scrape: "true"
  prometheus.io/port: {{ .port | quote }}
  prometheus.io/path: /metrics
{{- end }}
{{- end -}}

{{/* Refuses replica counts a component cannot run with yet. */}}
{{- define "mesh.singleReplica" -}}
{{- $v := index .root.Values (.valuesKey | default .component) -}}
{{- $n := int $v.replicas -}}
{{- if gt $n 1 -}}
{{- fail (printf "%s.replicas is %d: %s runs as one replica until its state is shared (see charts/README.md)" .component $n .component) -}}
{{- end -}}
{{- if and $v.autoscaling $v.autoscaling.enabled -}}
{{- fail (printf "%s.autoscaling.enabled: %s runs as one replica until its state is shared (see charts/README.md)" .component .component) -}}
{{- end -}}
{{- end -}}

{{/* Checks of values that no schema can express. */}}
{{- define "mesh.validateValues" -}}
{{- end -}}

{{/*
TLS of a component's admission webhook, as YAML: caBundle (base64 PEM), secretName, generated,
and when generated tlsCrt/tlsKey (base64 PEM). Call with
(dict "root" $ "component" "galley" "webhook" .Values.galley.validationWebhook).
With webhook.caBundle the serving certificate is the user's (webhook.existingSecret). Without,
a CA and a serving certificate for the component's Service DNS names are made with genCA and
genSignedCert, and reused from the existing Secret on upgrade (lookup; `helm template` cannot
look up, so it makes new ones each time).
*/}}
{{- define "mesh.webhookTLS" -}}
{{- $svc := include "mesh.componentName" . -}}
{{- $ns := .root.Release.Namespace -}}
{{- $name := printf "%s-webhook-tls" $svc | trunc 63 | trimSuffix "-" -}}
{{- if .webhook.caBundle -}}
{{- if not .webhook.existingSecret -}}
{{- fail (printf "%s: caBundle is set, so existingSecret must name the TLS Secret its certificate is in" .component) -}}
{{- end -}}
caBundle: {{ if contains "-----BEGIN" .webhook.caBundle }}{{ b64enc .webhook.caBundle }}{{ else }}{{ .webhook.caBundle }}{{ end }}
secretName: {{ .webhook.existingSecret }}
generated: false
{{- else -}}
{{- if .webhook.existingSecret -}}
{{- fail (printf "%s: existingSecret is set, so caBundle must hold the CA that signed its certificate" .component) -}}
{{- end -}}
{{- $old := lookup "v1" "Secret" $ns $name -}}
{{- if and $old $old.data (hasKey $old.data "ca.crt") (hasKey $old.data "tls.crt") (hasKey $old.data "tls.key") -}}
caBundle: {{ index $old.data "ca.crt" }}
tlsCrt: {{ index $old.data "tls.crt" }}
tlsKey: {{ index $old.data "tls.key" }}
{{- else -}}
{{- $ca := genCA (printf "%s-webhook-ca" $svc) 3650 -}}
{{- $dns := list $svc (printf "%s.%s" $svc $ns) (printf "%s.%s.svc" $svc $ns) -}}
{{- $cert := genSignedCert (printf "%s.%s.svc" $svc $ns) nil $dns 3650 $ca -}}
caBundle: {{ $ca.Cert | b64enc }}
tlsCrt: {{ $cert.Cert | b64enc }}
tlsKey: {{ $cert.Key | b64enc }}
{{- end }}
secretName: {{ $name }}
generated: true
{{- end -}}
{{- end -}}

{{/* Name of the Secret a component's webhook serving certificate is in. Same call as mesh.webhookTLS. */}}
{{- define "mesh.webhookSecretName" -}}
{{- if .webhook.existingSecret -}}
{{- .webhook.existingSecret -}}
{{- else -}}
{{- printf "%s-webhook-tls" (include "mesh.componentName" .) | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}
