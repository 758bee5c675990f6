# API key protection (README "API key protection"): ingest seals each
# event's Startdeliver API key with deliver's public keyset; deliver's
# private keyset is encrypted by this Cloud KMS key and kept in Secret
# Manager. Only deliver's service account may read the secret and decrypt
# with the key. The keyset itself is made by deliver/cmd/keys, never by
# Terraform, so no key material is in the Terraform state
# (infra/README.md#api-key-keyset).

resource "google_kms_key_ring" "keys" {
  project  = var.project_id
  name     = "segment-destination"
  location = var.region

  depends_on = [google_project_service.apis]
}

# The key encryption key of deliver's keyset. Cloud KMS keeps every earlier
# version for decryption after its automatic rotation.
resource "google_kms_crypto_key" "api_key_keyset" {
  name            = "api-key-keyset"
  key_ring        = google_kms_key_ring.keys.id
  purpose         = "ENCRYPT_DECRYPT"
  rotation_period = "7776000s" # 90 days

  version_template {
    algorithm        = "GOOGLE_SYMMETRIC_ENCRYPTION"
    protection_level = "SOFTWARE"
  }
}

# deliver's private keyset, encrypted by the key above (Tink JSON). Its
# versions are added by `gcloud secrets versions add` (infra/README.md).
resource "google_secret_manager_secret" "api_key_keyset" {
  project   = var.project_id
  secret_id = "segment-deliver-api-key-keyset"

  replication {
    auto {}
  }

  depends_on = [google_project_service.apis]
}

# deliver decrypts its keyset at start: the only identity that may.
resource "google_kms_crypto_key_iam_member" "deliver_decrypter" {
  crypto_key_id = google_kms_crypto_key.api_key_keyset.id
  role          = "roles/cloudkms.cryptoKeyDecrypter"
  member        = "serviceAccount:${google_service_account.deliver.email}"
}

# deliver/cmd/keys runs as deliver's service account (impersonated) to
# create and rotate the keyset, which encrypts it again.
resource "google_kms_crypto_key_iam_member" "deliver_encrypter" {
  crypto_key_id = google_kms_crypto_key.api_key_keyset.id
  role          = "roles/cloudkms.cryptoKeyEncrypter"
  member        = "serviceAccount:${google_service_account.deliver.email}"
}

resource "google_secret_manager_secret_iam_member" "deliver_keyset_accessor" {
  project   = var.project_id
  secret_id = google_secret_manager_secret.api_key_keyset.id
  role      = "roles/secretmanager.secretAccessor"
  member    = "serviceAccount:${google_service_account.deliver.email}"
}
