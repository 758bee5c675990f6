// Package deploycheck holds tests that check infra/ (Terraform),
// cloudbuild.yaml and the Dockerfile declare what the services need: the
// Pub/Sub topics and subscriptions with their dead-letter, retry and push
// settings, the Firestore TTL policies, least-privilege IAM per service
// account, the Cloud Run services and their environment, and images that
// Cloud Build builds, pushes and deploys under the names Terraform uses. It
// also checks that each service module builds alone (GOWORK=off), as a
// container build does, and that every repository file, directory and
// Markdown anchor named in code and docs exists, with no citation of a
// document outside the repository (docs/api.md is the reference).
//
// Nothing here reaches Google Cloud: the Terraform is parsed with HCL and
// evaluated symbolically, with variable defaults and placeholders such as
// "{google_service_account.ingest.email}" for values only known after apply.
package deploycheck
