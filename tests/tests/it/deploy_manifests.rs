//! The deployment files — `docker-compose.yml`, `deploy/Dockerfile`, `deploy/compose/`,
//! `deploy/k8s/`, `deploy/rabbitmq/` — are consistent with payhook and with each other:
//! they parse, `docker-compose config` accepts the stack, every path a service mounts
//! exists, the configuration the compose stack generates at start runs a real receiver
//! and worker that ack and apply notifications, every metric an alert, a panel or the
//! autoscaler names is one those live processes expose, the Kubernetes objects have
//! probes, resources and a non-root read-only security context, and the RabbitMQ
//! policies do not fight the arguments payhook declares its queues with.

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use payhook_shared::clock::SystemClock;
use payhook_shared::config::{Secret, Settings};
use payhook_shared::topology::Names;
use payhook_testkit::db::TestDb;
use payhook_testkit::harness::{TestReceiver, amqp_url, eventually_async, unique_prefix};
use payhook_testkit::metric_names::{
    PROMETHEUS, RABBITMQ, families_of, family, metrics_of, registered,
};
use payhook_testkit::worker::{TestWorker, worker_settings};
use serde_json::Value as Json;
use serde_yaml_ng::Value as Yaml;

fn root() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("..")
        .canonicalize()
        .expect("repository root")
}

fn read(path: &str) -> String {
    let file = root().join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// Every YAML document of a file, with `<<: *anchor` merges applied.
fn yaml_docs(path: &str) -> Vec<Yaml> {
    let text = read(path);
    serde_yaml_ng::Deserializer::from_str(&text)
        .map(|doc| {
            let mut value = <Yaml as serde::Deserialize>::deserialize(doc)
                .unwrap_or_else(|e| panic!("{path}: not YAML: {e}"));
            value
                .apply_merge()
                .unwrap_or_else(|e| panic!("{path}: merge keys: {e}"));
            value
        })
        .filter(|doc| !doc.is_null())
        .collect()
}

fn yaml(path: &str) -> Yaml {
    let mut docs = yaml_docs(path);
    assert_eq!(docs.len(), 1, "{path}: one document expected");
    docs.remove(0)
}

fn json(path: &str) -> Json {
    serde_json::from_str(&read(path)).unwrap_or_else(|e| panic!("{path}: not JSON: {e}"))
}

fn str_of<'a>(value: &'a Yaml, what: &str) -> &'a str {
    value
        .as_str()
        .unwrap_or_else(|| panic!("{what}: a string expected, got {value:?}"))
}

fn seq<'a>(value: &'a Yaml, what: &str) -> &'a [Yaml] {
    value
        .as_sequence()
        .map(Vec::as_slice)
        .unwrap_or_else(|| panic!("{what}: a list expected, got {value:?}"))
}

/// Repository-relative paths of the files under `dir` (recursively).
fn files_under(dir: &str) -> Vec<String> {
    fn walk(base: &Path, dir: &Path, out: &mut Vec<String>) {
        let entries = std::fs::read_dir(dir).unwrap_or_else(|e| panic!("{}: {e}", dir.display()));
        for entry in entries {
            let path = entry.expect("directory entry").path();
            // Someone's local npm install is not a deployment file.
            if path.ends_with("node_modules") {
                continue;
            }
            if path.is_dir() {
                walk(base, &path, out);
            } else {
                let relative = path.strip_prefix(base).expect("under the root");
                out.push(relative.to_string_lossy().into_owned());
            }
        }
    }
    let mut out = Vec::new();
    walk(&root(), &root().join(dir), &mut out);
    out.sort();
    out
}

// ── parsing ─────────────────────────────────────────────────────────────────────────

#[test]
fn every_yaml_and_json_file_parses() {
    let mut parsed = Vec::new();
    let mut files = files_under("deploy");
    files.push("docker-compose.yml".into());
    for file in files {
        if file.ends_with(".yml") || file.ends_with(".yaml") {
            assert!(!yaml_docs(&file).is_empty(), "{file}: empty");
            parsed.push(file);
        } else if file.ends_with(".json") {
            json(&file);
            parsed.push(file);
        }
    }
    for expected in [
        "docker-compose.yml",
        "deploy/prometheus/alerts.yml",
        "deploy/grafana/payhook-dashboard.json",
        "deploy/compose/prometheus.yml",
        "deploy/rabbitmq/definitions.json",
        "deploy/k8s/base/kustomization.yaml",
        "deploy/k8s/base/receiver.yaml",
        "deploy/k8s/base/worker.yaml",
    ] {
        assert!(
            parsed.iter().any(|f| f == expected),
            "{expected} not parsed"
        );
    }
}

// ── docker compose ──────────────────────────────────────────────────────────────────

/// `docker-compose config -q` (v1.29, Debian's package; `scripts/services` installs
/// it) must accept the file, with and without the `tools` profile; and `docker compose`
/// (v2) too where it exists. A missing v1 tool is a failure, not a skip.
#[test]
fn docker_compose_accepts_the_stack() {
    let run = |program: &str, args: &[&str]| {
        Command::new(program)
            .args(args)
            .current_dir(root())
            .output()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot run {program}: {e}. Install it: apt-get install docker-compose \
                     (scripts/services does it when root)"
                )
            })
    };
    for profile in [&[][..], &["--profile", "tools"][..]] {
        let mut args = vec!["-f", "docker-compose.yml"];
        args.extend_from_slice(profile);
        args.extend(["config", "-q"]);
        let out = run("docker-compose", &args);
        assert!(
            out.status.success(),
            "docker-compose {args:?}: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // Profiles (docker-compose 1.29 lists profiled services too: read the file).
    let compose = compose();
    let services = services(&compose);
    assert_eq!(services["admin"]["profiles"][0].as_str(), Some("tools"));
    for name in ["sim", "receiver", "worker", "prometheus", "grafana"] {
        assert!(
            services[name].get("profiles").is_none(),
            "{name} starts with a plain `docker compose up`"
        );
    }
    let v2 = Command::new("docker")
        .args(["compose", "version"])
        .output()
        .is_ok_and(|out| out.status.success());
    if v2 {
        let out = run(
            "docker",
            &["compose", "-f", "docker-compose.yml", "config", "-q"],
        );
        assert!(
            out.status.success(),
            "docker compose config: {}",
            String::from_utf8_lossy(&out.stderr)
        );
    }
}

fn compose() -> Yaml {
    yaml("docker-compose.yml")
}

fn services(compose: &Yaml) -> &serde_yaml_ng::Mapping {
    compose["services"].as_mapping().expect("services")
}

/// `(source, target, read_only)` of a service's short-syntax volumes.
fn volumes(service: &Yaml) -> Vec<(String, String, bool)> {
    let Some(list) = service["volumes"].as_sequence() else {
        return Vec::new();
    };
    list.iter()
        .map(|v| {
            let text = str_of(v, "volume");
            let parts: Vec<&str> = text.split(':').collect();
            assert!(
                (2..=3).contains(&parts.len()),
                "volume {text:?}: source:target[:ro]"
            );
            (
                parts[0].to_owned(),
                parts[1].to_owned(),
                parts.get(2) == Some(&"ro"),
            )
        })
        .collect()
}

#[test]
fn compose_services_are_wired_and_every_mounted_file_exists() {
    let compose = compose();
    let services = services(&compose);
    let names: BTreeSet<&str> = services.keys().filter_map(Yaml::as_str).collect();
    // scripts/services starts services by name, on the ports the tests use, and the
    // tests connect to the `test` database (created by the compose init script).
    for line in read("scripts/services").lines() {
        let Some(args) = line.strip_prefix("ensure ") else {
            continue;
        };
        let args: Vec<&str> = args.split_whitespace().collect();
        let (port, service) = (args[0], args[3]);
        let ports = seq(&services[service]["ports"], "ports");
        assert!(
            ports
                .iter()
                .any(|p| str_of(p, "port") == format!("127.0.0.1:{port}:{port}")),
            "scripts/services expects {service} on 127.0.0.1:{port}"
        );
    }
    let test_database = payhook_testkit::db::database_url();
    let test_database = test_database
        .split('?')
        .next()
        .and_then(|url| url.rsplit('/').next())
        .expect("database name");
    assert!(
        read("deploy/compose/postgres-init.sql")
            .contains(&format!("CREATE DATABASE {test_database};")),
        "the compose PostgreSQL lacks the tests' database {test_database}"
    );
    for wanted in [
        "postgres",
        "redis",
        "rabbitmq",
        "rabbitmq-policies",
        "keys",
        "receiver",
        "worker",
        "sim",
        "admin",
        "prometheus",
        "grafana",
    ] {
        assert!(names.contains(wanted), "service {wanted} missing");
    }
    let named_volumes = compose["volumes"].as_mapping().expect("named volumes");
    for (name, service) in services {
        let name = str_of(name, "service name");
        for (source, target, _) in volumes(service) {
            assert!(target.starts_with('/'), "{name}: target {target}");
            if source.starts_with('.') {
                assert!(
                    root().join(&source).exists(),
                    "{name}: mounts {source}, which does not exist"
                );
            } else {
                assert!(
                    named_volumes.contains_key(source.as_str()),
                    "{name}: volume {source} not declared"
                );
            }
        }
        if let Some(ports) = service["ports"].as_sequence() {
            for port in ports {
                let port = str_of(port, "port");
                assert!(
                    port.starts_with("127.0.0.1:"),
                    "{name}: {port} is published beyond localhost"
                );
            }
        }
        if let Some(depends) = service["depends_on"].as_mapping() {
            for (other, how) in depends {
                let other = str_of(other, "depends_on");
                let condition = str_of(&how["condition"], "condition");
                let target = &services[other];
                match condition {
                    "service_healthy" => assert!(
                        target["healthcheck"]["test"].is_sequence(),
                        "{name} waits for {other} to be healthy: it has no healthcheck"
                    ),
                    "service_completed_successfully" => assert_eq!(
                        target["restart"].as_str(),
                        Some("no"),
                        "{name} waits for the one-shot {other}, which must not restart"
                    ),
                    other => panic!("{name}: condition {other}"),
                }
            }
        }
        if let Some(build) = service.get("build") {
            let dockerfile = str_of(&build["dockerfile"], "dockerfile");
            let target = str_of(&build["target"], "target");
            assert!(
                dockerfile_stages().contains(target),
                "{name}: target {target} is not a stage of {dockerfile}"
            );
            assert_eq!(dockerfile, "deploy/Dockerfile");
        }
    }
    // payhook's processes read the generated configuration from the shared volume.
    // The receiver reads its own: the same without the worker's signing keys.
    for name in ["receiver", "worker", "admin", "sim", "keys"] {
        let service = &services[name];
        let expected = if name == "receiver" {
            "/var/lib/payhook/receiver.toml"
        } else {
            "/var/lib/payhook/payhook.toml"
        };
        assert_eq!(
            service["environment"]["PAYHOOK_CONFIG"].as_str(),
            Some(expected),
            "{name}"
        );
        assert!(
            volumes(service)
                .iter()
                .any(|(s, t, _)| s == "payhook-demo" && t == "/var/lib/payhook"),
            "{name}: payhook-demo volume"
        );
    }
    // Both configurations are checked before either process starts, each with its
    // own file; both processes wait for the check.
    let check = seq(
        &services["check-config"]["entrypoint"],
        "check-config entrypoint",
    );
    let script = str_of(&check[2], "check-config script");
    for (binary, file) in [
        ("payhook-worker", "/var/lib/payhook/payhook.toml"),
        ("payhook-receiver", "/var/lib/payhook/receiver.toml"),
    ] {
        assert!(
            script.contains(&format!("PAYHOOK_CONFIG={file} {binary} check-config")),
            "{script}"
        );
    }
    assert!(!script.contains("--connect"), "{script}");
    for name in ["receiver", "worker"] {
        assert_eq!(
            services[name]["depends_on"]["check-config"]["condition"].as_str(),
            Some("service_completed_successfully"),
            "{name} waits for the check"
        );
    }
    for name in ["receiver", "worker"] {
        assert_eq!(services[name]["read_only"].as_bool(), Some(true), "{name}");
        assert!(
            volumes(&services[name]).iter().all(|(_, _, ro)| *ro),
            "{name}: read-only mounts"
        );
    }
    let sim: Vec<&str> = seq(&services["sim"]["command"], "sim command")
        .iter()
        .map(|a| str_of(a, "sim argument"))
        .collect();
    let arg = |name: &str| {
        let at = sim.iter().position(|a| *a == name).expect(name);
        sim[at + 1]
    };
    assert_eq!(sim[0], "trickle");
    assert_eq!(arg("--notify-base"), "http://receiver:8080");
    assert_eq!(arg("--listen"), "0.0.0.0:8090");
    assert_eq!(arg("--keys-dir"), "/var/lib/payhook/keys");
    assert_eq!(
        str_of(&services["keys"]["entrypoint"][1], "keys entrypoint"),
        "/etc/payhook/compose/keys.sh"
    );
    assert!(
        volumes(&services["keys"])
            .iter()
            .any(|(s, t, _)| s == "./deploy/compose" && t == "/etc/payhook/compose")
    );
}

#[test]
fn prometheus_and_grafana_in_compose_point_at_the_stack() {
    let compose = compose();
    let services = services(&compose);
    let config = yaml("deploy/compose/prometheus.yml");
    let mut targets = BTreeMap::new();
    for job in seq(&config["scrape_configs"], "scrape_configs") {
        let name = str_of(&job["job_name"], "job_name").to_owned();
        let path = job["metrics_path"]
            .as_str()
            .unwrap_or("/metrics")
            .to_owned();
        for target in seq(&job["static_configs"][0]["targets"], "targets") {
            targets.insert(
                name.clone(),
                (str_of(target, "target").to_owned(), path.clone()),
            );
        }
        if name == "rabbitmq-detailed" {
            let families: Vec<&str> = seq(&job["params"]["family"], "family")
                .iter()
                .map(|f| str_of(f, "family"))
                .collect();
            assert_eq!(families, ["queue_coarse_metrics", "queue_consumer_count"]);
            assert_eq!(path, "/metrics/detailed");
        }
    }
    assert_eq!(targets["payhook-receiver"].0, "receiver:8080");
    assert_eq!(targets["payhook-worker"].0, "worker:8081");
    assert_eq!(targets["rabbitmq"].0, "rabbitmq:15692");
    assert_eq!(targets["rabbitmq-detailed"].0, "rabbitmq:15692");
    for (target, _) in targets.values() {
        let host = target.split(':').next().expect("host");
        assert!(services.contains_key(host), "scrape target {target}");
    }
    // The alert rules are mounted where rule_files looks.
    let rules = str_of(&config["rule_files"][0], "rule_files");
    let dir = rules.strip_suffix("*.yml").expect("a *.yml glob");
    assert!(
        volumes(&services["prometheus"])
            .iter()
            .any(|(s, t, _)| s == "./deploy/prometheus/alerts.yml" && t.starts_with(dir))
    );
    assert!(
        volumes(&services["prometheus"])
            .iter()
            .any(|(s, t, _)| s == "./deploy/compose/prometheus.yml"
                && t == "/etc/prometheus/prometheus.yml")
    );
    // RabbitMQ's plugins: management UI and Prometheus.
    let plugins = read("deploy/rabbitmq/enabled_plugins");
    assert!(plugins.contains("rabbitmq_management") && plugins.contains("rabbitmq_prometheus"));
    // Grafana: the datasource is the stack's Prometheus, the dashboard file is mounted
    // in the directory the provider loads.
    let datasources = yaml("deploy/compose/grafana/datasources/prometheus.yml");
    assert_eq!(
        datasources["datasources"][0]["url"].as_str(),
        Some("http://prometheus:9090")
    );
    assert_eq!(
        datasources["datasources"][0]["isDefault"].as_bool(),
        Some(true)
    );
    let provider = yaml("deploy/compose/grafana/dashboards/payhook.yml");
    let dir = str_of(&provider["providers"][0]["options"]["path"], "path");
    let grafana = volumes(&services["grafana"]);
    assert!(grafana.iter().any(|(s, t, _)| {
        s == "./deploy/grafana/payhook-dashboard.json"
            && Path::new(t).parent() == Some(Path::new(dir))
    }));
    assert!(
        grafana
            .iter()
            .any(|(s, t, _)| s == "./deploy/compose/grafana/dashboards"
                && t == "/etc/grafana/provisioning/dashboards")
    );
    assert!(
        grafana
            .iter()
            .any(|(s, t, _)| s == "./deploy/compose/grafana/datasources"
                && t == "/etc/grafana/provisioning/datasources")
    );
}

// ── the Dockerfile ──────────────────────────────────────────────────────────────────

fn dockerfile_stages() -> BTreeSet<String> {
    read("deploy/Dockerfile")
        .lines()
        .filter(|l| l.starts_with("FROM "))
        .filter_map(|l| l.split(" AS ").nth(1))
        .map(|s| s.trim().to_owned())
        .collect()
}

#[test]
fn the_dockerfile_builds_the_workspace_binaries_as_a_non_root_user() {
    let text = read("deploy/Dockerfile");
    // What cargo says the packages and binaries are.
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let out = Command::new(cargo)
        .args([
            "metadata",
            "--no-deps",
            "--format-version",
            "1",
            "--offline",
        ])
        .current_dir(root())
        .output()
        .expect("cargo metadata runs");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    let metadata: Json = serde_json::from_slice(&out.stdout).expect("metadata JSON");
    let mut bins: BTreeMap<String, String> = BTreeMap::new();
    for package in metadata["packages"].as_array().expect("packages") {
        let name = package["name"].as_str().expect("package name");
        for target in package["targets"].as_array().expect("targets") {
            if target["kind"]
                .as_array()
                .expect("kind")
                .iter()
                .any(|k| k == "bin")
            {
                bins.insert(
                    target["name"].as_str().expect("bin").to_owned(),
                    name.to_owned(),
                );
            }
        }
    }
    let words: Vec<&str> = text.split_whitespace().collect();
    let flag_values = |flag: &str| -> BTreeSet<String> {
        words
            .windows(2)
            .filter(|w| w[0] == flag)
            .map(|w| w[1].to_owned())
            .collect()
    };
    let built = flag_values("--bin");
    let wanted: BTreeSet<String> = [
        "payhook-receiver",
        "payhook-worker",
        "payhook-admin",
        "payhook-sim",
    ]
    .map(String::from)
    .into();
    assert_eq!(built, wanted, "the binaries built");
    let packages = flag_values("-p");
    for bin in &built {
        let package = bins
            .get(bin)
            .unwrap_or_else(|| panic!("no binary {bin} in the workspace"));
        assert!(
            packages.contains(package),
            "{bin} is in {package}, not built with -p"
        );
        assert!(
            text.contains(&format!("target/release/{bin}")),
            "{bin} not copied out of the build"
        );
    }
    assert!(text.contains("--locked"), "the build pins Cargo.lock");
    for stage in ["builder", "runtime", "receiver", "worker", "sim", "payhook"] {
        assert!(dockerfile_stages().contains(stage), "stage {stage}");
    }
    assert!(text.contains("ARG RUST_IMAGE=rust:1.95-bookworm"));
    assert!(text.contains("ARG RUNTIME_IMAGE=debian:bookworm-slim"));
    assert!(text.contains("--mount=type=cache,target=/usr/local/cargo/registry"));
    assert!(text.contains("USER 10001:10001"), "non-root runtime");
    // Every COPY source of the build exists, and .dockerignore does not hide it.
    let ignored: Vec<String> = read(".dockerignore")
        .lines()
        .filter(|l| !l.starts_with('#') && !l.trim().is_empty())
        .map(|l| l.trim().trim_end_matches('/').to_owned())
        .collect();
    for required in ["target", ".git"] {
        assert!(
            ignored.iter().any(|i| i == required),
            ".dockerignore: {required}"
        );
    }
    for line in text
        .lines()
        .filter(|l| l.starts_with("COPY ") && !l.contains("--from"))
    {
        let parts: Vec<&str> = line.split_whitespace().collect();
        for source in &parts[1..parts.len() - 1] {
            assert!(root().join(source).exists(), "COPY {source}: missing");
            assert!(
                !ignored.iter().any(|i| i == source),
                "COPY {source}: excluded by .dockerignore"
            );
        }
    }
}

// ── the configuration the compose stack generates, run for real ─────────────────────

/// Runs deploy/compose/keys.sh as the `keys` service does (with the freshly built
/// payhook-sim), into a private directory; returns the directory.
fn run_keys_script() -> PathBuf {
    let state = std::env::temp_dir().join(format!("payhook-compose-{}", uuid::Uuid::new_v4()));
    std::fs::create_dir_all(&state).expect("state dir");
    let sim = payhook_testkit::bins::path("payhook-sim");
    let path = format!(
        "{}:{}",
        sim.parent().expect("bin dir").display(),
        std::env::var("PATH").unwrap_or_default()
    );
    let out = Command::new("/bin/sh")
        .arg(root().join("deploy/compose/keys.sh"))
        .env("PATH", path)
        .env("PAYHOOK_STATE_DIR", &state)
        .env(
            "PAYHOOK_BASE_CONFIG",
            root().join("deploy/compose/payhook.toml"),
        )
        .output()
        .expect("keys.sh runs");
    assert!(
        out.status.success(),
        "keys.sh: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    state
}

struct TempDir(PathBuf);

impl Drop for TempDir {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.0);
    }
}

/// Every PromQL expression (or metric name) the deployment files use, with its origin.
fn metric_uses() -> Vec<(String, String)> {
    let mut uses = Vec::new();
    let mut rules = |groups: &Yaml, file: &str| {
        for group in seq(groups, "groups") {
            for rule in seq(&group["rules"], "rules") {
                let name = str_of(&rule["alert"], "alert");
                uses.push((
                    format!("{file} {name}"),
                    str_of(&rule["expr"], "expr").to_owned(),
                ));
            }
        }
    };
    rules(
        &yaml("deploy/prometheus/alerts.yml")["groups"],
        "alerts.yml",
    );
    let operator = yaml("deploy/k8s/monitoring/prometheusrule.yaml");
    rules(&operator["spec"]["groups"], "prometheusrule.yaml");
    let dashboard = json("deploy/grafana/payhook-dashboard.json");
    for panel in dashboard["panels"].as_array().expect("panels") {
        for target in panel["targets"].as_array().expect("targets") {
            uses.push((
                format!("dashboard {}", panel["title"]),
                target["expr"].as_str().expect("expr").to_owned(),
            ));
        }
    }
    for file in files_under("deploy/k8s") {
        for doc in yaml_docs(&file) {
            if doc["kind"].as_str() != Some("HorizontalPodAutoscaler") {
                continue;
            }
            for metric in seq(&doc["spec"]["metrics"], "metrics") {
                for kind in ["pods", "object", "external"] {
                    if let Some(name) = metric[kind]["metric"]["name"].as_str() {
                        uses.push((format!("{file} HPA"), name.to_owned()));
                    }
                }
            }
        }
    }
    uses
}

/// The compose stack's generated configuration (deploy/compose/payhook.toml + the
/// merchants `payhook-sim keys` writes) is valid, and with only the addresses and names
/// changed to the test's own, it runs a receiver and a worker that ack and apply the
/// notifications `payhook-sim send` signs with the generated keys. Their live
/// `/metrics`, with the names registered in the source, cover every metric the alerts,
/// the dashboard, the PrometheusRule and the autoscaler name.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_compose_configuration_runs_and_every_metric_used_is_exported() {
    let state = TempDir(run_keys_script());
    let config = state.0.join("payhook.toml");
    let generated = Settings::load_from(Some(&config)).expect("generated configuration is valid");
    // What the stack relies on.
    assert_eq!(
        generated.amqp.prefix, "payhook",
        "alerts and policies assume it"
    );
    assert_eq!(generated.receiver.listen.port(), 8080);
    assert_eq!(generated.worker.admin_listen.port(), 8081);
    assert_eq!(
        generated.reconcile.alipay_gateway,
        "http://sim:8090/gateway.do"
    );
    assert_eq!(generated.reconcile.wechat_base, "http://sim:8090");
    for merchants in [
        generated.alipay.keys().collect::<Vec<_>>(),
        generated.wechat_v2.keys().collect(),
        generated.wechat_v3.keys().collect(),
    ] {
        assert_eq!(merchants, ["m1"]);
    }
    let text = std::fs::read_to_string(&config).expect("config");
    assert!(text.starts_with("# ─") && text.contains("TEST / DEMO ONLY"));
    for host in [
        "@rabbitmq:5672",
        "redis://redis:6379",
        "@postgres:5432/payhook",
    ] {
        assert!(text.contains(host), "{host}");
    }

    // The admin API's token: generated into the volume, named by the worker's
    // configuration and by the admin service.
    let token = std::fs::read_to_string(state.0.join("admin-token")).expect("admin token");
    assert!(
        token.len() == 64 && token.chars().all(|c| c.is_ascii_hexdigit()),
        "{} characters",
        token.len()
    );
    let tokens = &generated.worker.admin_tokens;
    assert_eq!(tokens.len(), 1);
    assert_eq!(tokens[0].scope, payhook_shared::config::AdminScope::Operate);
    assert_eq!(
        tokens[0].token.0,
        payhook_shared::config::Material::File {
            file: "/var/lib/payhook/admin-token".into()
        }
    );
    let compose_file = compose();
    let admin_env = &services(&compose_file)["admin"]["environment"];
    assert_eq!(
        str_of(&admin_env["PAYHOOK_ADMIN_TOKEN_FILE"], "admin token file"),
        "/var/lib/payhook/admin-token"
    );
    assert_eq!(
        str_of(&admin_env["PAYHOOK_ADMIN_URL"], "admin API"),
        "http://worker:8081"
    );

    // The receiver's configuration is the same without the worker's signing keys.
    assert!(generated.alipay["m1"].app_private_key.is_some());
    assert!(generated.wechat_v3["m1"].merchant_private_key.is_some());
    let for_receiver = Settings::load_from(Some(&state.0.join("receiver.toml")))
        .expect("the receiver's configuration is valid");
    assert!(for_receiver.alipay["m1"].app_private_key.is_none());
    assert!(for_receiver.wechat_v3["m1"].merchant_private_key.is_none());
    assert_eq!(
        payhook_receiver::signing_keys::check(&for_receiver)
            .expect("the receiver accepts it")
            .len(),
        0
    );
    assert_eq!(
        str_of(
            &services(&compose())["receiver"]["environment"]["PAYHOOK_CONFIG"],
            "receiver PAYHOOK_CONFIG"
        ),
        "/var/lib/payhook/receiver.toml"
    );

    // The same configurations on the test's services, names and ports.
    let prefix = unique_prefix();
    let local = |mut settings: Settings| {
        settings.receiver.listen = "127.0.0.1:0".parse().expect("address");
        settings.receiver.workers = 1;
        settings.amqp.url = Secret::inline(amqp_url());
        settings.amqp.prefix = prefix.clone();
        settings.reconcile.alipay_gateway = "http://127.0.0.1:9/gateway.do".into();
        settings.reconcile.wechat_base = "http://127.0.0.1:9".into();
        settings
    };
    let receiver_settings = local(for_receiver.clone());
    let receiver = TestReceiver::spawn(receiver_settings.clone(), Arc::new(SystemClock)).await;
    let db = TestDb::new().await;
    let worker = TestWorker::spawn(&worker_settings(
        &local(generated.clone()),
        db.settings.clone(),
    ))
    .await;

    // The compose health checks, on the live processes' ports.
    let compose = compose();
    let services = services(&compose);
    for (service, base, port) in [
        ("receiver", &receiver.base_url, "8080"),
        ("worker", &worker.admin_url, "8081"),
    ] {
        let test = seq(&services[service]["healthcheck"]["test"], "test");
        assert_eq!(str_of(&test[0], "CMD"), "CMD");
        let live = base.rsplit(':').next().expect("port");
        let command: Vec<String> = test[1..]
            .iter()
            .map(|a| str_of(a, "arg").replace(&format!("/{port} "), &format!("/{live} ")))
            .collect();
        let status = Command::new(&command[0])
            .args(&command[1..])
            .status()
            .expect("health check runs");
        assert!(
            status.success(),
            "{service}'s health check fails on a ready process"
        );
        let closed: Vec<String> = command
            .iter()
            .map(|a| a.replace(&format!("/{live} "), "/9 "))
            .collect();
        let status = Command::new(&closed[0])
            .args(&closed[1..])
            .status()
            .expect("health check runs");
        assert!(
            !status.success(),
            "{service}'s health check passes on a closed port"
        );
    }

    // Notifications signed with the generated keys, sent as the README says.
    let keys_dir = state.0.join("keys");
    for (kind, path) in [
        ("alipay-payment", "/notify/alipay/m1"),
        ("wechat-v2-payment", "/notify/wechat/v2/m1"),
        ("wechat-v3-transaction", "/notify/wechat/v3/m1"),
    ] {
        let out = Command::new(payhook_testkit::bins::path("payhook-sim"))
            .args(["send", "--keys-dir"])
            .arg(&keys_dir)
            .args(["--kind", kind, "--url", &receiver.url(path)])
            .output()
            .expect("payhook-sim send runs");
        assert!(
            out.status.success(),
            "{kind}: {}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    }
    // A forged one, so that the verify-failure family has a sample.
    let forged = reqwest::Client::new()
        .post(receiver.url("/notify/alipay/m1"))
        .header("content-type", "application/x-www-form-urlencoded")
        .body("notify_id=x&sign_type=RSA2&sign=AAAA&trade_status=TRADE_SUCCESS")
        .send()
        .await
        .expect("forged request answered");
    assert!(!forged.status().is_success() || forged.text().await.unwrap_or_default() != "success");
    let applied = eventually_async(Duration::from_secs(20), || async {
        worker.metric("payhook_worker_events_total{outcome=\"applied\"}") >= 3.0
    })
    .await;
    assert!(applied, "the three notifications were not applied");

    let get = |url: String| async move {
        let answer = reqwest::get(&url)
            .await
            .unwrap_or_else(|e| panic!("{url}: {e}"));
        assert!(answer.status().is_success(), "{url}: {}", answer.status());
        answer.text().await.expect("exposition")
    };
    let receiver_live = families_of(&get(receiver.url("/metrics")).await);
    let worker_live = families_of(&get(format!("{}/metrics", worker.admin_url)).await);
    for expected in [
        "payhook_notifications",
        "payhook_verify_failures",
        "payhook_ack_latency_seconds",
        "payhook_broker_up",
        "payhook_receiver_in_flight",
    ] {
        assert!(
            receiver_live.contains(expected),
            "receiver /metrics lacks {expected}"
        );
    }
    for expected in [
        "payhook_worker_events",
        "payhook_notify_to_applied_seconds",
        "payhook_outbox_oldest_pending_seconds",
        "payhook_worker_broker_up",
    ] {
        assert!(
            worker_live.contains(expected),
            "worker /metrics lacks {expected}"
        );
    }
    let mut exported: BTreeSet<String> = registered();
    exported.extend(receiver_live);
    exported.extend(worker_live);

    let uses = metric_uses();
    assert!(
        uses.iter().any(|(who, _)| who.contains("HPA")),
        "no HPA metric found"
    );
    for (who, expr) in uses {
        let names = metrics_of(&expr);
        assert!(!names.is_empty(), "{who}: names no metric: {expr}");
        for name in names {
            let known = if name.starts_with("rabbitmq_") {
                RABBITMQ.contains(&name.as_str())
            } else if PROMETHEUS.contains(&name.as_str()) {
                true
            } else {
                exported.contains(family(&name))
            };
            assert!(
                known,
                "{who}: {name} is not exported (exported: {exported:?})"
            );
        }
    }

    worker.stop().await;
    receiver.stop().await;
}

// ── Kubernetes ──────────────────────────────────────────────────────────────────────

/// Every complete object under deploy/k8s (kustomize patches are partial: left out).
fn k8s_objects() -> Vec<(String, Yaml)> {
    let mut patches = BTreeSet::new();
    for dir in ["deploy/k8s/base", "deploy/k8s/monitoring"] {
        let k = yaml(&format!("{dir}/kustomization.yaml"));
        for patch in k["patches"].as_sequence().map(Vec::as_slice).unwrap_or(&[]) {
            patches.insert(format!("{dir}/{}", str_of(&patch["path"], "patch")));
        }
    }
    assert!(
        !patches.is_empty(),
        "the monitoring overlay patches the HPA"
    );
    files_under("deploy/k8s")
        .into_iter()
        .filter(|f| f.ends_with(".yaml") && !f.ends_with("kustomization.yaml"))
        .filter(|f| !patches.contains(f))
        .flat_map(|f| yaml_docs(&f).into_iter().map(move |d| (f.clone(), d)))
        .collect()
}

fn of_kind<'a>(objects: &'a [(String, Yaml)], kind: &str) -> Vec<&'a Yaml> {
    objects
        .iter()
        .filter(|(_, o)| o["kind"].as_str() == Some(kind))
        .map(|(_, o)| o)
        .collect()
}

fn named<'a>(objects: &'a [(String, Yaml)], kind: &str, name: &str) -> &'a Yaml {
    of_kind(objects, kind)
        .into_iter()
        .find(|o| o["metadata"]["name"].as_str() == Some(name))
        .unwrap_or_else(|| panic!("{kind} {name} missing"))
}

/// `selector ⊆ labels`.
fn selects(selector: &Yaml, labels: &Yaml) -> bool {
    let selector = selector.as_mapping().expect("selector");
    !selector.is_empty() && selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// How long each binary drains after SIGTERM, read from its source.
fn drain_secs() -> (u64, u64) {
    let receiver = read("receiver/src/startup.rs");
    let receiver = receiver
        .split("const DRAIN: Duration = Duration::from_secs(")
        .nth(1)
        .and_then(|rest| rest.split(')').next())
        .and_then(|n| n.parse().ok())
        .expect("receiver DRAIN constant");
    let worker = read("worker/src/consumer.rs");
    let worker = worker
        .split("tokio::time::timeout(Duration::from_secs(")
        .filter_map(|rest| {
            let (n, after) = rest.split_once(')')?;
            after
                .trim_start()
                .starts_with(", tracker.wait()")
                .then(|| n.parse().ok())?
        })
        .next()
        .expect("worker in-flight drain timeout");
    (receiver, worker)
}

#[test]
fn kubernetes_deployments_have_probes_resources_and_a_locked_down_context() {
    let objects = k8s_objects();
    let (receiver_drain, worker_drain) = drain_secs();
    let deployments = of_kind(&objects, "Deployment");
    assert_eq!(deployments.len(), 2, "receiver and worker");
    let config = named(&objects, "ConfigMap", "payhook-config");
    let toml = str_of(&config["data"]["payhook.toml"], "payhook.toml");
    let settings = Settings::from_toml(toml).expect("the ConfigMap's payhook.toml is valid");
    let example_secrets: BTreeMap<String, BTreeSet<String>> =
        yaml_docs("deploy/k8s/base/secret.example.yaml")
            .iter()
            .map(|s| {
                let keys = s["stringData"]
                    .as_mapping()
                    .expect("stringData")
                    .iter()
                    .map(|(k, v)| {
                        assert!(
                            str_of(v, "placeholder").contains("REPLACE_ME"),
                            "secret.example.yaml: {k:?} must be an obvious placeholder"
                        );
                        str_of(k, "key").to_owned()
                    })
                    .collect();
                (str_of(&s["metadata"]["name"], "name").to_owned(), keys)
            })
            .collect();
    let env_refs: BTreeSet<String> = toml
        .split("{ env = \"")
        .skip(1)
        .map(|rest| rest.split('"').next().expect("env name").to_owned())
        .collect();
    let file_refs: BTreeSet<String> = toml
        .split("{ file = \"")
        .skip(1)
        .map(|rest| rest.split('"').next().expect("file path").to_owned())
        .collect();
    assert!(!file_refs.is_empty() && !env_refs.is_empty());
    // The signing private keys: files the worker mounts and the receiver must not.
    let signing_refs: BTreeSet<String> = settings
        .alipay
        .values()
        .filter_map(|a| a.app_private_key.as_ref())
        .chain(
            settings
                .wechat_v3
                .values()
                .filter_map(|m| m.merchant_private_key.as_ref()),
        )
        .map(|secret| match &secret.0 {
            payhook_shared::config::Material::File { file } => file.display().to_string(),
            _ => panic!("signing keys in the ConfigMap are files of a Secret"),
        })
        .collect();
    assert!(!signing_refs.is_empty());
    assert!(
        !toml.contains("-----BEGIN"),
        "no key material in the ConfigMap"
    );

    for deployment in deployments {
        let name = str_of(&deployment["metadata"]["name"], "name");
        let (component, drain, port, needs_env): (_, _, _, &[&str]) = match name {
            "payhook-receiver" => (
                "receiver",
                receiver_drain,
                settings.receiver.listen.port(),
                &["PAYHOOK_AMQP_URL"],
            ),
            "payhook-worker" => (
                "worker",
                worker_drain,
                settings.worker.admin_listen.port(),
                &[
                    "PAYHOOK_AMQP_URL",
                    "PAYHOOK_POSTGRES_URL",
                    "PAYHOOK_REDIS_URL",
                    "PAYHOOK_ADMIN_TOKEN_OPERATOR",
                ],
            ),
            other => panic!("unexpected Deployment {other}"),
        };
        let spec = &deployment["spec"];
        let pod = &spec["template"]["spec"];
        assert!(
            selects(
                &spec["selector"]["matchLabels"],
                &spec["template"]["metadata"]["labels"]
            ),
            "{name}: selector"
        );
        assert_eq!(
            pod["securityContext"]["runAsNonRoot"].as_bool(),
            Some(true),
            "{name}"
        );
        assert!(
            pod["securityContext"]["runAsUser"]
                .as_u64()
                .is_some_and(|u| u > 0),
            "{name}"
        );
        assert_eq!(
            pod["automountServiceAccountToken"].as_bool(),
            Some(false),
            "{name}"
        );
        let grace = pod["terminationGracePeriodSeconds"]
            .as_u64()
            .expect("grace period");
        let containers = seq(&pod["containers"], "containers");
        assert_eq!(containers.len(), 1, "{name}");
        let c = &containers[0];
        // The configuration is checked before the server starts, by the same binary
        // with the same environment and files.
        let init = seq(&pod["initContainers"], "initContainers");
        assert_eq!(init.len(), 1, "{name}: one init container");
        let check = &init[0];
        assert_eq!(check["name"].as_str(), Some("check-config"), "{name}");
        assert_eq!(check["image"], c["image"], "{name}: the same image");
        assert_eq!(
            seq(&check["args"], "args")
                .iter()
                .map(|a| a.as_str().unwrap_or(""))
                .collect::<Vec<_>>(),
            ["check-config"],
            "{name}: without --connect (an outage must not block the start)"
        );
        for key in ["env", "volumeMounts", "securityContext"] {
            assert_eq!(check[key], c[key], "{name}: check-config's {key}");
        }
        let pre_stop: u64 = c["lifecycle"]["preStop"]["exec"]["command"]
            .as_sequence()
            .and_then(|cmd| cmd.get(1))
            .and_then(Yaml::as_str)
            .map_or(0, |s| s.parse().expect("preStop sleep seconds"));
        assert!(
            grace > pre_stop + drain,
            "{name}: terminationGracePeriodSeconds {grace} ≤ preStop {pre_stop} + drain {drain}"
        );
        let ports: BTreeMap<&str, u64> = seq(&c["ports"], "ports")
            .iter()
            .map(|p| {
                (
                    str_of(&p["name"], "port name"),
                    p["containerPort"].as_u64().expect("port"),
                )
            })
            .collect();
        assert_eq!(ports.len(), 1, "{name}: one port");
        assert_eq!(
            ports.values().next().copied(),
            Some(u64::from(port)),
            "{name}: the configured listener"
        );
        for (probe, path) in [
            ("livenessProbe", "/healthz"),
            ("readinessProbe", "/readyz"),
            ("startupProbe", "/healthz"),
        ] {
            let get = &c[probe]["httpGet"];
            assert_eq!(get["path"].as_str(), Some(path), "{name}: {probe}");
            let port = str_of(&get["port"], "probe port");
            assert!(ports.contains_key(port), "{name}: {probe} port {port}");
        }
        for (kind, key) in [
            ("requests", "cpu"),
            ("requests", "memory"),
            ("limits", "memory"),
        ] {
            assert!(
                c["resources"][kind][key].as_str().is_some(),
                "{name}: resources.{kind}.{key}"
            );
        }
        let sc = &c["securityContext"];
        assert_eq!(sc["readOnlyRootFilesystem"].as_bool(), Some(true), "{name}");
        assert_eq!(
            sc["allowPrivilegeEscalation"].as_bool(),
            Some(false),
            "{name}"
        );
        assert_eq!(sc["runAsNonRoot"].as_bool(), Some(true), "{name}");
        assert_eq!(
            seq(&sc["capabilities"]["drop"], "drop")[0].as_str(),
            Some("ALL"),
            "{name}"
        );
        let image = str_of(&c["image"], "image");
        assert!(
            image.contains(&format!("/payhook/{component}:")),
            "{name}: image {image}"
        );
        assert!(
            dockerfile_stages().contains(component),
            "{name}: no Dockerfile target {component}"
        );

        // The configuration, its secrets and their mounts.
        let env: BTreeMap<&str, &Yaml> = seq(&c["env"], "env")
            .iter()
            .map(|e| (str_of(&e["name"], "env name"), e))
            .collect();
        let volumes: BTreeMap<&str, &Yaml> = seq(&pod["volumes"], "volumes")
            .iter()
            .map(|v| (str_of(&v["name"], "volume name"), v))
            .collect();
        let mounts: Vec<(&str, &str)> = seq(&c["volumeMounts"], "volumeMounts")
            .iter()
            .map(|m| {
                assert_eq!(
                    m["readOnly"].as_bool(),
                    Some(true),
                    "{name}: mounts are read-only"
                );
                (
                    str_of(&m["name"], "mount"),
                    str_of(&m["mountPath"], "mountPath"),
                )
            })
            .collect();
        let config_path = str_of(&env["PAYHOOK_CONFIG"]["value"], "PAYHOOK_CONFIG");
        assert!(
            mounts.iter().any(|(volume, path)| {
                volumes[volume]["configMap"]["name"].as_str() == Some("payhook-config")
                    && config_path == format!("{path}/payhook.toml")
            }),
            "{name}: PAYHOOK_CONFIG {config_path} is not the mounted ConfigMap"
        );
        for var in needs_env {
            assert!(env_refs.contains(*var), "{var} not used by the config");
            let secret = &env[var]["valueFrom"]["secretKeyRef"];
            let secret_name = str_of(&secret["name"], "secret name");
            let key = str_of(&secret["key"], "secret key");
            assert!(
                example_secrets
                    .get(secret_name)
                    .is_some_and(|keys| keys.contains(key)),
                "{name}: {var} from {secret_name}/{key}, not in secret.example.yaml"
            );
        }
        for file in &file_refs {
            let found = mounts.iter().find_map(|(volume, path)| {
                let key = file.strip_prefix(&format!("{path}/"))?;
                let secret = volumes[volume]["secret"]["secretName"].as_str()?;
                Some((secret, key))
            });
            if component == "receiver" && signing_refs.contains(file) {
                assert!(
                    found.is_none(),
                    "{name}: the signing key {file} is mounted (the receiver refuses it)"
                );
                continue;
            }
            let (secret, key) =
                found.unwrap_or_else(|| panic!("{name}: {file} is not in a mounted Secret"));
            assert!(
                example_secrets
                    .get(secret)
                    .is_some_and(|keys| keys.contains(key)),
                "{name}: {file} = {secret}/{key}, not in secret.example.yaml"
            );
        }

        // A Service for its port, a PDB, and scraping.
        let labels = &spec["template"]["metadata"]["labels"];
        let service = of_kind(&objects, "Service")
            .into_iter()
            .find(|s| selects(&s["spec"]["selector"], labels))
            .unwrap_or_else(|| panic!("{name}: no Service"));
        for p in seq(&service["spec"]["ports"], "service ports") {
            let target = str_of(&p["targetPort"], "targetPort");
            assert!(
                ports.contains_key(target),
                "{name}: Service targetPort {target}"
            );
        }
        assert!(
            of_kind(&objects, "PodDisruptionBudget")
                .iter()
                .any(|pdb| selects(&pdb["spec"]["selector"]["matchLabels"], labels)),
            "{name}: no PodDisruptionBudget"
        );
        let annotations = &spec["template"]["metadata"]["annotations"];
        assert_eq!(annotations["prometheus.io/scrape"].as_str(), Some("true"));
        assert_eq!(
            annotations["prometheus.io/port"].as_str(),
            Some(port.to_string().as_str())
        );
        let monitor = of_kind(&objects, "ServiceMonitor")
            .into_iter()
            .find(|m| {
                selects(
                    &m["spec"]["selector"]["matchLabels"],
                    &service["metadata"]["labels"],
                )
            })
            .unwrap_or_else(|| panic!("{name}: no ServiceMonitor"));
        let endpoint = &monitor["spec"]["endpoints"][0];
        assert_eq!(endpoint["path"].as_str(), Some("/metrics"));
        assert!(ports.contains_key(str_of(&endpoint["port"], "endpoint port")));
    }

    // The receiver scales; its notify path is the only public one.
    for hpa in of_kind(&objects, "HorizontalPodAutoscaler") {
        let target = &hpa["spec"]["scaleTargetRef"];
        assert_eq!(target["kind"].as_str(), Some("Deployment"));
        assert_eq!(target["name"].as_str(), Some("payhook-receiver"));
    }
    let base_hpa = yaml("deploy/k8s/base/hpa.yaml");
    assert!(
        base_hpa["spec"]["minReplicas"]
            .as_u64()
            .is_some_and(|n| n >= 2)
    );
    let ingresses = of_kind(&objects, "Ingress");
    assert_eq!(ingresses.len(), 1);
    for rule in seq(&ingresses[0]["spec"]["rules"], "rules") {
        for path in seq(&rule["http"]["paths"], "paths") {
            assert_eq!(
                path["path"].as_str(),
                Some("/notify"),
                "only /notify is public"
            );
            assert_eq!(
                path["backend"]["service"]["name"].as_str(),
                Some("payhook-receiver")
            );
        }
    }
}

#[test]
fn kustomizations_list_existing_files_and_operator_objects_mirror_their_sources() {
    for dir in ["deploy/k8s/base", "deploy/k8s/monitoring"] {
        let k = yaml(&format!("{dir}/kustomization.yaml"));
        for resource in seq(&k["resources"], "resources") {
            let path = root().join(dir).join(str_of(resource, "resource"));
            assert!(path.exists(), "{dir}: resource {} missing", path.display());
        }
        if let Some(patches) = k["patches"].as_sequence() {
            for patch in patches {
                assert!(
                    root()
                        .join(dir)
                        .join(str_of(&patch["path"], "patch"))
                        .is_file()
                );
            }
        }
    }
    // Every base manifest is applied, except the secrets' example.
    let base = yaml("deploy/k8s/base/kustomization.yaml");
    let listed: BTreeSet<&str> = seq(&base["resources"], "resources")
        .iter()
        .map(|r| str_of(r, "resource"))
        .collect();
    for file in files_under("deploy/k8s/base") {
        let name = file.rsplit('/').next().expect("file name");
        if name == "kustomization.yaml" {
            continue;
        }
        assert_eq!(
            listed.contains(name),
            name != "secret.example.yaml",
            "{name}: listed in kustomization.yaml?"
        );
    }
    // PrometheusRule = alerts.yml.
    let rule = yaml("deploy/k8s/monitoring/prometheusrule.yaml");
    assert_eq!(
        rule["spec"]["groups"],
        yaml("deploy/prometheus/alerts.yml")["groups"],
        "prometheusrule.yaml differs from deploy/prometheus/alerts.yml"
    );
    // Policy CRs = definitions.json.
    let definitions = json("deploy/rabbitmq/definitions.json");
    let policies = definitions["policies"].as_array().expect("policies");
    let crs = yaml_docs("deploy/k8s/rabbitmq/policies.yaml");
    assert_eq!(crs.len(), policies.len());
    for (cr, policy) in crs.iter().zip(policies) {
        assert_eq!(cr["kind"].as_str(), Some("Policy"));
        let spec: Json = serde_json::to_value(&cr["spec"]).expect("spec as JSON");
        for (cr_key, key) in [
            ("name", "name"),
            ("vhost", "vhost"),
            ("pattern", "pattern"),
            ("applyTo", "apply-to"),
            ("priority", "priority"),
            ("definition", "definition"),
        ] {
            assert_eq!(spec[cr_key], policy[key], "{}: {key}", policy["name"]);
        }
    }
}

/// The queue arguments payhook declares (shared/src/topology.rs), by queue.
fn declared_arguments(names: &Names) -> BTreeMap<String, BTreeSet<&'static str>> {
    let ingress = [
        "x-queue-type",
        "x-delivery-limit",
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-dead-letter-strategy",
        "x-overflow",
    ];
    let retry = [
        "x-queue-type",
        "x-message-ttl",
        "x-dead-letter-exchange",
        "x-dead-letter-routing-key",
        "x-dead-letter-strategy",
        "x-overflow",
    ];
    let defaults = Settings::from_toml("").expect("defaults");
    let mut out = BTreeMap::new();
    out.insert(names.work.clone(), ingress.into());
    for i in 0..defaults.worker.retry_delays_ms.len() {
        out.insert(names.retry(i), retry.into());
    }
    out.insert(names.parked.clone(), ["x-queue-type"].into());
    out.insert(names.events_unrouted.clone(), ["x-queue-type"].into());
    out.insert(
        names.certificates.clone(),
        [
            "x-queue-type",
            "x-max-length-bytes",
            "x-stream-max-segment-size-bytes",
        ]
        .into(),
    );
    out.insert(
        names.rejected.clone(),
        [
            "x-queue-type",
            "x-max-length-bytes",
            "x-stream-max-segment-size-bytes",
            "x-max-age",
        ]
        .into(),
    );
    out
}

#[test]
fn rabbitmq_policies_bound_queues_without_fighting_payhooks_arguments() {
    // The arguments really are the ones the topology code declares.
    let topology = read("shared/src/topology.rs");
    for argument in [
        "x-delivery-limit",
        "x-dead-letter-strategy",
        "x-overflow",
        "x-message-ttl",
    ] {
        assert!(topology.contains(&format!("\"{argument}\"")), "{argument}");
    }
    let names = Names::new("payhook");
    let queues = declared_arguments(&names);
    let definitions = json("deploy/rabbitmq/definitions.json");
    let mut policy_of: BTreeMap<&str, &str> = BTreeMap::new();
    for policy in definitions["policies"].as_array().expect("policies") {
        let name = policy["name"].as_str().expect("name");
        assert_eq!(policy["vhost"], "/");
        assert_eq!(policy["apply-to"], "queues", "{name}");
        let pattern = regex_lite::Regex::new(policy["pattern"].as_str().expect("pattern"))
            .unwrap_or_else(|e| panic!("{name}: pattern: {e}"));
        let definition = policy["definition"].as_object().expect("definition");
        assert!(!definition.is_empty(), "{name}: empty definition");
        for queue in queues.keys().filter(|q| pattern.is_match(q)) {
            // One policy per queue: two matching would leave one silently unused.
            if let Some(other) = policy_of.insert(queue, name) {
                panic!("{queue} matched by {other} and {name}");
            }
            let declared = &queues[queue];
            for (key, value) in definition {
                // Settings payhook declares as arguments are left to payhook: the
                // argument wins for some keys and the lower value for others.
                assert!(
                    !declared.contains(format!("x-{key}").as_str()),
                    "{name} sets {key} on {queue}, which payhook declares"
                );
                match key.as_str() {
                    "max-length" | "max-length-bytes" => {
                        assert!(value.as_u64().is_some_and(|v| v > 0), "{name}: {key}")
                    }
                    // Never drop-head: a dropped notification or event is lost money.
                    "overflow" => assert_eq!(value, "reject-publish", "{name}: overflow"),
                    other => panic!("{name}: unexpected policy key {other}"),
                }
            }
            // A length bound is only safe where overflow rejects.
            if definition.contains_key("max-length") || definition.contains_key("max-length-bytes")
            {
                assert!(
                    declared.contains("x-overflow")
                        || definition
                            .get("overflow")
                            .is_some_and(|o| o == "reject-publish"),
                    "{name}: bounds {queue} without reject-publish"
                );
            }
        }
    }
    assert_eq!(policy_of.get(names.work.as_str()), Some(&"payhook-ingress"));
    assert_eq!(
        policy_of.get(names.retry(0).as_str()),
        Some(&"payhook-ingress")
    );
    assert_eq!(
        policy_of.get(names.events_unrouted.as_str()),
        Some(&"payhook-events-unrouted")
    );
    assert_eq!(
        policy_of.get(names.parked.as_str()),
        None,
        "the parking queue must never be bounded"
    );
    // The patterns are anchored: another tenant's prefix is not caught.
    let other = Names::new("payhook-demo");
    for policy in definitions["policies"].as_array().expect("policies") {
        let pattern =
            regex_lite::Regex::new(policy["pattern"].as_str().expect("pattern")).expect("pattern");
        for queue in [
            &other.work,
            &other.parked,
            &other.events_unrouted,
            &other.retry(0),
        ] {
            assert!(
                !pattern.is_match(queue),
                "{} matches {queue}",
                policy["name"]
            );
        }
    }
}

// ── the README's operations sections ────────────────────────────────────────────────

/// The text of the README section that starts with `heading` (up to the next `## `).
fn readme_section(readme: &str, heading: &str) -> String {
    let start = readme
        .find(&format!("\n{heading}\n"))
        .unwrap_or_else(|| panic!("README: no {heading}"));
    let rest = &readme[start + 1..];
    let end = rest[heading.len()..]
        .find("\n## ")
        .map_or(rest.len(), |i| i + heading.len());
    rest[..end].to_owned()
}

/// Every alert has a runbook entry, and every `payhook-admin` command the quick start
/// and the runbook tell an operator to type is one the real CLI accepts.
#[test]
fn the_runbook_covers_every_alert_with_commands_that_exist() {
    use clap::Parser as _;
    let readme = read("README.md");
    let runbook = readme_section(&readme, "## Runbook");
    let alerts = yaml("deploy/prometheus/alerts.yml");
    let mut count = 0;
    for group in seq(&alerts["groups"], "groups") {
        for rule in seq(&group["rules"], "rules") {
            let name = str_of(&rule["alert"], "alert");
            assert!(
                runbook.contains(&format!("\n#### {name}\n")),
                "README runbook: no entry for {name}"
            );
            count += 1;
        }
    }
    assert!(count >= 10);
    let mut commands = Vec::new();
    for section in [readme_section(&readme, "## Quick start"), runbook] {
        let mut in_code = false;
        for line in section.lines() {
            if line.trim_start().starts_with("```") {
                in_code = !in_code;
                continue;
            }
            if in_code {
                let line = line.trim();
                let line = line.split("  #").next().unwrap_or(line).trim();
                if let Some(args) = line
                    .strip_prefix("payhook-admin ")
                    .or_else(|| line.strip_prefix("docker compose run --rm admin "))
                {
                    commands.push(args.to_owned());
                }
            } else {
                for (i, inline) in line.split('`').enumerate() {
                    if let Some(args) = inline.strip_prefix("payhook-admin ")
                        && i % 2 == 1
                        && !inline.contains('…')
                    {
                        commands.push(args.to_owned());
                    }
                }
            }
        }
    }
    assert!(commands.len() >= 8, "{commands:?}");
    for args in commands {
        // `<the out_trade_no it printed>` stands for one word; `> file` is the shell's.
        let mut words = Vec::new();
        let mut rest = args.split(" > ").next().unwrap_or(&args);
        while let Some(open) = rest.find('<') {
            words.extend(rest[..open].split_whitespace().map(str::to_owned));
            let close = rest[open..].find('>').expect("closing >") + open;
            words.push("O123".to_owned());
            rest = &rest[close + 1..];
        }
        words.extend(rest.split_whitespace().map(str::to_owned));
        payhook_worker::cli::Cli::try_parse_from(
            std::iter::once("payhook-admin".to_owned()).chain(words),
        )
        .unwrap_or_else(|e| panic!("README: `payhook-admin {args}` is refused: {e}"));
    }
}
