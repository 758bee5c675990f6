locals {
  # Environment both services read (docs/api.md §4). PORT is set by Cloud
  # Run. Telemetry goes to Cloud Trace and Cloud Monitoring.
  common_env = {
    GOOGLE_CLOUD_PROJECT     = var.project_id
    FIRESTORE_DATABASE       = google_firestore_database.default.name
    ACCOUNTS_COLLECTION      = local.accounts_collection
    CONFIG_CACHE_TTL         = var.config_cache_ttl
    LOG_LEVEL                = var.log_level
    OTEL_TRACES_EXPORTER     = "gcp"
    OTEL_METRICS_EXPORTER    = "gcp"
    OTEL_TRACES_SAMPLER      = "parentbased_traceidratio"
    OTEL_TRACES_SAMPLER_ARG  = var.trace_sample_ratio
    OTEL_RESOURCE_ATTRIBUTES = "deployment.environment=production"
  }

  ingest_env = merge(local.common_env, {
    OTEL_SERVICE_NAME = local.ingest_service
    PUBSUB_TOPIC      = google_pubsub_topic.events.name
    # Per-person ordering keys: off by default (README, "Order of events").
    PUBSUB_ORDERING = var.pubsub_ordering ? "true" : "false"
    # The event console reads deliver's records and explain looks users up
    # (read-only) in Startdeliver.
    DELIVERIES_COLLECTION = local.deliveries_collection
    STARTDELIVER_API_URL  = var.startdeliver_api_url
    # deliver's public keyset: ingest seals each API key with it and cannot
    # open what it sealed (infra/README.md#api-key-keyset).
    API_KEY_PUBLIC_KEYSET = var.api_key_public_keyset
    # Go's collector runs less often on ingest's allocation-heavy per-event
    # path (0-25% less CPU per event, docs/benchmarks.md), and the soft
    # memory limit keeps the heap inside the instance's memory.
    GOGC       = "400"
    GOMEMLIMIT = var.ingest_go_memory_limit
  })

  deliver_env = merge(local.common_env, {
    OTEL_SERVICE_NAME    = local.deliver_service
    PUBSUB_SUBSCRIPTION  = google_pubsub_subscription.deliver.name
    DEAD_LETTER_TOPIC    = google_pubsub_topic.dead_letter.name
    DELIVER_MODE         = var.deliver_mode
    STARTDELIVER_API_URL = var.startdeliver_api_url
    # A push request waits for its account's turn within the ack deadline.
    ACK_DEADLINE = "${var.ack_deadline_seconds}s"
    # Push requests must carry a Google OIDC token for this audience.
    PUSH_AUDIENCE = var.deliver_mode == "push" ? local.push_audience : ""
    # ... signed for the push service account, and no other.
    PUSH_SERVICE_ACCOUNT = var.deliver_mode == "push" ? google_service_account.push.email : ""
    # Completed events and creation claims (TTL policies in firestore.tf).
    DELIVERIES_COLLECTION = local.deliveries_collection
    IDENTITIES_COLLECTION = local.identities_collection
    # The Cloud KMS key that encrypts deliver's keyset (API_KEY_KEYSET,
    # from Secret Manager below).
    API_KEY_KEYSET_KEK = "gcp-kms://${google_kms_crypto_key.api_key_keyset.id}"
  })

  # Cloud Run's request timeout must outlast the ack deadline, so Pub/Sub and
  # not Cloud Run decides when a slow push counts as failed.
  deliver_timeout_seconds = var.ack_deadline_seconds + 30

  # Pull mode works between requests, so it needs CPU always allocated and an
  # instance that never scales to zero.
  deliver_pull = var.deliver_mode == "pull"
}

resource "google_cloud_run_v2_service" "ingest" {
  project             = var.project_id
  location            = var.region
  name                = local.ingest_service
  ingress             = "INGRESS_TRAFFIC_ALL"
  deletion_protection = var.deletion_protection

  template {
    service_account = google_service_account.ingest.email

    # A Segment call is one event (or one batch); 30 s is far more than a
    # publish needs, and Segment itself gives up sooner.
    timeout                          = "30s"
    max_instance_request_concurrency = var.ingest_concurrency

    scaling {
      min_instance_count = var.ingest_min_instances
      max_instance_count = var.ingest_max_instances
    }

    containers {
      image = local.ingest_image

      ports {
        container_port = 8080
      }

      resources {
        limits = {
          cpu    = var.ingest_cpu
          memory = var.ingest_memory
        }
        cpu_idle          = true
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.ingest_env
        content {
          name  = env.key
          value = env.value
        }
      }

      startup_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds    = 2
        failure_threshold = 15
        timeout_seconds   = 1
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds    = 15
        failure_threshold = 3
        timeout_seconds   = 2
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  lifecycle {
    # cloudbuild.yaml deploys new images and moves traffic with gcloud;
    # Terraform owns everything else.
    ignore_changes = [
      template[0].containers[0].image,
      template[0].revision,
      traffic,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_project_iam_member.telemetry,
    google_project_iam_member.ingest_datastore_viewer,
    google_pubsub_topic_iam_member.ingest_publisher,
  ]
}

resource "google_cloud_run_v2_service" "deliver" {
  project             = var.project_id
  location            = var.region
  name                = local.deliver_service
  ingress             = var.deliver_ingress
  deletion_protection = var.deletion_protection

  template {
    service_account                  = google_service_account.deliver.email
    timeout                          = "${local.deliver_timeout_seconds}s"
    max_instance_request_concurrency = var.deliver_concurrency

    scaling {
      min_instance_count = local.deliver_pull ? max(var.deliver_min_instances, 1) : var.deliver_min_instances
      max_instance_count = var.deliver_max_instances
    }

    containers {
      image = local.deliver_image

      ports {
        container_port = 8081
      }

      resources {
        limits = {
          cpu    = var.deliver_cpu
          memory = var.deliver_memory
        }
        # Push mode only works inside requests, so CPU may idle between them.
        cpu_idle          = !local.deliver_pull
        startup_cpu_boost = true
      }

      dynamic "env" {
        for_each = local.deliver_env
        content {
          name  = env.key
          value = env.value
        }
      }

      # deliver's private keyset, encrypted by the KMS key: read from Secret
      # Manager when an instance starts (a new version needs a new revision
      # or new instances to be seen).
      env {
        name = "API_KEY_KEYSET"
        value_source {
          secret_key_ref {
            secret  = google_secret_manager_secret.api_key_keyset.id
            version = "latest"
          }
        }
      }

      startup_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds    = 2
        failure_threshold = 15
        timeout_seconds   = 1
      }

      liveness_probe {
        http_get {
          path = "/healthz"
        }
        period_seconds    = 15
        failure_threshold = 3
        timeout_seconds   = 2
      }
    }
  }

  traffic {
    type    = "TRAFFIC_TARGET_ALLOCATION_TYPE_LATEST"
    percent = 100
  }

  lifecycle {
    ignore_changes = [
      template[0].containers[0].image,
      template[0].revision,
      traffic,
      client,
      client_version,
    ]
  }

  depends_on = [
    google_project_iam_member.telemetry,
    google_project_iam_member.deliver_datastore_user,
    google_pubsub_topic_iam_member.deliver_dead_letter_publisher,
    google_firestore_field.deliveries_ttl,
    google_firestore_field.identities_ttl,
    # deliver reads its keyset and decrypts it at start.
    google_secret_manager_secret_iam_member.deliver_keyset_accessor,
    google_kms_crypto_key_iam_member.deliver_decrypter,
  ]
}
