//! The operations files under `deploy/` parse, and every metric they name is one
//! payhook exports (or one of RabbitMQ's, listed here): an alert on a metric nobody
//! exports never fires.

use std::collections::BTreeSet;
use std::path::PathBuf;

use payhook_testkit::metric_names::{
    PROMETHEUS, RABBITMQ, families_of, family, metrics_of, registered,
};

fn deploy(path: &str) -> String {
    let file = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("../deploy")
        .join(path);
    std::fs::read_to_string(&file).unwrap_or_else(|e| panic!("{}: {e}", file.display()))
}

/// The metric families payhook exports: the registered names and every family of
/// the receiver's and the worker's exposition.
fn exported() -> BTreeSet<String> {
    let mut names = registered();
    names.extend(families_of(&format!(
        "{}\n{}",
        payhook_receiver::metrics::Metrics::new().render(),
        payhook_worker::metrics::Metrics::new().render()
    )));
    names
}

fn check(expr: &str, exported: &BTreeSet<String>, whose: &str) {
    let names = metrics_of(expr);
    assert!(!names.is_empty(), "{whose}: names no metric: {expr}");
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
            "{whose}: {name} is not exported (exported: {exported:?})"
        );
    }
}

#[test]
fn the_exported_metric_names_are_read_correctly() {
    let names = exported();
    for expected in [
        "payhook_notifications",
        "payhook_verify_failures",
        "payhook_ack_latency_seconds",
        "payhook_worker_events",
        "payhook_outbox_oldest_pending_seconds",
        "payhook_reconcile_queries",
    ] {
        assert!(
            names.contains(expected),
            "{expected} missing from {names:?}"
        );
    }
    assert_eq!(
        metrics_of(r#"rate(payhook_notifications_total{outcome="payhook_x"}[5m]) > 1"#),
        ["payhook_notifications_total"]
    );
}

#[test]
fn every_alert_is_complete_and_names_exported_metrics() {
    let doc: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&deploy("prometheus/alerts.yml")).expect("alerts.yml is YAML");
    let exported = exported();
    let mut alerts = BTreeSet::new();
    let groups = doc["groups"].as_sequence().expect("groups");
    for group in groups {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert name").to_owned();
            let expr = rule["expr"].as_str().expect("expr");
            assert!(
                matches!(rule["labels"]["severity"].as_str(), Some("page" | "ticket")),
                "{name}: severity"
            );
            assert!(
                rule["annotations"]["summary"].as_str().is_some(),
                "{name}: summary"
            );
            check(expr, &exported, &name);
            assert!(alerts.insert(name.clone()), "{name} twice");
        }
    }
    // The alerts the operations issue asks for.
    for wanted in [
        "PayhookAckFailures",
        "PayhookVerifyFailuresSpiking",
        "PayhookWorkQueueBacklog",
        "PayhookParkedMessages",
        "PayhookQuarantined",
        "PayhookReconcileBacklog",
        "PayhookNoConsumer",
        "PayhookOutboxLag",
        "PayhookReceiverBrokerDown",
        "PayhookWorkerBrokerDown",
    ] {
        assert!(alerts.contains(wanted), "{wanted} missing");
    }
}

#[test]
fn every_dashboard_panel_queries_exported_metrics() {
    let doc: serde_json::Value =
        serde_json::from_str(&deploy("grafana/payhook-dashboard.json")).expect("dashboard is JSON");
    let exported = exported();
    let panels = doc["panels"].as_array().expect("panels");
    assert!(panels.len() >= 8, "{} panels", panels.len());
    for panel in panels {
        let title = panel["title"].as_str().expect("title");
        let targets = panel["targets"].as_array().expect("targets");
        assert!(!targets.is_empty(), "{title}: no query");
        for target in targets {
            check(target["expr"].as_str().expect("expr"), &exported, title);
        }
    }
}

/// `promtool check rules` accepts the rules, and `promtool test rules` passes
/// `deploy/prometheus/alerts.test.yml`, in which every alert has a case where it fires
/// and one where it stays silent. promtool comes from Debian's prometheus package
/// (`scripts/test` unpacks it when missing).
#[test]
fn every_alert_fires_under_its_condition_and_only_then() {
    let dir = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("../deploy/prometheus");
    let promtool = |args: &[&str]| {
        let out = std::process::Command::new("promtool")
            .args(args)
            .current_dir(&dir)
            .output()
            .unwrap_or_else(|e| {
                panic!("promtool: {e} (scripts/test unpacks it from Debian's prometheus package)")
            });
        assert!(
            out.status.success(),
            "promtool {args:?}:\n{}{}",
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr)
        );
    };
    promtool(&["check", "rules", "alerts.yml"]);
    promtool(&["test", "rules", "alerts.test.yml"]);

    // Coverage: each alert is expected to fire somewhere, and to be silent somewhere.
    let alerts: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&deploy("prometheus/alerts.yml")).expect("alerts.yml");
    let tests: serde_yaml_ng::Value =
        serde_yaml_ng::from_str(&deploy("prometheus/alerts.test.yml")).expect("alerts.test.yml");
    let mut fires = BTreeSet::new();
    let mut silent = BTreeSet::new();
    for test in tests["tests"].as_sequence().expect("tests") {
        for case in test["alert_rule_test"]
            .as_sequence()
            .expect("alert_rule_test")
        {
            let name = case["alertname"].as_str().expect("alertname").to_owned();
            let expected = case["exp_alerts"].as_sequence().map_or(0, Vec::len);
            if expected == 0 {
                silent.insert(name);
            } else {
                fires.insert(name);
            }
        }
    }
    for group in alerts["groups"].as_sequence().expect("groups") {
        for rule in group["rules"].as_sequence().expect("rules") {
            let name = rule["alert"].as_str().expect("alert");
            assert!(fires.contains(name), "alerts.test.yml: {name} never fires");
            assert!(
                silent.contains(name),
                "alerts.test.yml: {name} never silent"
            );
        }
    }
}
