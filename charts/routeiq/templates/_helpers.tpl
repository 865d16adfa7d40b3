{{/* Names and labels. */}}
{{- define "routeiq.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" }}
{{- end }}

{{- define "routeiq.fullname" -}}
{{- if .Values.fullnameOverride }}
{{- .Values.fullnameOverride | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- $name := default .Chart.Name .Values.nameOverride }}
{{- if contains $name .Release.Name }}
{{- .Release.Name | trunc 63 | trimSuffix "-" }}
{{- else }}
{{- printf "%s-%s" .Release.Name $name | trunc 63 | trimSuffix "-" }}
{{- end }}
{{- end }}
{{- end }}

{{- define "routeiq.selectorLabels" -}}
app.kubernetes.io/name: {{ include "routeiq.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end }}

{{- define "routeiq.labels" -}}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" | trunc 63 | trimSuffix "-" }}
{{ include "routeiq.selectorLabels" . }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
app.kubernetes.io/part-of: routeiq
{{- end }}

{{- define "routeiq.serviceAccountName" -}}
{{- if .Values.serviceAccount.create }}
{{- default (include "routeiq.fullname" .) .Values.serviceAccount.name }}
{{- else }}
{{- default "default" .Values.serviceAccount.name }}
{{- end }}
{{- end }}

{{/* repository:tag, the tag defaulting to the chart's appVersion. Call with (list image context). */}}
{{- define "routeiq.image" -}}
{{- $img := index . 0 }}{{- $ctx := index . 1 }}
{{- printf "%s:%s" $img.repository (default $ctx.Chart.AppVersion $img.tag) }}
{{- end }}

{{/* The config source config-sync polls: the store's, or the bootstrap ConfigMap's directory. */}}
{{- define "routeiq.configSource" -}}
{{- default "file:///app/bootstrap/" .Values.store.configSource }}
{{- end }}

{{- define "routeiq.bootstrapEnabled" -}}
{{- if not .Values.store.configSource }}true{{ end }}
{{- end }}

{{- define "routeiq.modelSyncEnabled" -}}
{{- if and .Values.modelSync.enabled .Values.store.modelRegistry }}true{{ end }}
{{- end }}

{{/* Pod grace period: the gateway's drain timeout plus a margin, so the drain ends before SIGKILL. */}}
{{- define "routeiq.gracePeriod" -}}
{{- add (int .Values.gateway.drainTimeoutSeconds) (int .Values.gateway.terminationMarginSeconds) }}
{{- end }}

{{/* A Secret key as an env variable, by reference only. Call with (list NAME secretRef). */}}
{{- define "routeiq.secretEnv" -}}
{{- $envName := index . 0 }}{{- $ref := index . 1 }}
{{- if $ref.name }}
- name: {{ $envName }}
  valueFrom:
    secretKeyRef:
      name: {{ $ref.name }}
      key: {{ $ref.key }}
{{- end }}
{{- end }}

{{/* Env every container shares: volume paths, telemetry. */}}
{{- define "routeiq.commonEnv" -}}
- name: ROUTEIQ_CONFIG_DIR
  value: /app/config
- name: ROUTEIQ_MODELS_DIR
  value: /app/models
- name: ROUTEIQ_RUN_DIR
  value: /app/run
- name: HOME
  value: /tmp
{{- if .Values.telemetry.collector.enabled }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: http://127.0.0.1:4318
{{- else if .Values.telemetry.otlpEndpoint }}
- name: OTEL_EXPORTER_OTLP_ENDPOINT
  value: {{ .Values.telemetry.otlpEndpoint | quote }}
{{- end }}
{{- end }}

{{/* Env of the containers that read the object store. */}}
{{- define "routeiq.storeEnv" -}}
{{- if .Values.store.endpointUrl }}
- name: AWS_ENDPOINT_URL_S3
  value: {{ .Values.store.endpointUrl | quote }}
{{- end }}
{{- if .Values.store.region }}
- name: AWS_REGION
  value: {{ .Values.store.region | quote }}
{{- end }}
{{- end }}

{{- define "routeiq.storeEnvFrom" -}}
{{- if .Values.store.credentialsSecret }}
envFrom:
  - secretRef:
      name: {{ .Values.store.credentialsSecret }}
{{- end }}
{{- end }}

{{/* The config-sync container's body, shared by the init container (--once) and the sidecar. */}}
{{- define "routeiq.configSyncContainer" -}}
image: {{ include "routeiq.image" (list .Values.images.configSync .) }}
imagePullPolicy: {{ .Values.images.configSync.pullPolicy }}
securityContext:
  {{- toYaml .Values.containerSecurityContext | nindent 2 }}
env:
  {{- include "routeiq.commonEnv" . | nindent 2 }}
  {{- with include "routeiq.storeEnv" . | trim }}{{ . | nindent 2 }}{{ end }}
  - name: CONFIG_SOURCE
    value: {{ include "routeiq.configSource" . | quote }}
  - name: CONFIG_SYNC_INTERVAL
    value: {{ .Values.configSync.interval | quote }}
  - name: HEALTH_PORT
    value: {{ .Values.configSync.healthPort | quote }}
  - name: LOG_LEVEL
    value: {{ .Values.configSync.logLevel | quote }}
  - name: OTEL_SERVICE_NAME
    value: routeiq-config-sync
  {{- if .Values.configSync.gatewayAdminKeySecret.name }}
  - name: GATEWAY_ADMIN_URL
    value: "http://127.0.0.1:{{ .Values.gateway.adminPort }}"
  {{- with include "routeiq.secretEnv" (list "GATEWAY_ADMIN_KEY" .Values.configSync.gatewayAdminKeySecret) | trim }}{{ . | nindent 2 }}{{ end }}
  {{- end }}
  {{- with .Values.configSync.extraEnv }}
  {{- toYaml . | nindent 2 }}
  {{- end }}
{{- include "routeiq.storeEnvFrom" . }}
resources:
  {{- toYaml .Values.configSync.resources | nindent 2 }}
volumeMounts:
  - name: config
    mountPath: /app/config
  - name: run
    mountPath: /app/run
    readOnly: true
  - name: tmp
    mountPath: /tmp
  {{- if include "routeiq.bootstrapEnabled" . }}
  - name: bootstrap
    mountPath: /app/bootstrap
    readOnly: true
  {{- end }}
{{- end }}

{{/* Redis env for the gateway and model-sync alike (routeiq_shared.redis_settings reads it), checked here so a
conflicting set of values fails at render with the value's name. */}}
{{- define "routeiq.redisEnv" -}}
{{- $r := .Values.redis }}
{{- if and $r.sentinel.hosts $r.urlSecret.name }}
{{- fail "redis.sentinel.hosts and redis.urlSecret.name are both set: with Sentinel the sentinels say where the master is (leave urlSecret empty)" }}
{{- end }}
{{- if and $r.sentinel.hosts $r.cluster }}
{{- fail "redis.sentinel.hosts and redis.cluster are both set: choose one mode" }}
{{- end }}
{{- if and $r.sentinel.hosts (not $r.sentinel.masterName) }}
{{- fail "redis.sentinel.masterName is required with redis.sentinel.hosts" }}
{{- end }}
{{- if and $r.cluster (not $r.urlSecret.name) }}
{{- fail "redis.cluster needs redis.urlSecret (the URL of any one node)" }}
{{- end }}
{{- if and $r.tls.enabled (not $r.sentinel.hosts) }}
{{- fail "redis.tls.enabled is for Sentinel: with redis.urlSecret, TLS is the URL's rediss:// scheme" }}
{{- end }}
{{- with include "routeiq.secretEnv" (list "REDIS_URL" $r.urlSecret) | trim }}{{ . }}{{ end }}
{{- if $r.cluster }}
- name: REDIS_CLUSTER
  value: "1"
{{- end }}
{{- if $r.username }}
- name: REDIS_USERNAME
  value: {{ $r.username | quote }}
{{- end }}
{{- with include "routeiq.secretEnv" (list "REDIS_PASSWORD" $r.passwordSecret) | trim }}
{{ . }}
{{- end }}
{{- if $r.sentinel.hosts }}
- name: REDIS_SENTINELS
  value: {{ join "," $r.sentinel.hosts | quote }}
- name: REDIS_SENTINEL_MASTER
  value: {{ $r.sentinel.masterName | quote }}
- name: REDIS_DB
  value: {{ $r.sentinel.db | quote }}
{{- if $r.sentinel.username }}
- name: REDIS_SENTINEL_USERNAME
  value: {{ $r.sentinel.username | quote }}
{{- end }}
{{- with include "routeiq.secretEnv" (list "REDIS_SENTINEL_PASSWORD" $r.sentinel.passwordSecret) | trim }}
{{ . }}
{{- end }}
{{- if $r.sentinel.tls }}
- name: REDIS_SENTINEL_TLS
  value: "1"
{{- end }}
{{- if $r.tls.enabled }}
- name: REDIS_TLS
  value: "1"
{{- end }}
{{- end }}
{{- if $r.tls.secretName }}
- name: REDIS_TLS_CA_FILE
  value: /etc/routeiq/redis-tls/ca.crt
{{- if $r.tls.clientCertificate }}
- name: REDIS_TLS_CERT_FILE
  value: /etc/routeiq/redis-tls/tls.crt
- name: REDIS_TLS_KEY_FILE
  value: /etc/routeiq/redis-tls/tls.key
{{- end }}
{{- end }}
{{- end }}

{{- define "routeiq.redisTlsMount" -}}
{{- if .Values.redis.tls.secretName }}
- name: redis-tls
  mountPath: /etc/routeiq/redis-tls
  readOnly: true
{{- end }}
{{- end }}
