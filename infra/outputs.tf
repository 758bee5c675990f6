output "ingest_url" {
  description = "Paste into Segment: the destination's endpoint (Startdeliver destination settings, or an HTTP API source's endpoint)."
  value       = google_cloud_run_v2_service.ingest.uri
}

output "deliver_url" {
  description = "deliver's URL; Pub/Sub pushes to <this>/pubsub/push. Not public."
  value       = local.deliver_url
}

output "push_audience" {
  description = "Audience of the push OIDC tokens (deliver's PUSH_AUDIENCE)."
  value       = local.push_audience
}

output "image_repository" {
  description = "Artifact Registry path the images are pushed to."
  value       = local.image_base
}

output "ingest_service_account" {
  description = "Identity of segment-ingest."
  value       = google_service_account.ingest.email
}

output "deliver_service_account" {
  description = "Identity of segment-deliver."
  value       = google_service_account.deliver.email
}

output "push_service_account" {
  description = "Identity in Pub/Sub's push tokens; the only invoker of segment-deliver."
  value       = google_service_account.push.email
}

output "deployer_service_account" {
  description = "Service account cloudbuild.yaml runs as (gcloud builds submit --service-account)."
  value       = google_service_account.deployer.id
}
