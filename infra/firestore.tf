# Firestore in native mode. Collections:
#   accounts   - doc id = hex SHA-256 of the account's API key (written by the
#                accounts command; both services read it).
#   deliveries - one doc per completed event (account + messageId), so a
#                redelivered event has no second effect; expires via expireAt.
#   identities - one doc per account + match value while a Startdeliver user is
#                being created, so two instances never create the same person
#                twice; expires via expireAt.
resource "google_firestore_database" "default" {
  project     = var.project_id
  name        = "(default)"
  location_id = var.firestore_location
  type        = "FIRESTORE_NATIVE"

  concurrency_mode            = "OPTIMISTIC"
  app_engine_integration_mode = "DISABLED"
  delete_protection_state     = var.deletion_protection ? "DELETE_PROTECTION_ENABLED" : "DELETE_PROTECTION_DISABLED"
  deletion_policy             = var.deletion_protection ? "ABANDON" : "DELETE"

  depends_on = [google_project_service.apis]
}

# TTL policies: Firestore deletes a document some time (typically within a
# day) after its expireAt. The empty index_config exempts the field from
# single-field indexing, as advised for monotonically increasing timestamps.
resource "google_firestore_field" "deliveries_ttl" {
  project    = var.project_id
  database   = google_firestore_database.default.name
  collection = local.deliveries_collection
  field      = "expireAt"

  ttl_config {}
  index_config {}
}

resource "google_firestore_field" "identities_ttl" {
  project    = var.project_id
  database   = google_firestore_database.default.name
  collection = local.identities_collection
  field      = "expireAt"

  ttl_config {}
  index_config {}
}

# The event console's listing (GET /v1/events, ingest): an account's records
# newest first, optionally filtered by userId, type and status (any
# combination). Each combination is one composite index: equality on
# accountId and the filters, then completedAt descending (shared/journey,
# Reader.List).
locals {
  deliveries_listing_filters = {
    "all"              = []
    "user"             = ["userId"]
    "type"             = ["type"]
    "status"           = ["status"]
    "user-type"        = ["userId", "type"]
    "user-status"      = ["userId", "status"]
    "type-status"      = ["type", "status"]
    "user-type-status" = ["userId", "type", "status"]
  }
}

resource "google_firestore_index" "deliveries_listing" {
  for_each = local.deliveries_listing_filters

  project     = var.project_id
  database    = google_firestore_database.default.name
  collection  = local.deliveries_collection
  query_scope = "COLLECTION"

  fields {
    field_path = "accountId"
    order      = "ASCENDING"
  }
  dynamic "fields" {
    for_each = each.value
    content {
      field_path = fields.value
      order      = "ASCENDING"
    }
  }
  fields {
    field_path = "completedAt"
    order      = "DESCENDING"
  }
}
