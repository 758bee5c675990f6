#!/usr/bin/env bash
# Deploys the Startdeliver destination to Google Cloud, from a clean project or
# over an existing deployment (`make deploy`). Idempotent: run it again to
# ship the current commit. Steps (infra/README.md explains each):
#
#   1. enable the APIs Terraform itself needs; make sure Pub/Sub's service
#      agent exists (it mints push tokens and dead-letters)
#   2. terraform apply, targeted: the other APIs, the image repository and the
#      Cloud Build deployer identity
#   3. on an existing deployment: the full terraform apply first, so new
#      infrastructure is in place before new code
#   4. Cloud Build (cloudbuild.yaml) as segment-deployer: test, build and push
#      both images tagged with the commit, deploy them (new revision without
#      traffic, then all traffic)
#   5. on a first deployment: the full terraform apply, which creates both
#      services from the images of step 4
#
# Settings (environment):
#   PROJECT_ID   Google Cloud project (default: gcloud config get-value project)
#   REGION       default europe-west1
#   REPOSITORY   Artifact Registry repository, default segment-destination
#   ALLOW_DIRTY  1 to deploy a working tree with uncommitted changes (its tag
#                gets a -dirty suffix)
#   TF_VARS      extra terraform arguments, e.g. "-var=alert_email=a@b.c"
#                (infra/terraform.tfvars is read as usual)
set -euo pipefail

root="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
cd "$root"

die() { echo "deploy: $*" >&2; exit 1; }
step() { echo; echo "==> $*"; }

for tool in gcloud terraform git; do
  command -v "$tool" >/dev/null 2>&1 || die "$tool is not installed (see infra/README.md, Prerequisites)"
done

PROJECT_ID="${PROJECT_ID:-$(gcloud config get-value project 2>/dev/null || true)}"
[[ -n "$PROJECT_ID" ]] || die "set PROJECT_ID or run: gcloud config set project PROJECT_ID"
REGION="${REGION:-europe-west1}"
REPOSITORY="${REPOSITORY:-segment-destination}"

commit="$(git rev-parse HEAD)"
short="$(git rev-parse --short=7 HEAD)"
if [[ -n "$(git status --porcelain)" ]]; then
  [[ "${ALLOW_DIRTY:-}" == "1" ]] || die "uncommitted changes: commit them, or set ALLOW_DIRTY=1"
  short="${short}-dirty"
  commit="${commit}-dirty"
fi

# The image tag, Cloud Run revision tag (c-<tag>) and Terraform's image_tag.
tag="$short"

read -r -a extra_vars <<<"${TF_VARS:-}"
tf_vars=(
  "-var=project_id=${PROJECT_ID}"
  "-var=region=${REGION}"
  "-var=repository=${REPOSITORY}"
  "-var=image_tag=${tag}"
  "${extra_vars[@]}"
)
tf() { terraform -chdir="$root/infra" "$@"; }

echo "deploy: project ${PROJECT_ID}, region ${REGION}, images tagged ${tag}"

step "1. APIs for Terraform, Pub/Sub service agent"
gcloud services enable --project="$PROJECT_ID" \
  serviceusage.googleapis.com cloudresourcemanager.googleapis.com pubsub.googleapis.com
gcloud beta services identity create --project="$PROJECT_ID" --service=pubsub.googleapis.com >/dev/null

step "2. terraform: APIs, image repository, deployer identity"
tf init -input=false
tf apply -input=false -auto-approve "${tf_vars[@]}" \
  -target=google_project_service.apis \
  -target=google_artifact_registry_repository_iam_member.deployer_writer \
  -target=google_project_iam_member.deployer_project \
  -target=google_kms_crypto_key_iam_member.deliver_decrypter \
  -target=google_kms_crypto_key_iam_member.deliver_encrypter \
  -target=google_secret_manager_secret_iam_member.deliver_keyset_accessor

# Both services refuse to start without the API key keyset, which is made
# by deliver/cmd/keys, not by Terraform (infra/README.md#api-key-keyset).
public_keyset="$root/infra/api-key-public-keyset.json"
if [[ -z "$(gcloud secrets versions list segment-deliver-api-key-keyset --project="$PROJECT_ID" --filter=state=ENABLED --format='value(name)' --limit=1)" ]] ||
  [[ -z "${TF_VAR_api_key_public_keyset:-}" && ! -s "$public_keyset" ]]; then
  die "no API key keyset yet: create it as infra/README.md#create-the-first-keyset says, then run this again"
fi
if [[ -z "${TF_VAR_api_key_public_keyset:-}" ]]; then
  TF_VAR_api_key_public_keyset="$(cat "$public_keyset")"
  export TF_VAR_api_key_public_keyset
fi

services_exist() {
  [[ -n "$(gcloud run services list --project="$PROJECT_ID" --region="$REGION" \
    --filter='metadata.name=segment-ingest OR metadata.name=segment-deliver' \
    --format='value(metadata.name)')" ]]
}

first=true
if services_exist; then
  first=false
  step "3. terraform: everything (existing deployment)"
  tf apply -input=false -auto-approve "${tf_vars[@]}"
fi

# The deployer service account runs the build (least privilege); the user
# needs iam.serviceAccounts.actAs on it, which project owners have.
deployer="projects/${PROJECT_ID}/serviceAccounts/segment-deployer@${PROJECT_ID}.iam.gserviceaccount.com"
step "4. Cloud Build: test, build, push, deploy ${tag}"
gcloud builds submit "$root" \
  --project="$PROJECT_ID" \
  --region="$REGION" \
  --config="$root/cloudbuild.yaml" \
  --service-account="$deployer" \
  --substitutions="_REGION=${REGION},_REPOSITORY=${REPOSITORY},COMMIT_SHA=${commit},SHORT_SHA=${short}"

if [[ "$first" == true ]]; then
  step "5. terraform: everything (first deployment creates the services)"
  tf apply -input=false -auto-approve "${tf_vars[@]}"
fi

ingest_url="$(tf output -raw ingest_url)"
cat <<MSG

Deployed ${tag}.
  ingest URL (Segment's endpoint): ${ingest_url}
  check it:  curl -sS ${ingest_url}/healthz
Next, when not done yet (infra/README.md): register an account, then point
Segment at ${ingest_url}.
MSG
