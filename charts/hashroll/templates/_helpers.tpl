{{- define "hashroll.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}{{ .Release.Name | trunc 63 | trimSuffix "-" }}{{- else -}}{{ printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" }}{{- end -}}
{{- end -}}

{{- define "hashroll.serviceAccountName" -}}
{{- default (include "hashroll.fullname" .) .Values.serviceAccount.name -}}
{{- end -}}

{{- define "hashroll.labels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version }}
{{- end -}}

{{- define "hashroll.selectorLabels" -}}
app.kubernetes.io/name: {{ .Chart.Name }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{/* Replicas: the value, else 2 with leader election (a standby), else 1. */}}
{{- define "hashroll.replicas" -}}
{{- if kindIs "invalid" .Values.replicaCount -}}{{ ternary 2 1 .Values.leaderElection.enabled }}{{- else -}}{{ .Values.replicaCount }}{{- end -}}
{{- end -}}

{{- define "hashroll.image" -}}
{{- if .Values.image.digest -}}
{{ .Values.image.repository }}@{{ .Values.image.digest }}
{{- else -}}
{{ .Values.image.repository }}:{{ .Values.image.tag | default .Chart.AppVersion }}
{{- end -}}
{{- end -}}

{{/* Where the key Secret lives (--controller-namespace). */}}
{{- define "hashroll.controllerNamespace" -}}
{{- .Values.controllerNamespace | default .Release.Namespace -}}
{{- end -}}

{{- define "hashroll.leaseName" -}}
{{- .Values.leaderElection.leaseName | default (include "hashroll.fullname" .) -}}
{{- end -}}

{{- define "hashroll.leaseNamespace" -}}
{{- .Values.leaderElection.namespace | default .Release.Namespace -}}
{{- end -}}

{{/* The series of this release, as both monitors label them (job set to the full name). */}}
{{- define "hashroll.seriesSelector" -}}
job="{{ include "hashroll.fullname" . }}", namespace="{{ .Release.Namespace }}"
{{- end -}}

{{/* A memory quantity (128Mi, 1Gi, 500M, 1048576) in bytes; fails naming the value otherwise. */}}
{{- define "hashroll.bytes" -}}
{{- $q := toString . -}}
{{- $n := regexFind `^[0-9]+([.][0-9]+)?` $q -}}
{{- $unit := trimPrefix $n $q -}}
{{- $factors := dict "" 1 "k" 1000 "M" 1000000 "G" 1000000000 "T" 1000000000000 "Ki" 1024 "Mi" 1048576 "Gi" 1073741824 "Ti" 1099511627776 -}}
{{- if or (not $n) (not (hasKey $factors $unit)) -}}
{{- fail (printf "resources.limits.memory: %q is not a memory quantity hashroll's alert can read (e.g. 128Mi, 1Gi)" $q) -}}
{{- end -}}
{{- printf "%.0f" (mulf (float64 $n) (get $factors $unit)) -}}
{{- end -}}

{{/* A duration of whole seconds, minutes or hours (90s, 30m, 6h) in seconds. */}}
{{- define "hashroll.seconds" -}}
{{- $n := regexFind "^[0-9]+" . -}}
{{- $factors := dict "s" 1 "m" 60 "h" 3600 -}}
{{- $unit := trimPrefix $n . -}}
{{- if or (not $n) (not (hasKey $factors $unit)) -}}
{{- fail (printf "%q is not a duration in s, m or h" .) -}}
{{- end -}}
{{- mul (int $n) (get $factors $unit) -}}
{{- end -}}

{{/* The rules hashroll needs wherever it acts: read the sources it watches, read and patch the workload
     kinds it rolls, write Events. Nothing for a kind or source left out. */}}
{{- define "hashroll.rules" -}}
{{- $core := without .Values.watch "secretproviderclasses" }}
{{- with $core }}
- apiGroups: [""]
  resources: [{{ join ", " . }}]
  verbs: [list, watch]
{{- end }}
{{- if has "secretproviderclasses" .Values.watch }}
- apiGroups: [secrets-store.csi.x-k8s.io]
  resources: [secretproviderclasses, secretproviderclasspodstatuses]
  verbs: [list, watch]
{{- end }}
{{- $groups := dict "deployments" "apps" "statefulsets" "apps" "daemonsets" "apps" "cronjobs" "batch" "rollouts" "argoproj.io" -}}
{{- range $group := list "apps" "batch" "argoproj.io" }}
{{- $kinds := list -}}
{{- range $.Values.workloadKinds }}{{ if eq (get $groups .) $group }}{{ $kinds = append $kinds . }}{{ end }}{{ end -}}
{{- if $kinds }}
- apiGroups: [{{ $group }}]
  resources: [{{ join ", " $kinds }}]
  verbs: [list, watch, patch]
{{- end }}
{{- end }}
- apiGroups: [events.k8s.io]
  resources: [events]
  verbs: [create]
{{- end -}}
