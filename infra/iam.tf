# One identity per role, each with only what it needs.

resource "google_service_account" "ingest" {
  project      = var.project_id
  account_id   = "segment-ingest"
  display_name = "segment-ingest (Cloud Run)"
  description  = "Runs ingest: reads accounts, publishes events."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "deliver" {
  project      = var.project_id
  account_id   = "segment-deliver"
  display_name = "segment-deliver (Cloud Run)"
  description  = "Runs deliver: reads accounts, writes deliveries and identities, dead-letters."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "push" {
  project      = var.project_id
  account_id   = "segment-push"
  display_name = "segment-push (Pub/Sub push identity)"
  description  = "Identity in the OIDC token of Pub/Sub push requests; the only invoker of deliver."

  depends_on = [google_project_service.apis]
}

resource "google_service_account" "deployer" {
  project      = var.project_id
  account_id   = "segment-deployer"
  display_name = "segment-deployer (Cloud Build)"
  description  = "Runs cloudbuild.yaml: pushes images, deploys new revisions."

  depends_on = [google_project_service.apis]
}

# --- ingest ------------------------------------------------------------------

resource "google_pubsub_topic_iam_member" "ingest_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.ingest.email}"
}

# Also lets readyz check that the topic exists.
resource "google_pubsub_topic_iam_member" "ingest_viewer" {
  project = var.project_id
  topic   = google_pubsub_topic.events.name
  role    = "roles/pubsub.viewer"
  member  = "serviceAccount:${google_service_account.ingest.email}"
}

# Firestore roles exist only at project level. viewer reads accounts and
# cannot write anything.
resource "google_project_iam_member" "ingest_datastore_viewer" {
  project = var.project_id
  role    = "roles/datastore.viewer"
  member  = "serviceAccount:${google_service_account.ingest.email}"
}

# --- deliver -----------------------------------------------------------------

resource "google_project_iam_member" "deliver_datastore_user" {
  project = var.project_id
  role    = "roles/datastore.user"
  member  = "serviceAccount:${google_service_account.deliver.email}"
}

resource "google_pubsub_topic_iam_member" "deliver_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${google_service_account.deliver.email}"
}

# Pull mode receives with it; push mode uses it only for readyz.
resource "google_pubsub_subscription_iam_member" "deliver_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.deliver.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${google_service_account.deliver.email}"
}

resource "google_pubsub_subscription_iam_member" "deliver_viewer" {
  project      = var.project_id
  subscription = google_pubsub_subscription.deliver.name
  role         = "roles/pubsub.viewer"
  member       = "serviceAccount:${google_service_account.deliver.email}"
}

# --- telemetry, both services --------------------------------------------------

resource "google_project_iam_member" "telemetry" {
  for_each = {
    for pair in setproduct(
      ["ingest", "deliver"],
      ["roles/cloudtrace.agent", "roles/monitoring.metricWriter", "roles/logging.logWriter"],
    ) : "${pair[0]} ${pair[1]}" => { sa = pair[0], role = pair[1] }
  }

  project = var.project_id
  role    = each.value.role
  member  = "serviceAccount:${each.value.sa == "ingest" ? google_service_account.ingest.email : google_service_account.deliver.email}"
}

# --- Pub/Sub service agent -------------------------------------------------------

# Dead-lettering: the agent must be able to forward to the dead-letter topic
# and to ack the original on the source subscription.
resource "google_pubsub_topic_iam_member" "pubsub_agent_dead_letter_publisher" {
  project = var.project_id
  topic   = google_pubsub_topic.dead_letter.name
  role    = "roles/pubsub.publisher"
  member  = "serviceAccount:${local.pubsub_service_agent}"
}

resource "google_pubsub_subscription_iam_member" "pubsub_agent_subscriber" {
  project      = var.project_id
  subscription = google_pubsub_subscription.deliver.name
  role         = "roles/pubsub.subscriber"
  member       = "serviceAccount:${local.pubsub_service_agent}"
}

# Push authentication: the agent mints OIDC tokens for the push identity.
# Projects created after April 2021 do not need it; older ones do.
resource "google_service_account_iam_member" "pubsub_agent_token_creator" {
  service_account_id = google_service_account.push.name
  role               = "roles/iam.serviceAccountTokenCreator"
  member             = "serviceAccount:${local.pubsub_service_agent}"
}

# --- who may call the services ---------------------------------------------------

# Segment calls ingest from the internet; ingest checks the API key itself.
resource "google_cloud_run_v2_service_iam_member" "ingest_public" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.ingest.name
  role     = "roles/run.invoker"
  member   = "allUsers"
}

# Only Pub/Sub push (with the push identity's token) may call deliver.
resource "google_cloud_run_v2_service_iam_member" "deliver_push_invoker" {
  project  = var.project_id
  location = var.region
  name     = google_cloud_run_v2_service.deliver.name
  role     = "roles/run.invoker"
  member   = "serviceAccount:${google_service_account.push.email}"
}

# --- Cloud Build deployer ----------------------------------------------------------

resource "google_artifact_registry_repository_iam_member" "deployer_writer" {
  project    = var.project_id
  location   = var.region
  repository = google_artifact_registry_repository.images.name
  role       = "roles/artifactregistry.writer"
  member     = "serviceAccount:${google_service_account.deployer.email}"
}

# run.developer deploys revisions and moves traffic but cannot change IAM.
resource "google_project_iam_member" "deployer_project" {
  for_each = toset(["roles/run.developer", "roles/logging.logWriter"])

  project = var.project_id
  role    = each.value
  member  = "serviceAccount:${google_service_account.deployer.email}"
}

# Deploying a revision that runs as a service account needs actAs on it.
resource "google_service_account_iam_member" "deployer_acts_as" {
  for_each = {
    ingest  = google_service_account.ingest.name
    deliver = google_service_account.deliver.name
  }

  service_account_id = each.value
  role               = "roles/iam.serviceAccountUser"
  member             = "serviceAccount:${google_service_account.deployer.email}"
}
