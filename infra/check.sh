#!/usr/bin/env bash
# Offline checks of the deployment files, for `make lint`.
#
#   terraform fmt -check     always (needs only the terraform binary)
#   terraform validate       only when the google provider is already installed
#                            in infra/.terraform (after `terraform init`), or
#                            when INFRA_VALIDATE=1 allows `terraform init` to
#                            download it (Cloud Build does so). Otherwise the
#                            script says "skipped: no provider" and passes.
#   bash -n / shellcheck     on the scripts in infra/
#
# The structural checks (names, IAM, dead-letter policy, cloudbuild.yaml) are
# Go tests: go test ./internal/deploycheck in deliver/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
infra="$root/infra"

# An absent CLI config file only makes terraform warn.
if [[ -n "${TF_CLI_CONFIG_FILE:-}" && ! -e "$TF_CLI_CONFIG_FILE" ]]; then
  unset TF_CLI_CONFIG_FILE
fi

status=0

for script in "$infra"/*.sh; do
  bash -n "$script" || status=1
done
if command -v shellcheck >/dev/null 2>&1; then
  shellcheck "$infra"/*.sh || status=1
else
  echo "infra: shellcheck skipped: not installed"
fi

if ! command -v terraform >/dev/null 2>&1; then
  echo "infra: terraform fmt/validate skipped: no terraform CLI (install Terraform >= 1.5 or OpenTofu)"
  exit "$status"
fi

if terraform fmt -check -recursive -diff "$infra"; then
  echo "infra: terraform fmt ok"
else
  echo "infra: terraform fmt found unformatted files: run terraform fmt -recursive infra" >&2
  status=1
fi

provider_dir="$infra/.terraform/providers/registry.terraform.io/hashicorp/google"
if [[ -d "$provider_dir" ]]; then
  terraform -chdir="$infra" validate || status=1
elif [[ "${INFRA_VALIDATE:-}" == "1" ]]; then
  terraform -chdir="$infra" init -backend=false -input=false >/dev/null || status=1
  terraform -chdir="$infra" validate || status=1
else
  echo "infra: terraform validate skipped: no provider (run terraform -chdir=infra init, or INFRA_VALIDATE=1 to let this script download it)"
fi

exit "$status"
