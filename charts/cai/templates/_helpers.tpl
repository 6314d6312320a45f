{{/* Chart name, truncated to the 63 characters Kubernetes allows. */}}
{{- define "cai.name" -}}
{{- default .Chart.Name .Values.nameOverride | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name: release-chart unless the release name already holds the chart name. */}}
{{- define "cai.fullname" -}}
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

{{- define "cai.labels" -}}
app: cai
app.kubernetes.io/name: {{ include "cai.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "cai.serviceAccountName" -}}
{{- default (include "cai.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "cai.kfpNamespace" -}}
{{- default .Release.Namespace .Values.kfp.namespace -}}
{{- end -}}

{{- define "cai.image" -}}
{{- printf "%s/%s:%s" .Values.image.registry .Values.image.repository (default .Chart.AppVersion .Values.image.tag) -}}
{{- end -}}

{{/* The run config the ConfigMap holds: runConfig plus what the chart knows. */}}
{{- define "cai.runConfig" -}}
{{- $cfg := deepCopy (default (dict) .Values.runConfig) -}}
{{- $cluster := deepCopy (default (dict) (get $cfg "cluster")) -}}
{{- $secrets := dict "openai_api_key" .Values.secrets.openaiApiKey "aws_access_key_id" .Values.secrets.awsAccessKeyId "aws_secret_access_key" .Values.secrets.awsSecretAccessKey "hf_token" .Values.secrets.hfToken -}}
{{- $_ := set $cluster "secrets" $secrets -}}
{{- $_ := set $cluster "namespace" (include "cai.kfpNamespace" .) -}}
{{- $_ := set $cluster "experiment" .Values.kfp.experiment -}}
{{- $_ := set $cluster "config_map" (include "cai.fullname" .) -}}
{{- $_ := set $cluster "config_map_mount" "/etc/cai" -}}
{{- $_ := set $cfg "cluster" $cluster -}}
{{- if .Values.constitution -}}
{{- $revise := deepCopy (default (dict) (get $cfg "revise")) -}}
{{- $_ := set $revise "constitution" "/etc/cai/constitution.yaml" -}}
{{- $_ := set $cfg "revise" $revise -}}
{{- $judge := deepCopy (default (dict) (get $cfg "judge")) -}}
{{- $_ := set $judge "constitution" "/etc/cai/constitution.yaml" -}}
{{- $_ := set $cfg "judge" $judge -}}
{{- end -}}
{{- toYaml $cfg -}}
{{- end -}}

{{/* sha256 of everything a run depends on from this chart: config and constitution. */}}
{{- define "cai.checksum" -}}
{{- printf "%s\n---\n%s" (include "cai.runConfig" .) .Values.constitution | sha256sum -}}
{{- end -}}

{{/* The cai run id of the submit Job: one per config (a label value: <= 63). */}}
{{- define "cai.runId" -}}
{{- printf "%s-%s" (include "cai.fullname" . | trunc 45 | trimSuffix "-") (include "cai.checksum" . | trunc 12) -}}
{{- end -}}

{{/* The pod spec shared by the submit Job and the CronJob; .runId "" = a new id per run. */}}
{{- define "cai.submitPod" -}}
{{- $root := .root -}}
serviceAccountName: {{ include "cai.serviceAccountName" $root }}
restartPolicy: Never
{{- with $root.Values.priorityClassName }}
priorityClassName: {{ . }}
{{- end }}
{{- with $root.Values.imagePullSecrets }}
imagePullSecrets:
{{- range . }}
  - name: {{ . }}
{{- end }}
{{- end }}
securityContext:
  {{- toYaml $root.Values.podSecurityContext | nindent 2 }}
{{- with $root.Values.nodeSelector }}
nodeSelector:
  {{- toYaml . | nindent 2 }}
{{- end }}
{{- with $root.Values.tolerations }}
tolerations:
  {{- toYaml . | nindent 2 }}
{{- end }}
containers:
  - name: submit
    image: {{ include "cai.image" $root }}
    imagePullPolicy: {{ $root.Values.image.pullPolicy }}
    args:
      - submit
      - --config
      - /etc/cai/config.yaml
      - --host
      - {{ $root.Values.kfp.host | quote }}
      - --namespace
      - {{ include "cai.kfpNamespace" $root }}
      - --experiment
      - {{ $root.Values.kfp.experiment | quote }}
      {{- if .runId }}
      - --run-id
      - {{ .runId }}
      - --run-name
      - {{ .runId }}
      - --skip-existing
      {{- end }}
      {{- if not $root.Values.submit.checkSecrets }}
      - --no-check-secrets
      {{- end }}
      {{- range $root.Values.submit.extraArgs }}
      - {{ . | quote }}
      {{- end }}
    env:
      - name: HOME
        value: /tmp
      {{- if $root.Values.kfp.tokenSecret.name }}
      - name: KF_PIPELINES_TOKEN
        valueFrom:
          secretKeyRef:
            name: {{ $root.Values.kfp.tokenSecret.name }}
            key: {{ $root.Values.kfp.tokenSecret.key }}
      {{- end }}
    securityContext:
      {{- toYaml $root.Values.securityContext | nindent 6 }}
    resources:
      {{- toYaml $root.Values.submit.resources | nindent 6 }}
    volumeMounts:
      - name: config
        mountPath: /etc/cai
        readOnly: true
      - name: tmp
        mountPath: /tmp
      {{- if not $root.Values.kfp.tokenSecret.name }}
      - name: kfp-token
        mountPath: /var/run/secrets/kubeflow/pipelines
        readOnly: true
      {{- end }}
volumes:
  - name: config
    configMap:
      name: {{ include "cai.fullname" $root }}
  - name: tmp
    emptyDir: {}
  {{- if not $root.Values.kfp.tokenSecret.name }}
  - name: kfp-token
    projected:
      sources:
        - serviceAccountToken:
            path: token
            expirationSeconds: 7200
            audience: {{ $root.Values.kfp.projectedTokenAudience }}
  {{- end }}
{{- end -}}
