# shellcheck shell=bash
# Shared by eks/up and eks/down (sourced, not run). Everything either script needs to find again
# on a later run is looked up in AWS itself: the cluster by name (eksctl), the TURN security group
# through its CloudFormation stack, the ECR repositories by name, the CloudFront distribution by
# its Comment. The only local file is a kubeconfig, rewritten on every run, under
# ~/.cache/otter/eks/<cluster>/ (override with OTTER_EKS_STATE_DIR).

# ---- Defaults (flags and OTTER_EKS_* variables override them) -------------------------------
: "${OTTER_EKS_CLUSTER:=otter}"
: "${OTTER_EKS_VERSION:=1.33}"
: "${OTTER_EKS_NAMESPACE:=otter}"            # namespace of the OtterDeployment
: "${OTTER_EKS_DEPLOYMENT:=otter}"           # name of the OtterDeployment
: "${OTTER_EKS_OPERATOR_NAMESPACE:=otter-system}"
: "${OTTER_EKS_RELEASE:=otter}"              # Helm release of charts/otter
: "${OTTER_EKS_TURN_NODEGROUP:=turn}"        # must match eks/cluster.yaml

# ---- Output ----------------------------------------------------------------------------------
prog=${prog:-eks}
step_no=0
step_total=${step_total:-0}
step() {
  step_no=$((step_no + 1))
  printf '\n[%d/%d] %s\n' "$step_no" "$step_total" "$*"
}
info() { printf '      %s\n' "$*"; }
die() {
  printf '%s: error: %s\n' "$prog" "$*" >&2
  exit 1
}

# need TOOL HOW: stop with a message naming TOOL and how to get it.
missing_tools=()
need() {
  command -v "$1" >/dev/null 2>&1 || missing_tools+=("$1: $2")
}
need_done() {
  [ ${#missing_tools[@]} -eq 0 ] && return 0
  printf '%s: error: missing tools:\n' "$prog" >&2
  local m
  for m in "${missing_tools[@]}"; do printf '  %s\n' "$m" >&2; done
  exit 1
}
# The tools both scripts use, each with where to get it.
need_core() {
  need aws "install the AWS CLI v2: https://docs.aws.amazon.com/cli/latest/userguide/getting-started-install.html"
  need eksctl "install eksctl: https://eksctl.io/installation/"
  need kubectl "install kubectl: https://kubernetes.io/docs/tasks/tools/"
  need jq "apt-get install jq, or https://jqlang.github.io/jq/download/"
}

# ---- AWS -------------------------------------------------------------------------------------
# Sets aws_account. Fails early with a clear message when there are no usable credentials.
check_credentials() {
  local out
  if ! out=$(aws sts get-caller-identity --output json 2>&1); then
    printf '%s: error: no usable AWS credentials (aws sts get-caller-identity failed):\n%s\n' "$prog" "$out" >&2
    printf 'Configure them with "aws configure", "aws sso login" or AWS_PROFILE / AWS_ACCESS_KEY_ID.\n' >&2
    exit 1
  fi
  aws_account=$(printf '%s' "$out" | sed -n 's/.*"Account": *"\([0-9]*\)".*/\1/p' | head -n1)
  [ -n "$aws_account" ] || die "could not read the account id from: $out"
  local arn
  arn=$(printf '%s' "$out" | sed -n 's/.*"Arn": *"\([^"]*\)".*/\1/p' | head -n1)
  info "account $aws_account ($arn)"
}

resolve_region() {
  if [ -z "${OTTER_EKS_REGION:-}" ]; then
    OTTER_EKS_REGION=${AWS_REGION:-${AWS_DEFAULT_REGION:-}}
  fi
  if [ -z "$OTTER_EKS_REGION" ]; then
    OTTER_EKS_REGION=$(aws configure get region 2>/dev/null || true)
  fi
  [ -n "$OTTER_EKS_REGION" ] || die "no AWS region: pass --region, or set AWS_REGION"
  export AWS_REGION=$OTTER_EKS_REGION AWS_DEFAULT_REGION=$OTTER_EKS_REGION
}

state_dir() {
  printf '%s' "${OTTER_EKS_STATE_DIR:-$HOME/.cache/otter/eks/$OTTER_EKS_CLUSTER}"
}

# Prints the cluster's status (ACTIVE, CREATING, ...) or nothing when there is no such cluster.
# Any other failure (network, permissions) stops the script: guessing "absent" would make up
# try to create a cluster that exists.
cluster_status() {
  local out
  if out=$(eksctl get cluster --name "$OTTER_EKS_CLUSTER" --region "$OTTER_EKS_REGION" -o json 2>&1); then
    printf '%s' "$out" | jq -r '(if type == "array" then .[0] else . end) | .Status // .status // "ACTIVE"'
  elif ! grep -qiE 'ResourceNotFoundException|No cluster found|not found' <<<"$out"; then
    die "eksctl get cluster --name $OTTER_EKS_CLUSTER failed: $out"
  fi
}

# Prints the status of eksctl's CloudFormation stack for the cluster (CREATE_COMPLETE,
# ROLLBACK_COMPLETE, ...), or nothing when there is none.
cluster_stack_status() {
  local out
  if out=$(aws cloudformation describe-stacks --stack-name "eksctl-$OTTER_EKS_CLUSTER-cluster" \
      --query 'Stacks[0].StackStatus' --output text 2>&1); then
    printf '%s' "$out"
  elif ! grep -q 'does not exist' <<<"$out"; then
    die "aws cloudformation describe-stacks failed: $out"
  fi
}

# Writes the kubeconfig for the cluster into the state directory and exports KUBECONFIG.
use_kubeconfig() {
  local dir
  dir=$(state_dir)
  mkdir -p "$dir"
  export KUBECONFIG="$dir/kubeconfig"
  eksctl utils write-kubeconfig --cluster "$OTTER_EKS_CLUSTER" --region "$OTTER_EKS_REGION" \
    --kubeconfig "$KUBECONFIG" >/dev/null
  info "kubeconfig: $KUBECONFIG"
}

# The Comment that marks the CloudFront distribution eks/up made for this OtterDeployment.
cloudfront_comment() {
  printf 'otter-eks:%s:%s:%s/%s' "$OTTER_EKS_CLUSTER" "$OTTER_EKS_REGION" "$OTTER_EKS_NAMESPACE" "$OTTER_EKS_DEPLOYMENT"
}

# Prints "ID DOMAIN ENABLED STATUS" of our distribution, or nothing.
cloudfront_find() {
  aws cloudfront list-distributions --output json |
    jq -r --arg c "$(cloudfront_comment)" \
      '.DistributionList.Items // [] | map(select(.Comment == $c)) | .[0] // empty
       | "\(.Id) \(.DomainName) \(.Enabled) \(.Status)"'
}
