# ingest publishes every accepted event here; with var.pubsub_ordering, with
# an ordering key per account and person.
resource "google_pubsub_topic" "events" {
  project = var.project_id
  name    = local.events_topic

  message_retention_duration = local.retention

  depends_on = [google_project_service.apis]
}

# Permanent failures land here: from deliver itself (with error and
# errorClass attributes), and from Pub/Sub after max_delivery_attempts.
resource "google_pubsub_topic" "dead_letter" {
  project = var.project_id
  name    = local.dead_letter_topic

  message_retention_duration = local.retention

  depends_on = [google_project_service.apis]
}

resource "google_pubsub_subscription" "deliver" {
  project = var.project_id
  name    = local.deliver_sub
  topic   = google_pubsub_topic.events.id

  # deliver retries in process for a few seconds before it gives a message
  # back; the deadline covers that, and Cloud Run's request timeout covers it.
  ack_deadline_seconds       = var.ack_deadline_seconds
  message_retention_duration = local.retention
  retain_acked_messages      = false

  # Ordering is decided by ingest (var.pubsub_ordering): with ordering keys
  # one person's events are handed out in order; messages without a key
  # (the default) are not ordered, so enabling it costs nothing then, and
  # turning keys on later needs no new subscription (this field cannot
  # change on an existing one).
  enable_message_ordering = true

  retry_policy {
    minimum_backoff = "10s"
    maximum_backoff = "600s"
  }

  dead_letter_policy {
    dead_letter_topic     = google_pubsub_topic.dead_letter.id
    max_delivery_attempts = var.max_delivery_attempts
  }

  expiration_policy {
    ttl = "" # never expires, even when deliver is idle for weeks
  }

  # Push mode: Pub/Sub calls deliver with an OIDC token of the push service
  # account; only that account may invoke deliver. No push_config = pull.
  dynamic "push_config" {
    for_each = var.deliver_mode == "push" ? [local.deliver_url] : []
    content {
      push_endpoint = "${push_config.value}/pubsub/push"

      oidc_token {
        service_account_email = google_service_account.push.email
        audience              = local.push_audience
      }
    }
  }

  depends_on = [
    google_service_account_iam_member.pubsub_agent_token_creator,
  ]
}

# Keeps what was dead-lettered for a week, for inspection and replay
# (see infra/README.md). Never expires.
resource "google_pubsub_subscription" "dead_letter_inspect" {
  project = var.project_id
  name    = local.dead_letter_sub
  topic   = google_pubsub_topic.dead_letter.id

  ack_deadline_seconds       = 60
  message_retention_duration = local.retention
  retain_acked_messages      = false

  expiration_policy {
    ttl = ""
  }
}
