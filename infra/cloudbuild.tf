# Optional: build and deploy on every push to main of a GitHub repository
# already connected to Cloud Build (Cloud Build > Triggers > Connect
# repository; a one-time step in the console).
resource "google_cloudbuild_trigger" "main" {
  count = var.github_owner != "" && var.github_repo != "" ? 1 : 0

  project         = var.project_id
  location        = "global"
  name            = "segment-destination-main"
  description     = "Test, build and deploy segment-ingest and segment-deliver."
  filename        = "cloudbuild.yaml"
  service_account = google_service_account.deployer.id

  github {
    owner = var.github_owner
    name  = var.github_repo
    push {
      branch = "^main$"
    }
  }

  substitutions = {
    _REGION     = var.region
    _REPOSITORY = var.repository
  }

  depends_on = [google_project_service.apis]
}
