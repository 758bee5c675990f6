variable "project_id" {
  description = "Google Cloud project that hosts the destination."
  type        = string
}

variable "region" {
  description = "Region for Cloud Run, Artifact Registry and Cloud Build."
  type        = string
  default     = "europe-west1"
}

variable "firestore_location" {
  description = "Firestore location (multi-region such as eur3 or nam5, or a region). It cannot change after creation."
  type        = string
  default     = "eur3"
}

variable "repository" {
  description = "Artifact Registry Docker repository holding segment-ingest and segment-deliver."
  type        = string
  default     = "segment-destination"
}

variable "image_tag" {
  description = "Image tag both services start from on the first apply (infra/deploy.sh passes the commit). Later deploys change the image outside Terraform (cloudbuild.yaml), which ignores it."
  type        = string
}

# --- ingest sizing ---------------------------------------------------------

variable "ingest_min_instances" {
  description = "Minimum ingest instances; at least 1 so Segment never waits for a cold start."
  type        = number
  default     = 1
}

variable "ingest_max_instances" {
  description = "Maximum ingest instances."
  type        = number
  default     = 20
}

variable "ingest_concurrency" {
  description = "Concurrent requests per ingest instance. ingest is I/O bound (it waits for the publish result), so one CPU serves many."
  type        = number
  default     = 160
}

variable "ingest_cpu" {
  description = "CPU limit of an ingest instance."
  type        = string
  default     = "1"
}

variable "ingest_memory" {
  description = "Memory limit of an ingest instance (the 500 KB request limit times the concurrency must fit)."
  type        = string
  default     = "512Mi"
}

variable "ingest_go_memory_limit" {
  description = "GOMEMLIMIT of ingest (Go's syntax, e.g. 384MiB): about three quarters of ingest_memory, so that GOGC=400 never grows the heap past the instance."
  type        = string
  default     = "384MiB"
}

# --- deliver sizing and mode -----------------------------------------------

variable "deliver_mode" {
  description = "How deliver receives events: push (Pub/Sub pushes to Cloud Run with an OIDC token; recommended) or pull (a streaming pull inside always-on instances)."
  type        = string
  default     = "push"

  validation {
    condition     = contains(["push", "pull"], var.deliver_mode)
    error_message = "deliver_mode must be push or pull."
  }
}

variable "deliver_min_instances" {
  description = "Minimum deliver instances (pull mode always keeps at least 1)."
  type        = number
  default     = 0
}

variable "deliver_max_instances" {
  description = "Maximum deliver instances; also caps the load deliver puts on Startdeliver's API."
  type        = number
  default     = 10
}

variable "deliver_concurrency" {
  description = "Concurrent push requests per deliver instance."
  type        = number
  default     = 40
}

variable "deliver_cpu" {
  description = "CPU limit of a deliver instance."
  type        = string
  default     = "1"
}

variable "deliver_memory" {
  description = "Memory limit of a deliver instance."
  type        = string
  default     = "512Mi"
}

variable "deliver_ingress" {
  description = "Ingress of the deliver service. Pub/Sub push from the same project counts as internal traffic."
  type        = string
  default     = "INGRESS_TRAFFIC_INTERNAL_ONLY"
}

variable "push_audience" {
  description = "Audience of the OIDC token Pub/Sub sends to deliver, and deliver's PUSH_AUDIENCE. Empty means deliver's deterministic URL https://segment-deliver-PROJECT_NUMBER.REGION.run.app."
  type        = string
  default     = ""
}

# --- Pub/Sub ------------------------------------------------------------------

variable "ack_deadline_seconds" {
  description = "Ack deadline of the deliver subscription: long enough for deliver's in-process retries of one event (a few seconds of back-off plus the Startdeliver calls)."
  type        = number
  default     = 60

  validation {
    condition     = var.ack_deadline_seconds >= 10 && var.ack_deadline_seconds <= 600
    error_message = "ack_deadline_seconds must be between 10 and 600."
  }
}

variable "pubsub_ordering" {
  description = "Publish each event with an ordering key per account and person, so that Pub/Sub hands one person's events to deliver in order (README, \"Order of events\"). Off by default: Segment promises no order, and a key's failed message holds back that person's later events."
  type        = bool
  default     = false
}

variable "max_delivery_attempts" {
  description = "Delivery attempts before Pub/Sub moves a message to the dead-letter topic (5 to 100)."
  type        = number
  default     = 10

  validation {
    condition     = var.max_delivery_attempts >= 5 && var.max_delivery_attempts <= 100
    error_message = "max_delivery_attempts must be between 5 and 100."
  }
}

# --- service configuration ---------------------------------------------------

variable "startdeliver_api_url" {
  description = "Startdeliver REST API base URL (STARTDELIVER_API_URL); an account's startdeliverApiUrl overrides it."
  type        = string
  default     = "https://app.startdeliver.com/api/v1"
}

variable "config_cache_ttl" {
  description = "How long both services cache an account document (CONFIG_CACHE_TTL)."
  type        = string
  default     = "10m"
}

variable "log_level" {
  description = "LOG_LEVEL of both services (debug, info, warn, error)."
  type        = string
  default     = "info"
}

variable "trace_sample_ratio" {
  description = "Share of new traces sampled (OTEL_TRACES_SAMPLER_ARG with parentbased_traceidratio); a caller's sampled traceparent is always honoured."
  type        = string
  default     = "1.0"
}

# --- observability -----------------------------------------------------------

variable "alert_email" {
  description = "Email address that receives the alerts; empty creates the policies without a notification channel."
  type        = string
  default     = ""
}

variable "backlog_age_alert_seconds" {
  description = "Alert when the oldest unacked message on the deliver subscription is older than this."
  type        = number
  default     = 1800
}

variable "delivery_error_ratio_alert" {
  description = "Alert when this share of push deliveries to deliver fail (non-ack) over 10 minutes."
  type        = number
  default     = 0.05
}

variable "delivery_error_log_rate_alert" {
  description = "Alert when deliver logs more than this many failed events (retried or dead-lettered) per second, averaged over 10 minutes."
  type        = number
  default     = 0.5
}

# --- optional Cloud Build trigger ----------------------------------------------

variable "github_owner" {
  description = "Owner of the GitHub repository connected to Cloud Build; with github_repo it creates a trigger on pushes to main. Empty: no trigger."
  type        = string
  default     = ""
}

variable "github_repo" {
  description = "Name of the GitHub repository connected to Cloud Build (see github_owner)."
  type        = string
  default     = ""
}

variable "deletion_protection" {
  description = "Protect the Cloud Run services and the Firestore database from terraform destroy."
  type        = bool
  default     = true
}

# --- API key protection -----------------------------------------------------------

variable "api_key_public_keyset" {
  description = "deliver's public keyset (Tink JSON, from `go run ./deliver/cmd/keys public`), ingest's API_KEY_PUBLIC_KEYSET. ingest refuses to start without it. Not secret: it can only seal. See infra/README.md#api-key-keyset."
  type        = string
  default     = ""

  validation {
    condition     = var.api_key_public_keyset == "" || can(jsondecode(var.api_key_public_keyset).primaryKeyId)
    error_message = "api_key_public_keyset must be a Tink JSON keyset (with primaryKeyId), as deliver/cmd/keys prints it."
  }
}
