// Argo CD's Lua health runner for tests/argocd: built through the Go module proxy into the
// control plane's binary cache (otp_sandbox.controlplane.build_go_binary), like kstatus.
module otp-relay-operator/tests/gitops/argocd

go 1.26.0

require github.com/yuin/gopher-lua v1.1.2
