//! The worker's admin API behind bearer tokens: open probes and metrics, 401 without a
//! valid token, 403 for a `read` token on an `operate` route, and an audit record of
//! every operate action (in PostgreSQL, read back by `payhook-admin audit`).

use payhook_shared::config::{AdminScope, AdminToken, Secret};
use payhook_testkit::worker::{TEST_ADMIN_TOKEN, TestStack, TestWorker};
use payhook_worker::db::audit;

/// The status of `request` sent with `token`.
async fn status(request: reqwest::RequestBuilder, token: &str) -> u16 {
    request
        .bearer_auth(token)
        .send()
        .await
        .expect("answers")
        .status()
        .as_u16()
}

const READ_TOKEN: &str = "test-only-read-token-abcdef0123456789abcdef";

#[tokio::test]
async fn tokens_decide_who_may_read_and_operate_and_operate_actions_are_audited() {
    let TestStack {
        receiver,
        db,
        mut settings,
        ..
    } = TestStack::start().await;
    settings.worker.admin_tokens.push(AdminToken {
        name: "dashboard".into(),
        scope: AdminScope::Read,
        token: Secret::inline(READ_TOKEN),
    });
    let worker = TestWorker::spawn(&settings).await;
    let client = reqwest::Client::new();
    let url = |path: &str| format!("{}{path}", worker.admin_url);
    let order = format!("o{}", uuid::Uuid::new_v4().simple());
    let order_json = serde_json::json!({
        "provider": "alipay", "merchant": "m1", "out_trade_no": order, "amount": 100
    });

    // Probes and metrics stay open.
    for path in ["/healthz", "/readyz", "/metrics"] {
        let status = client
            .get(url(path))
            .send()
            .await
            .expect("answers")
            .status();
        assert_eq!(status.as_u16(), 200, "{path}");
    }

    // No token, a wrong one, a malformed header: 401 with a Bearer challenge.
    let history = url(&format!("/payments/alipay/m1/{order}"));
    for request in [
        client.get(&history),
        client.get(&history).bearer_auth("x".repeat(40)),
        client
            .get(&history)
            .header("Authorization", TEST_ADMIN_TOKEN),
        client.post(url("/orders")).json(&order_json),
    ] {
        let answer = request.send().await.expect("answers");
        assert_eq!(answer.status().as_u16(), 401);
        assert!(
            answer
                .headers()
                .get("www-authenticate")
                .is_some_and(|v| v.to_str().unwrap_or("").starts_with("Bearer")),
            "a Bearer challenge"
        );
    }

    // A read token reads (404: no such payment yet) but may not operate (403).
    assert_eq!(status(client.get(&history), READ_TOKEN).await, 404);
    for request in [
        client.post(url("/orders")).json(&order_json),
        client.post(url("/parked/replay")),
        client.post(url(&format!("/payments/alipay/m1/{order}/reconcile"))),
    ] {
        assert_eq!(status(request, READ_TOKEN).await, 403);
    }
    assert!(
        audit::recent(&db.pool, 10).await.expect("audit").is_empty(),
        "refused calls do nothing, so they leave no audit record"
    );

    // The operate token operates; each action leaves its record.
    let operate = |request| status(request, TEST_ADMIN_TOKEN);
    assert_eq!(
        operate(client.post(url("/orders")).json(&order_json)).await,
        201
    );
    let reconcile = url(&format!("/payments/alipay/m1/{order}/reconcile"));
    assert_eq!(operate(client.post(reconcile)).await, 202);
    let replay = url("/parked/replay?reason=retries_exhausted");
    assert_eq!(operate(client.post(replay)).await, 200);
    assert_eq!(
        status(client.get(&history), READ_TOKEN).await,
        200,
        "the registered order's history"
    );

    let records = audit::recent(&db.pool, 10).await.expect("audit");
    let seen: Vec<(&str, &str, &str, &str)> = records
        .iter()
        .rev()
        .map(|r| {
            (
                r.actor.as_str(),
                r.action.as_str(),
                r.target.as_str(),
                r.result.as_str(),
            )
        })
        .collect();
    let target = format!("alipay/m1/{order}");
    assert_eq!(
        seen,
        vec![
            (
                "test-operator",
                "register_order",
                target.as_str(),
                "created"
            ),
            ("test-operator", "reconcile", target.as_str(), "scheduled"),
            (
                "test-operator",
                "replay_parked",
                "parked: provider=*, reason=retries_exhausted",
                "matched 0, replayed 0, kept 0"
            ),
        ]
    );
    worker.stop().await;

    // No token configured: closed. A short token: refused at start, by name.
    let mut closed = settings.clone();
    closed.worker.admin_tokens.clear();
    let worker = TestWorker::spawn(&closed).await;
    let answer = client
        .post(format!("{}/orders", worker.admin_url))
        .bearer_auth(TEST_ADMIN_TOKEN)
        .json(&order_json)
        .send()
        .await
        .expect("answers");
    assert_eq!(answer.status().as_u16(), 401);
    worker.stop().await;
    let mut short = settings.clone();
    short.worker.admin_tokens[0].token = Secret::inline("hunter2");
    let error = payhook_worker::Worker::build(&short)
        .await
        .map(drop)
        .expect_err("a short token is refused");
    let text = format!("{error:#}");
    assert!(
        text.contains("worker.admin_tokens.test-operator.token"),
        "{text}"
    );
    assert!(!text.contains("hunter2"), "{text}");
    receiver.stop().await;
}

#[test]
fn the_openapi_document_lists_exactly_the_served_routes() {
    let document: serde_json::Value =
        serde_json::from_str(payhook_worker::admin::OPENAPI).expect("the document is JSON");
    assert_eq!(document["openapi"], "3.1.0");
    let mut documented = std::collections::BTreeSet::new();
    for (path, item) in document["paths"].as_object().expect("paths") {
        for method in ["get", "post", "put", "delete", "patch", "head"] {
            if item.get(method).is_some() {
                documented.insert((path.clone(), method.to_uppercase()));
            }
        }
    }
    let served: std::collections::BTreeSet<(String, String)> = payhook_worker::admin::routes()
        .into_iter()
        .map(|(path, method, _)| (path.to_owned(), method.to_string()))
        .collect();
    assert_eq!(documented, served);
}

/// schemathesis (PyPI; `scripts/test` installs it) against the live API with an
/// operate token: generated requests for every operation, no 5xx, and every answer's
/// status, content type, headers and body as the document says.
#[tokio::test]
async fn schemathesis_finds_no_server_error_and_no_answer_outside_the_document() {
    let TestStack {
        receiver, settings, ..
    } = TestStack::start().await;
    let worker = TestWorker::spawn(&settings).await;
    let served = reqwest::get(format!("{}/openapi.json", worker.admin_url))
        .await
        .expect("answers")
        .text()
        .await
        .expect("body");
    assert_eq!(served, payhook_worker::admin::OPENAPI);

    let output = tokio::process::Command::new("schemathesis")
        .args(["run", &format!("{}/openapi.json", worker.admin_url)])
        .args([
            "--checks",
            "not_a_server_error,status_code_conformance,content_type_conformance,response_headers_conformance,response_schema_conformance",
        ])
        .args(["--header", &format!("Authorization: Bearer {TEST_ADMIN_TOKEN}")])
        .args(["--max-examples", "30", "--seed", "7", "--no-color"])
        .args(["--request-timeout", "10"])
        .env("SCHEMATHESIS_HOOKS", "")
        .output()
        .await
        .expect("schemathesis runs (scripts/test installs it: pip install schemathesis)");
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&output.stdout),
        String::from_utf8_lossy(&output.stderr)
    );
    eprintln!("{report}");
    assert!(output.status.success(), "schemathesis failed:\n{report}");
    assert!(
        report.contains("passed"),
        "schemathesis ran no test:\n{report}"
    );
    worker.stop().await;
    receiver.stop().await;
}
