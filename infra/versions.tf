terraform {
  required_version = ">= 1.5"

  required_providers {
    google = {
      source  = "hashicorp/google"
      version = ">= 6.20, < 8.0"
    }
  }

  # State is local by default (infra/terraform.tfstate, git-ignored). For a
  # team, copy backend.tf.example to backend.tf and point it at a GCS bucket.
}

provider "google" {
  project = var.project_id
  region  = var.region
}
