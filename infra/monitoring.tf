resource "google_monitoring_notification_channel" "email" {
  count = var.alert_email == "" ? 0 : 1

  project      = var.project_id
  display_name = "Segment destination alerts"
  type         = "email"
  labels = {
    email_address = var.alert_email
  }

  depends_on = [google_project_service.apis]
}

locals {
  notification_channels = google_monitoring_notification_channel.email[*].id
}

# Events deliver could not deliver this time: retried (nacked) or
# dead-lettered. deliver logs one line per event outcome at WARNING or above
# when it fails, whatever the intake mode, so the count is the same for push
# and pull.
resource "google_logging_metric" "delivery_failures" {
  project = var.project_id
  name    = "segment_deliver_failures"
  filter  = <<-EOT
    resource.type="cloud_run_revision"
    resource.labels.service_name="${local.deliver_service}"
    severity>=WARNING
  EOT

  metric_descriptor {
    metric_kind  = "DELTA"
    value_type   = "INT64"
    unit         = "1"
    display_name = "segment-deliver failed events"
  }

  depends_on = [google_project_service.apis]
}

# Anything in the dead-letter topic needs a person: a permanent failure from
# deliver or a message that ran out of delivery attempts.
resource "google_monitoring_alert_policy" "dead_letter_growth" {
  project      = var.project_id
  display_name = "Segment destination: events dead-lettered"
  combiner     = "OR"

  conditions {
    display_name = "${local.dead_letter_sub} has undelivered messages"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${local.dead_letter_sub}\" AND metric.type = \"pubsub.googleapis.com/subscription/num_undelivered_messages\""
      comparison      = "COMPARISON_GT"
      threshold_value = 0
      duration        = "300s"
      aggregations {
        alignment_period   = "300s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Events reached ${local.dead_letter_topic}. Read their `error` and `errorClass` attributes with `gcloud pubsub subscriptions pull ${local.dead_letter_sub} --limit=10` (without --auto-ack) and follow infra/README.md, section Dead letters, to fix and replay."
  }

  notification_channels = local.notification_channels
  depends_on            = [google_pubsub_subscription.dead_letter_inspect]
}

resource "google_monitoring_alert_policy" "delivery_errors" {
  project      = var.project_id
  display_name = "Segment destination: delivery error rate"
  combiner     = "OR"

  # Push mode: share of push requests deliver did not acknowledge.
  conditions {
    display_name = "push deliveries failing"
    condition_threshold {
      filter             = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${local.deliver_sub}\" AND metric.type = \"pubsub.googleapis.com/subscription/push_request_count\" AND metric.label.response_class != \"ack\""
      denominator_filter = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${local.deliver_sub}\" AND metric.type = \"pubsub.googleapis.com/subscription/push_request_count\""
      comparison         = "COMPARISON_GT"
      threshold_value    = var.delivery_error_ratio_alert
      duration           = "600s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
      denominator_aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  # Any mode: failed events deliver logged.
  conditions {
    display_name = "deliver logging failed events"
    condition_threshold {
      filter          = "resource.type = \"cloud_run_revision\" AND metric.type = \"logging.googleapis.com/user/${google_logging_metric.delivery_failures.name}\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.delivery_error_log_rate_alert
      duration        = "600s"
      aggregations {
        alignment_period     = "600s"
        per_series_aligner   = "ALIGN_RATE"
        cross_series_reducer = "REDUCE_SUM"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "segment-deliver is failing to deliver events to Startdeliver. Check the deliver logs and traces (Cloud Run > ${local.deliver_service} > Logs) for the error class: retryable (Startdeliver 5xx, 429, timeouts) heals by itself within the retry policy; permanent (400/401/403/404/422, bad config) goes to ${local.dead_letter_topic}."
  }

  notification_channels = local.notification_channels
}

resource "google_monitoring_alert_policy" "backlog_age" {
  project      = var.project_id
  display_name = "Segment destination: delivery backlog is old"
  combiner     = "OR"

  conditions {
    display_name = "oldest unacked event on ${local.deliver_sub}"
    condition_threshold {
      filter          = "resource.type = \"pubsub_subscription\" AND resource.label.subscription_id = \"${local.deliver_sub}\" AND metric.type = \"pubsub.googleapis.com/subscription/oldest_unacked_message_age\""
      comparison      = "COMPARISON_GT"
      threshold_value = var.backlog_age_alert_seconds
      duration        = "300s"
      aggregations {
        alignment_period   = "60s"
        per_series_aligner = "ALIGN_MAX"
      }
    }
  }

  documentation {
    mime_type = "text/markdown"
    content   = "Events wait longer than ${var.backlog_age_alert_seconds}s before deliver handles them. The subscription keeps them for 7 days; check that ${local.deliver_service} is up and that Startdeliver answers."
  }

  notification_channels = local.notification_channels
}

resource "google_monitoring_dashboard" "main" {
  project = var.project_id
  dashboard_json = templatefile("${path.module}/dashboard.json.tftpl", {
    ingest_service  = local.ingest_service
    deliver_service = local.deliver_service
    deliver_sub     = local.deliver_sub
    dead_letter_sub = local.dead_letter_sub
    failures_metric = google_logging_metric.delivery_failures.name
  })

  depends_on = [google_project_service.apis]
}
