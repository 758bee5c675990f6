# Names the services, their tests (deliver/internal/deploycheck) and
# cloudbuild.yaml rely on. Changing one means changing them together.
locals {
  ingest_service  = "segment-ingest"
  deliver_service = "segment-deliver"

  events_topic          = "segment-events"
  dead_letter_topic     = "segment-events-dead"
  deliver_sub           = "segment-events-deliver"
  dead_letter_sub       = "segment-events-dead-inspect"
  accounts_collection   = "accounts"
  deliveries_collection = "deliveries"
  identities_collection = "identities"

  # Seven days: the most a subscription keeps unacked messages. Segment
  # retries a failed call for only 4 hours, so once ingest has answered 200
  # the backlog must outlast any outage of deliver or Startdeliver.
  retention = "604800s"

  project_number = data.google_project.this.number

  # Pub/Sub's own service agent: it forwards to the dead-letter topic and
  # mints the OIDC tokens of push requests.
  pubsub_service_agent = "service-${local.project_number}@gcp-sa-pubsub.iam.gserviceaccount.com"

  # Cloud Run's deterministic URL, known before the service exists, so that
  # deliver's PUSH_AUDIENCE can name deliver itself without a cycle.
  deliver_url   = "https://${local.deliver_service}-${local.project_number}.${var.region}.run.app"
  push_audience = var.push_audience != "" ? var.push_audience : local.deliver_url

  image_base    = "${var.region}-docker.pkg.dev/${var.project_id}/${var.repository}"
  ingest_image  = "${local.image_base}/${local.ingest_service}:${var.image_tag}"
  deliver_image = "${local.image_base}/${local.deliver_service}:${var.image_tag}"
}

data "google_project" "this" {
  project_id = var.project_id
}

resource "google_project_service" "apis" {
  for_each = toset([
    "artifactregistry.googleapis.com",
    "cloudbuild.googleapis.com",
    "cloudkms.googleapis.com",
    "cloudresourcemanager.googleapis.com",
    "cloudtrace.googleapis.com",
    "firestore.googleapis.com",
    "iam.googleapis.com",
    "iamcredentials.googleapis.com",
    "logging.googleapis.com",
    "monitoring.googleapis.com",
    "pubsub.googleapis.com",
    "run.googleapis.com",
    "secretmanager.googleapis.com",
    "serviceusage.googleapis.com",
  ])

  project = var.project_id
  service = each.value

  # Turning an API off would break whatever else in the project uses it.
  disable_on_destroy = false
}

resource "google_artifact_registry_repository" "images" {
  project       = var.project_id
  location      = var.region
  repository_id = var.repository
  format        = "DOCKER"
  description   = "Images of segment-ingest and segment-deliver."

  cleanup_policies {
    id     = "keep-recent"
    action = "KEEP"
    most_recent_versions {
      keep_count = 20
    }
  }

  cleanup_policies {
    id     = "delete-old"
    action = "DELETE"
    condition {
      older_than = "2592000s"
    }
  }

  depends_on = [google_project_service.apis]
}
