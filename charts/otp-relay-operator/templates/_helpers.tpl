{{/* Chart name, truncated to the 63 characters a label value allows. */}}
{{- define "otp-relay-operator.name" -}}
{{- .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}

{{/* Full name of the release's objects: the release name when it already contains the chart name. */}}
{{- define "otp-relay-operator.fullname" -}}
{{- if contains .Chart.Name .Release.Name -}}
{{- .Release.Name | trunc 63 | trimSuffix "-" -}}
{{- else -}}
{{- printf "%s-%s" .Release.Name .Chart.Name | trunc 63 | trimSuffix "-" -}}
{{- end -}}
{{- end -}}

{{- define "otp-relay-operator.selectorLabels" -}}
app.kubernetes.io/name: {{ include "otp-relay-operator.name" . }}
app.kubernetes.io/instance: {{ .Release.Name }}
{{- end -}}

{{- define "otp-relay-operator.labels" -}}
{{ include "otp-relay-operator.selectorLabels" . }}
app.kubernetes.io/component: operator
app.kubernetes.io/version: {{ .Chart.AppVersion | quote }}
app.kubernetes.io/managed-by: {{ .Release.Service }}
helm.sh/chart: {{ printf "%s-%s" .Chart.Name .Chart.Version | replace "+" "_" }}
{{- end -}}

{{- define "otp-relay-operator.serviceAccountName" -}}
{{- if .Values.serviceAccount.create -}}
{{- default (include "otp-relay-operator.fullname" .) .Values.serviceAccount.name -}}
{{- else -}}
{{- default "default" .Values.serviceAccount.name -}}
{{- end -}}
{{- end -}}

{{- define "otp-relay-operator.image" -}}
{{- $tag := default .Chart.AppVersion .Values.image.tag -}}
{{- if hasPrefix "@" $tag -}}
{{- printf "%s%s" .Values.image.repository $tag -}}
{{- else -}}
{{- printf "%s:%s" .Values.image.repository $tag -}}
{{- end -}}
{{- end -}}

{{- define "otp-relay-operator.relayImage" -}}
{{- default (include "otp-relay-operator.image" .) .Values.relayImage -}}
{{- end -}}

{{/* The shared kopf peering object's name: the release's full name unless set. */}}
{{- define "otp-relay-operator.peeringName" -}}
{{- default (include "otp-relay-operator.fullname" .) .Values.peering.name -}}
{{- end -}}

{{/* "true" when the replicas share the work through kopf peering. */}}
{{- define "otp-relay-operator.peering" -}}
{{- if gt (int .Values.replicas) 1 -}}true{{- end -}}
{{- end -}}

{{/*
The rules on the namespaced resources the operator touches: the same list goes into the
ClusterRole (all namespaces) or into each watched namespace's Role. Every verb here is used by the
operator; tests/chart/test_rbac.py keeps the allow-list and proves the operator works with it.
*/}}
{{- define "otp-relay-operator.channelRules" -}}
# kopf lists and watches the channels and patches them (finalizer, progress annotations).
- apiGroups: ["otprelay.io"]
  resources: ["otpchannels"]
  verbs: ["list", "watch", "patch"]
# Conditions, observedGeneration, relay and auth0 status.
- apiGroups: ["otprelay.io"]
  resources: ["otpchannels/status"]
  verbs: ["patch"]
# Children carry ownerReferences with blockOwnerDeletion to their channel: clusters with the
# OwnerReferencesPermissionEnforcement admission plugin require update on the owner's finalizers.
- apiGroups: ["otprelay.io"]
  resources: ["otpchannels/finalizers"]
  verbs: ["update"]
# Secrets, each verb for one reason (README "Security"):
# - get: a Secret a channel names (8x8 key, Auth0 credentials), by name, and the relay's own ones;
#   a missing one is looked for again by GET until it exists. Of a state store's password Secret
#   only the metadata (PartialObjectMetadata), for its otprelay.io/state-store-password opt-in.
# - list, watch: only with the label selector "otprelay.io/secret in (referenced,relay)": the
#   Secrets channels reference (labelled by the operator) and the relay Secrets it created, so a
#   rotation re-reconciles at once. RBAC cannot restrict list/watch to a selector; the operator
#   never asks for more (tests/chart/test_rbac_operator.py checks the API server's audit log).
#   For a hard boundary, set watchNamespaces: a Role in those namespaces only.
# - create: the relay's signing-key and receipt-token Secrets (server-side apply).
# - patch: updating those; the otprelay.io/secret label on referenced Secrets (added, and removed
#   when no channel references them); the in-use finalizer on the Auth0 credentials Secret.
# Never update, delete or deletecollection: the operator does not remove anyone's Secret.
- apiGroups: [""]
  resources: ["secrets"]
  verbs: ["get", "list", "watch", "create", "patch"]
# The relay's Deployment (read for availability) and Service: server-side apply, watched for drift.
# Deleted (orphaning its pods) only to re-create one whose immutable selector changed.
- apiGroups: ["apps"]
  resources: ["deployments"]
  verbs: ["get", "list", "watch", "create", "patch", "delete"]
- apiGroups: [""]
  resources: ["services"]
  verbs: ["list", "watch", "create", "patch"]
# Ingress and PodDisruptionBudget come and go with spec.relay.ingress and replicas > 1.
- apiGroups: ["networking.k8s.io"]
  resources: ["ingresses"]
  verbs: ["list", "watch", "create", "patch", "delete"]
- apiGroups: ["policy"]
  resources: ["poddisruptionbudgets"]
  verbs: ["list", "watch", "create", "patch", "delete"]
# Each relay's NetworkPolicy: server-side applied, watched for drift.
- apiGroups: ["networking.k8s.io"]
  resources: ["networkpolicies"]
  verbs: ["list", "watch", "create", "patch"]
# Events for every create, change, repair, rotation and failure.
- apiGroups: [""]
  resources: ["events"]
  verbs: ["create"]
{{- end -}}

{{/* kopf peering: list/watch the peering resource (to see the peers), patch only the shared object
(to announce itself: kopf never GETs it). */}}
{{- define "otp-relay-operator.peeringRules" -}}
{{- $resource := index . 0 -}}
{{- $name := index . 1 -}}
- apiGroups: ["kopf.dev"]
  resources: [{{ $resource | quote }}]
  verbs: ["list", "watch"]
- apiGroups: ["kopf.dev"]
  resources: [{{ $resource | quote }}]
  resourceNames: [{{ $name | quote }}]
  verbs: ["patch"]
{{- end -}}

{{/*
ipBlock peers for every address outside clusterNetwork.cidrs, one per IP family (an except must
lie inside its cidr); the operator renders the same for the relays (otp_operator/egress.py).
*/}}
{{- define "otp-relay-operator.outsideCluster" -}}
{{- $v4 := list -}}
{{- $v6 := list -}}
{{- range .Values.clusterNetwork.cidrs -}}
{{- if contains ":" . -}}{{- $v6 = append $v6 . -}}{{- else -}}{{- $v4 = append $v4 . -}}{{- end -}}
{{- end -}}
- ipBlock:
    cidr: 0.0.0.0/0
    {{- with $v4 }}
    except: {{ toJson . }}
    {{- end }}
- ipBlock:
    cidr: ::/0
    {{- with $v6 }}
    except: {{ toJson . }}
    {{- end }}
{{- end }}
