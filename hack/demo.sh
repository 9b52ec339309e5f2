#!/usr/bin/env bash
# Cluster quickstart on this machine: a real control plane on loopback, Loraplane installed with
# `kubectl apply -k manifests/`, the operator running, the sample FineTuneJobs and ModelServer applied
# and accepted, one malformed manifest refused. The control plane is left running for you to explore.
set -euo pipefail
ROOT="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$ROOT"
CACHE="${LORAPLANE_CACHE:-$HOME/.cache/loraplane}"
say() { printf '\n\033[1m==> %s\033[0m\n' "$*"; }

say "Starting the control plane (kube-apiserver, etcd, controller-manager, scheduler, KWOK nodes)"
KUBECONFIG="$(hack/cluster.sh up | tail -n 1)"
export KUBECONFIG
eval "$(hack/cluster.sh env)"
kubectl get nodes -o wide

say "Installing Loraplane: kubectl apply -k manifests/"
kubectl apply -k manifests/
kubectl wait --for=condition=Established --timeout=60s crd/finetunejobs.loraplane.io crd/modelservers.loraplane.io

say "Running the operator (log: $CACHE/demo-operator.log)"
.venv/bin/python -m loraplane.operator >"$CACHE/demo-operator.log" 2>&1 &
OP=$!
trap 'kill $OP 2>/dev/null || true' EXIT

say "Applying the samples in examples/"
kubectl create namespace demo --dry-run=client -o yaml | kubectl apply -f -
kubectl apply -n demo -f examples/
kubectl wait -n demo --for=condition=Accepted --timeout=90s ftj --all
kubectl wait -n demo --for=condition=Accepted --timeout=90s ms --all
kubectl get -n demo loraplane

say "A malformed FineTuneJob is refused with the field named"
sed 's/r: 8$/r: 0/; s/name: medical-qwen7b-v1/name: medical-bad-rank/' examples/finetunejob-medical.yaml | kubectl apply -n demo -f - || true

say "Done. The control plane keeps running:"
echo "  eval \"\$(hack/cluster.sh env)\"; kubectl get -n demo ftj,ms; kubectl explain ftj.spec.lora"
echo "  make cluster-down    # stop it"
