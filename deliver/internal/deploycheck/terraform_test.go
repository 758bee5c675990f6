package deploycheck

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/google/go-cmp/cmp"
	"github.com/hashicorp/hcl/v2/hclsyntax"
	"github.com/zclconf/go-cty/cty"
)

const (
	eventsTopic     = "google_pubsub_topic.events"
	deadTopic       = "google_pubsub_topic.dead_letter"
	deliverSub      = "google_pubsub_subscription.deliver"
	deadInspectSub  = "google_pubsub_subscription.dead_letter_inspect"
	ingestRun       = "google_cloud_run_v2_service.ingest"
	deliverRun      = "google_cloud_run_v2_service.deliver"
	sevenDays       = "604800s"
	pubsubAgentTmpl = "service-{data.google_project.this.number}@gcp-sa-pubsub.iam.gserviceaccount.com"
)

func TestPubSubNames(t *testing.T) {
	cfg := loadTerraform(t)
	tests := []struct {
		addr, want string
	}{
		{eventsTopic, "segment-events"},
		{deadTopic, "segment-events-dead"},
		{deliverSub, "segment-events-deliver"},
		{deadInspectSub, "segment-events-dead-inspect"},
	}
	for _, tt := range tests {
		t.Run(tt.addr, func(t *testing.T) {
			if got := cfg.str(t, cfg.resource(t, tt.addr), "name", nil); got != tt.want {
				t.Errorf("%s.name = %q, want %q", tt.addr, got, tt.want)
			}
		})
	}
	for addr, topic := range map[string]string{deliverSub: eventsTopic, deadInspectSub: deadTopic} {
		want := "{" + topic + ".id}"
		if got := cfg.str(t, cfg.resource(t, addr), "topic", nil); got != want {
			t.Errorf("%s.topic = %q, want %q", addr, got, want)
		}
	}
}

func TestDeliverSubscription(t *testing.T) {
	cfg := loadTerraform(t)
	sub := cfg.resource(t, deliverSub)

	if got := cfg.str(t, sub, "message_retention_duration", nil); got != sevenDays {
		t.Errorf("message_retention_duration = %q, want %q (longer than Segment's 4 h retries)", got, sevenDays)
	}
	if got := cfg.attr(t, sub, "enable_message_ordering", nil); !got.True() {
		t.Errorf("enable_message_ordering = %#v, want true (ingest's ordering keys, var.pubsub_ordering, need it; it cannot change later)", got)
	}
	ack := cfg.num(t, sub, "ack_deadline_seconds")
	if ack < 30 || ack > 600 {
		t.Errorf("ack_deadline_seconds = %d, want 30..600 (room for deliver's in-process retries)", ack)
	}
	if got := cfg.str(t, child(t, sub, "expiration_policy"), "ttl", nil); got != "" {
		t.Errorf("expiration_policy.ttl = %q, want \"\" (never expires)", got)
	}

	retry := child(t, sub, "retry_policy")
	if got := cfg.str(t, retry, "minimum_backoff", nil); got != "10s" {
		t.Errorf("retry_policy.minimum_backoff = %q, want 10s", got)
	}
	if got := cfg.str(t, retry, "maximum_backoff", nil); got != "600s" {
		t.Errorf("retry_policy.maximum_backoff = %q, want 600s", got)
	}

	dl := child(t, sub, "dead_letter_policy")
	if got, want := cfg.str(t, dl, "dead_letter_topic", nil), "{"+deadTopic+".id}"; got != want {
		t.Errorf("dead_letter_policy.dead_letter_topic = %q, want %q", got, want)
	}
	if got := cfg.num(t, dl, "max_delivery_attempts"); got < 5 || got > 100 {
		t.Errorf("dead_letter_policy.max_delivery_attempts = %d, want 5..100", got)
	}

	// Push by default: OIDC token of the push identity, audience = deliver's
	// PUSH_AUDIENCE, endpoint = deliver's /pubsub/push.
	dyn := dynamicBlock(t, sub, "push_config")
	forEach := cfg.attr(t, dyn, "for_each", nil)
	if forEach.LengthInt() != 1 {
		t.Fatalf("push_config for_each has %d elements with the default deliver_mode, want 1 (push)", forEach.LengthInt())
	}
	iter := cty.ObjectVal(map[string]cty.Value{"key": cty.NumberIntVal(0), "value": forEach.Index(cty.NumberIntVal(0))})
	extra := map[string]cty.Value{"push_config": iter}
	content := child(t, dyn, "content")
	endpoint := cfg.str(t, content, "push_endpoint", extra)
	deliverURL := deliverURL(t, cfg)
	if want := deliverURL + "/pubsub/push"; endpoint != want {
		t.Errorf("push_endpoint = %q, want %q", endpoint, want)
	}
	oidc := child(t, content, "oidc_token")
	if got, want := cfg.str(t, oidc, "service_account_email", extra), "{google_service_account.push.email}"; got != want {
		t.Errorf("oidc_token.service_account_email = %q, want %q", got, want)
	}
	audience := cfg.str(t, oidc, "audience", extra)
	env := runEnv(t, cfg, deliverRun)
	if env["PUSH_AUDIENCE"] != audience {
		t.Errorf("deliver PUSH_AUDIENCE = %q, want the push audience %q", env["PUSH_AUDIENCE"], audience)
	}
	if got, want := env["PUSH_SERVICE_ACCOUNT"], "{google_service_account.push.email}"; got != want {
		t.Errorf("deliver PUSH_SERVICE_ACCOUNT = %q, want the push identity %q", got, want)
	}
	// deliver writes where the TTL policies sweep.
	if env["DELIVERIES_COLLECTION"] != "deliveries" || env["IDENTITIES_COLLECTION"] != "identities" {
		t.Errorf("deliver collections = %q, %q; want deliveries and identities (their TTL policies)", env["DELIVERIES_COLLECTION"], env["IDENTITIES_COLLECTION"])
	}
	if audience != deliverURL {
		t.Errorf("push audience = %q, want deliver's URL %q", audience, deliverURL)
	}

	// Pull mode: no push_config at all.
	pull := cfg.ctx.NewChild()
	vars := cfg.ctx.Variables["var"].AsValueMap()
	vars["deliver_mode"] = cty.StringVal("pull")
	pull.Variables = map[string]cty.Value{"var": cty.ObjectVal(vars)}
	if v, diags := dyn.Body.Attributes["for_each"].Expr.Value(pull); diags.HasErrors() || v.LengthInt() != 0 {
		t.Errorf("push_config for_each with deliver_mode=pull = %#v (%v), want empty", v, diags)
	}
}

// deliverURL is Cloud Run's deterministic URL of segment-deliver.
func deliverURL(t *testing.T, cfg *tfConfig) string {
	t.Helper()
	region := cfg.ctx.Variables["var"].GetAttr("region").AsString()
	return fmt.Sprintf("https://segment-deliver-{data.google_project.this.number}.%s.run.app", region)
}

func TestDeadLetterInspectSubscription(t *testing.T) {
	cfg := loadTerraform(t)
	sub := cfg.resource(t, deadInspectSub)
	if got := cfg.str(t, sub, "message_retention_duration", nil); got != sevenDays {
		t.Errorf("message_retention_duration = %q, want %q", got, sevenDays)
	}
	if got := cfg.str(t, child(t, sub, "expiration_policy"), "ttl", nil); got != "" {
		t.Errorf("expiration_policy.ttl = %q, want \"\" (never expires)", got)
	}
	for _, b := range sub.Body.Blocks {
		if b.Type == "dead_letter_policy" || (b.Type == "dynamic" && b.Labels[0] == "push_config") {
			t.Errorf("%s has a %s block; it must only keep messages for inspection", deadInspectSub, blockName(b))
		}
	}
}

func TestFirestore(t *testing.T) {
	cfg := loadTerraform(t)
	dbs := cfg.ofType("google_firestore_database")
	if len(dbs) != 1 {
		t.Fatalf("google_firestore_database resources = %v, want one", dbs)
	}
	db := cfg.resource(t, dbs[0])
	if got := cfg.str(t, db, "name", nil); got != "(default)" {
		t.Errorf("database name = %q, want (default)", got)
	}
	if got := cfg.str(t, db, "type", nil); got != "FIRESTORE_NATIVE" {
		t.Errorf("database type = %q, want FIRESTORE_NATIVE", got)
	}

	var ttl []string
	for _, addr := range cfg.ofType("google_firestore_field") {
		f := cfg.resource(t, addr)
		if got, want := cfg.str(t, f, "database", nil), "{"+dbs[0]+".name}"; got != want {
			t.Errorf("%s.database = %q, want %q", addr, got, want)
		}
		for _, b := range f.Body.Blocks {
			if b.Type == "ttl_config" {
				ttl = append(ttl, cfg.str(t, f, "collection", nil)+"."+cfg.str(t, f, "field", nil))
			}
		}
	}
	sort.Strings(ttl)
	if diff := cmp.Diff([]string{"deliveries.expireAt", "identities.expireAt"}, ttl); diff != "" {
		t.Errorf("TTL policies (-want +got):\n%s", diff)
	}
}

// runEnv is the environment a Cloud Run service gets from its dynamic env
// block, evaluated with the variable defaults.
func runEnv(t *testing.T, cfg *tfConfig, addr string) map[string]string {
	t.Helper()
	container := child(t, child(t, cfg.resource(t, addr), "template"), "containers")
	dyn := dynamicBlock(t, container, "env")
	v := cfg.attr(t, dyn, "for_each", nil)
	if !v.Type().IsObjectType() && !v.Type().IsMapType() {
		t.Fatalf("%s env for_each is %s, want an object", addr, v.Type().FriendlyName())
	}
	content := child(t, dyn, "content")
	env := map[string]string{}
	for k, val := range v.AsValueMap() {
		iter := cty.ObjectVal(map[string]cty.Value{"key": cty.StringVal(k), "value": val})
		name := cfg.str(t, content, "name", map[string]cty.Value{"env": iter})
		value := ""
		if val.IsKnown() && !val.IsNull() {
			value = val.AsString()
		} else {
			value = "<unknown>"
		}
		env[name] = value
	}
	return env
}

func TestCloudRunServices(t *testing.T) {
	cfg := loadTerraform(t)
	common := []string{"GOOGLE_CLOUD_PROJECT", "FIRESTORE_DATABASE", "ACCOUNTS_COLLECTION", "CONFIG_CACHE_TTL", "LOG_LEVEL", "OTEL_SERVICE_NAME", "OTEL_TRACES_EXPORTER"}
	tests := []struct {
		addr, name, sa string
		env            map[string]string
	}{
		{
			addr: ingestRun, name: "segment-ingest", sa: "{google_service_account.ingest.email}",
			env: map[string]string{"PUBSUB_TOPIC": "{google_pubsub_topic.events.name}", "OTEL_TRACES_EXPORTER": "gcp", "OTEL_SERVICE_NAME": "segment-ingest",
				"API_KEY_PUBLIC_KEYSET": "", "PUBSUB_ORDERING": "false"},
		},
		{
			addr: deliverRun, name: "segment-deliver", sa: "{google_service_account.deliver.email}",
			env: map[string]string{
				"PUBSUB_SUBSCRIPTION":  "{google_pubsub_subscription.deliver.name}",
				"DEAD_LETTER_TOPIC":    "{google_pubsub_topic.dead_letter.name}",
				"DELIVER_MODE":         "push",
				"STARTDELIVER_API_URL": "https://app.startdeliver.com/api/v1",
				"OTEL_TRACES_EXPORTER": "gcp",
				"OTEL_SERVICE_NAME":    "segment-deliver",
				"API_KEY_KEYSET_KEK":   "gcp-kms://{google_kms_crypto_key.api_key_keyset.id}",
			},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			svc := cfg.resource(t, tt.addr)
			if got := cfg.str(t, svc, "name", nil); got != tt.name {
				t.Errorf("name = %q, want %q", got, tt.name)
			}
			tmpl := child(t, svc, "template")
			if got := cfg.str(t, tmpl, "service_account", nil); got != tt.sa {
				t.Errorf("template.service_account = %q, want %q", got, tt.sa)
			}
			if _, ok := child(t, tmpl, "containers").Body.Attributes["command"]; ok {
				t.Errorf("container overrides command: the image's entrypoint is the service")
			}

			env := runEnv(t, cfg, tt.addr)
			if _, ok := env["PORT"]; ok {
				t.Errorf("env sets PORT; Cloud Run sets it")
			}
			for _, name := range common {
				if _, ok := env[name]; !ok {
					t.Errorf("env has no %s", name)
				}
			}
			for name, want := range tt.env {
				if got := env[name]; got != want {
					t.Errorf("env[%s] = %q, want %q", name, got, want)
				}
			}

			lc := child(t, svc, "lifecycle")
			ignored := traversals(t, lc.Body.Attributes["ignore_changes"].Expr)
			if !slices.Contains(ignored, "template[0].containers[0].image") {
				t.Errorf("lifecycle.ignore_changes = %v, want template[0].containers[0].image (deploys change the image)", ignored)
			}
		})
	}

	t.Run("sizing", func(t *testing.T) {
		ingest := child(t, cfg.resource(t, ingestRun), "template")
		if got := cfg.num(t, child(t, ingest, "scaling"), "min_instance_count"); got < 1 {
			t.Errorf("ingest min_instance_count = %d, want >= 1 (no cold start for Segment)", got)
		}
		if got := cfg.num(t, ingest, "max_instance_request_concurrency"); got < 80 || got > 250 {
			t.Errorf("ingest concurrency = %d, want 80..250", got)
		}
		if got := cfg.str(t, cfg.resource(t, ingestRun), "ingress", nil); got != "INGRESS_TRAFFIC_ALL" {
			t.Errorf("ingest ingress = %q, want INGRESS_TRAFFIC_ALL (Segment calls it)", got)
		}

		deliver := child(t, cfg.resource(t, deliverRun), "template")
		timeout, err := time.ParseDuration(cfg.str(t, deliver, "timeout", nil))
		if err != nil {
			t.Fatalf("deliver timeout: %v", err)
		}
		ack := time.Duration(cfg.num(t, cfg.resource(t, deliverSub), "ack_deadline_seconds")) * time.Second
		if timeout < ack {
			t.Errorf("deliver timeout = %v, want >= the ack deadline %v", timeout, ack)
		}
	})
}

// grant is one IAM member binding, with placeholders for identities and
// targets: "{google_service_account.ingest.email} roles/pubsub.publisher on {google_pubsub_topic.events.name}".
func grants(t *testing.T, cfg *tfConfig) []string {
	t.Helper()
	targetAttr := map[string]string{
		"google_project_iam_member":                      "project",
		"google_pubsub_topic_iam_member":                 "topic",
		"google_pubsub_subscription_iam_member":          "subscription",
		"google_service_account_iam_member":              "service_account_id",
		"google_cloud_run_v2_service_iam_member":         "name",
		"google_artifact_registry_repository_iam_member": "repository",
		"google_kms_crypto_key_iam_member":               "crypto_key_id",
		"google_secret_manager_secret_iam_member":        "secret_id",
	}
	var out []string
	for addr, b := range cfg.resources {
		typ := b.Labels[0]
		if strings.HasSuffix(typ, "_iam_binding") || strings.HasSuffix(typ, "_iam_policy") {
			t.Errorf("%s is authoritative; use *_iam_member so grants made by others survive", addr)
			continue
		}
		if !strings.HasSuffix(typ, "_iam_member") {
			continue
		}
		attr, ok := targetAttr[typ]
		if !ok {
			t.Errorf("%s: IAM resource type %s is not checked by this test", addr, typ)
			continue
		}
		for _, each := range cfg.instances(t, b) {
			member := strings.TrimPrefix(cfg.str(t, b, "member", each), "serviceAccount:")
			role := cfg.str(t, b, "role", each)
			target := cfg.str(t, b, attr, each)
			if typ == "google_project_iam_member" {
				target = "project"
			}
			out = append(out, member+" "+role+" on "+target)
		}
	}
	sort.Strings(out)
	return out
}

// TestIAM pins every grant: adding a role to a service account is a change
// to this list, reviewed as such.
func TestIAM(t *testing.T) {
	cfg := loadTerraform(t)
	const (
		ingest   = "{google_service_account.ingest.email}"
		deliver  = "{google_service_account.deliver.email}"
		push     = "{google_service_account.push.email}"
		deployer = "{google_service_account.deployer.email}"
	)
	want := []string{
		ingest + " roles/pubsub.publisher on {google_pubsub_topic.events.name}",
		ingest + " roles/pubsub.viewer on {google_pubsub_topic.events.name}",
		ingest + " roles/datastore.viewer on project",
		ingest + " roles/cloudtrace.agent on project",
		ingest + " roles/monitoring.metricWriter on project",
		ingest + " roles/logging.logWriter on project",

		deliver + " roles/datastore.user on project",
		deliver + " roles/pubsub.publisher on {google_pubsub_topic.dead_letter.name}",
		deliver + " roles/pubsub.subscriber on {google_pubsub_subscription.deliver.name}",
		deliver + " roles/pubsub.viewer on {google_pubsub_subscription.deliver.name}",
		deliver + " roles/cloudtrace.agent on project",
		deliver + " roles/monitoring.metricWriter on project",
		deliver + " roles/logging.logWriter on project",
		// API key protection: deliver alone reads its keyset and decrypts it.
		deliver + " roles/cloudkms.cryptoKeyDecrypter on {google_kms_crypto_key.api_key_keyset.id}",
		deliver + " roles/cloudkms.cryptoKeyEncrypter on {google_kms_crypto_key.api_key_keyset.id}",
		deliver + " roles/secretmanager.secretAccessor on {google_secret_manager_secret.api_key_keyset.id}",

		push + " roles/run.invoker on {google_cloud_run_v2_service.deliver.name}",
		"allUsers roles/run.invoker on {google_cloud_run_v2_service.ingest.name}",

		pubsubAgentTmpl + " roles/pubsub.publisher on {google_pubsub_topic.dead_letter.name}",
		pubsubAgentTmpl + " roles/pubsub.subscriber on {google_pubsub_subscription.deliver.name}",
		pubsubAgentTmpl + " roles/iam.serviceAccountTokenCreator on {google_service_account.push.name}",

		deployer + " roles/artifactregistry.writer on {google_artifact_registry_repository.images.name}",
		deployer + " roles/run.developer on project",
		deployer + " roles/logging.logWriter on project",
		deployer + " roles/iam.serviceAccountUser on {google_service_account.ingest.name}",
		deployer + " roles/iam.serviceAccountUser on {google_service_account.deliver.name}",
	}
	sort.Strings(want)
	if diff := cmp.Diff(want, grants(t, cfg)); diff != "" {
		t.Errorf("IAM grants (-want +got):\n%s", diff)
	}

	// The pubsub agent placeholder above must be the project's real agent.
	if got := cfg.ctx.Variables["local"].GetAttr("pubsub_service_agent"); !got.IsKnown() || got.AsString() != pubsubAgentTmpl {
		t.Errorf("local.pubsub_service_agent = %#v, want %q", got, pubsubAgentTmpl)
	}
}

func TestAlertPolicies(t *testing.T) {
	cfg := loadTerraform(t)
	var filters []string
	for _, addr := range cfg.ofType("google_monitoring_alert_policy") {
		for _, cond := range cfg.resource(t, addr).Body.Blocks {
			if cond.Type != "conditions" {
				continue
			}
			th := child(t, cond, "condition_threshold")
			filters = append(filters, addr+": "+cfg.str(t, th, "filter", nil))
		}
	}
	tests := []struct {
		name string
		re   string
	}{
		{"dead-letter growth", `subscription_id = "segment-events-dead-inspect".*num_undelivered_messages`},
		{"backlog age", `subscription_id = "segment-events-deliver".*oldest_unacked_message_age`},
		{"delivery error rate (push)", `subscription_id = "segment-events-deliver".*push_request_count.*response_class != "ack"`},
		{"delivery error rate (logs)", `logging.googleapis.com/user/`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			re := regexp.MustCompile(tt.re)
			if !slices.ContainsFunc(filters, re.MatchString) {
				t.Errorf("no alert condition matches %q; filters:\n%s", tt.re, strings.Join(filters, "\n"))
			}
		})
	}
}

// TestDashboardTemplate renders infra/dashboard.json.tftpl with the variables
// monitoring.tf passes and checks the result is a dashboard.
func TestDashboardTemplate(t *testing.T) {
	cfg := loadTerraform(t)
	dash := cfg.resource(t, "google_monitoring_dashboard.main")
	call, ok := dash.Body.Attributes["dashboard_json"].Expr.(*hclsyntax.FunctionCallExpr)
	if !ok || call.Name != "templatefile" || len(call.Args) != 2 {
		t.Fatalf("dashboard_json is not templatefile(path, vars)")
	}
	vars, err := cfg.eval(call.Args[1], nil)
	if err != nil {
		t.Fatalf("templatefile vars: %v", err)
	}
	raw, err := os.ReadFile(filepath.Join(repoRoot(t), "infra", "dashboard.json.tftpl"))
	if err != nil {
		t.Fatal(err)
	}
	used := map[string]bool{}
	rendered := regexp.MustCompile(`\$\{(\w+)\}`).ReplaceAllStringFunc(string(raw), func(m string) string {
		name := m[2 : len(m)-1]
		used[name] = true
		if !vars.Type().HasAttribute(name) {
			t.Errorf("template uses ${%s}, which monitoring.tf does not pass", name)
			return m
		}
		return vars.GetAttr(name).AsString()
	})
	if strings.Contains(rendered, "%{") {
		t.Errorf("template uses directives; this test renders interpolations only")
	}
	var d struct {
		DisplayName  string `json:"displayName"`
		MosaicLayout struct {
			Tiles []json.RawMessage `json:"tiles"`
		} `json:"mosaicLayout"`
	}
	if err := json.Unmarshal([]byte(rendered), &d); err != nil {
		t.Fatalf("rendered dashboard is not JSON: %v", err)
	}
	if d.DisplayName == "" || len(d.MosaicLayout.Tiles) == 0 {
		t.Errorf("dashboard = %q with %d tiles, want a name and tiles", d.DisplayName, len(d.MosaicLayout.Tiles))
	}
	for _, want := range []string{"segment-events-deliver", "segment-events-dead-inspect", "segment-ingest", "segment-deliver"} {
		if !strings.Contains(rendered, want) {
			t.Errorf("dashboard never mentions %s", want)
		}
	}
}

// TestTerraformFmt runs terraform fmt -check when a terraform CLI is on PATH;
// it needs no provider and no network.
func TestTerraformFmt(t *testing.T) {
	bin, err := exec.LookPath("terraform")
	if err != nil {
		t.Skip("terraform fmt skipped: no terraform CLI on PATH")
	}
	cmd := exec.Command(bin, "fmt", "-check", "-recursive", "-diff", filepath.Join(repoRoot(t), "infra"))
	if tf := os.Getenv("TF_CLI_CONFIG_FILE"); tf != "" {
		if _, err := os.Stat(tf); err != nil {
			cmd.Env = append(os.Environ(), "TF_CLI_CONFIG_FILE=")
		}
	}
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Errorf("terraform fmt -check infra: %v\n%s", err, out)
	}
}

// TestVariableDefaultsValid evaluates every variable's validation rules with
// the defaults, so a default never fails its own validation at plan time.
func TestVariableDefaultsValid(t *testing.T) {
	cfg := loadTerraform(t)
	checked := 0
	for _, b := range cfg.variableBlocks(t) {
		if _, ok := b.Body.Attributes["default"]; !ok {
			continue
		}
		for _, v := range b.Body.Blocks {
			if v.Type != "validation" {
				continue
			}
			got := cfg.attr(t, v, "condition", nil)
			if !got.IsKnown() || !got.True() {
				t.Errorf("variable %s: validation is %#v for its default, want true", b.Labels[0], got)
			}
			checked++
		}
	}
	if checked == 0 {
		t.Errorf("no variable validation was checked")
	}
}

// TestAPIKeyProtection: the Cloud KMS key and the Secret Manager secret of
// deliver's keyset exist; deliver gets the secret as API_KEY_KEYSET; no one
// but deliver's service account holds a role that decrypts with the key or
// reads the secret (TestIAM pins the grants; this says why); ingest has
// neither, only the public keyset.
func TestAPIKeyProtection(t *testing.T) {
	cfg := loadTerraform(t)
	const (
		key    = "google_kms_crypto_key.api_key_keyset"
		secret = "google_secret_manager_secret.api_key_keyset"
	)
	k := cfg.resource(t, key)
	if got := cfg.str(t, k, "purpose", nil); got != "ENCRYPT_DECRYPT" {
		t.Errorf("%s.purpose = %q, want ENCRYPT_DECRYPT", key, got)
	}
	if got := cfg.str(t, k, "key_ring", nil); got != "{google_kms_key_ring.keys.id}" {
		t.Errorf("%s.key_ring = %q", key, got)
	}
	if got := cfg.str(t, cfg.resource(t, "google_kms_key_ring.keys"), "location", nil); got == "" {
		t.Errorf("key ring has no location")
	}
	if got := cfg.str(t, cfg.resource(t, secret), "secret_id", nil); got != "segment-deliver-api-key-keyset" {
		t.Errorf("%s.secret_id = %q", secret, got)
	}

	deliver := "{google_service_account.deliver.email}"
	decrypts := map[string]bool{"roles/cloudkms.cryptoKeyDecrypter": true, "roles/cloudkms.cryptoKeyEncrypterDecrypter": true,
		"roles/cloudkms.admin": true, "roles/owner": true, "roles/editor": true, "roles/secretmanager.secretAccessor": true,
		"roles/secretmanager.admin": true}
	var deliverDecrypts, deliverReads bool
	for _, g := range grants(t, cfg) {
		member, rest, _ := strings.Cut(g, " ")
		role, target, _ := strings.Cut(rest, " on ")
		if !decrypts[role] {
			continue
		}
		if member != deliver {
			t.Errorf("%s: only deliver's service account may decrypt the keyset or read its secret", g)
			continue
		}
		switch target {
		case "{" + key + ".id}":
			deliverDecrypts = deliverDecrypts || role == "roles/cloudkms.cryptoKeyDecrypter"
		case "{" + secret + ".id}":
			deliverReads = true
		default:
			t.Errorf("%s: want it on the keyset's key or secret, not wider", g)
		}
	}
	if !deliverDecrypts || !deliverReads {
		t.Errorf("deliver decrypts = %v, reads the secret = %v; want both", deliverDecrypts, deliverReads)
	}

	// deliver's API_KEY_KEYSET comes from the secret, latest version.
	container := child(t, child(t, cfg.resource(t, deliverRun), "template"), "containers")
	var found bool
	for _, b := range container.Body.Blocks {
		if b.Type != "env" || cfg.str(t, b, "name", nil) != "API_KEY_KEYSET" {
			continue
		}
		ref := child(t, child(t, b, "value_source"), "secret_key_ref")
		if got := cfg.str(t, ref, "secret", nil); got != "{"+secret+".id}" {
			t.Errorf("API_KEY_KEYSET secret = %q", got)
		}
		if got := cfg.str(t, ref, "version", nil); got != "latest" {
			t.Errorf("API_KEY_KEYSET version = %q, want latest", got)
		}
		found = true
	}
	if !found {
		t.Errorf("deliver has no API_KEY_KEYSET env from Secret Manager")
	}
	// ingest: the public keyset only.
	ingestEnv := runEnv(t, cfg, ingestRun)
	for _, name := range []string{"API_KEY_KEYSET", "API_KEY_KEYSET_KEK"} {
		if _, ok := ingestEnv[name]; ok {
			t.Errorf("ingest has %s: it must not be able to decrypt", name)
		}
	}
	if _, ok := ingestEnv["API_KEY_PUBLIC_KEYSET"]; !ok {
		t.Errorf("ingest has no API_KEY_PUBLIC_KEYSET")
	}
}
