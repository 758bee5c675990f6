#!/usr/bin/env bash
# Offline checks of the deployment files, for `make lint`.
#
#   terraform fmt -check     always (needs only the terraform binary)
#   terraform validate       against the google provider's real schema, with
#                            the first provider found of:
#                            - infra/.terraform (after `terraform init`);
#                            - the registry, when INFRA_VALIDATE=1 allows
#                              `terraform init` to download it (Cloud Build);
#                            - the bundled build for machines that cannot
#                              reach the registry:
#                              ../shared/tools/terraform-provider-google/validate.sh
#                              beside the repository (TERRAFORM_VALIDATE_TOOL
#                              names another copy).
#                            With none of them the script says "skipped: no
#                            provider" and passes.
#   bash -n / shellcheck     on the scripts in infra/
#
# The structural checks (names, IAM, dead-letter policy, cloudbuild.yaml) are
# Go tests: go test ./internal/deploycheck in deliver/.
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
infra="$root/infra"
tool="${TERRAFORM_VALIDATE_TOOL:-$(dirname "$root")/shared/tools/terraform-provider-google/validate.sh}"

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
elif [[ -x "$tool" ]]; then
  # The bundled provider runs as a development override, which makes
  # terraform warn about exactly that; the rest of its output is kept.
  if out=$("$tool" "$infra" 2>&1); then
    echo "infra: terraform validate ok (bundled provider, $tool)"
  else
    echo "$out" >&2
    echo "infra: terraform validate failed" >&2
    status=1
  fi
else
  echo "infra: terraform validate skipped: no provider (run terraform -chdir=infra init, INFRA_VALIDATE=1 to let this script download it, or put the bundled provider at $tool)"
fi

exit "$status"
