//! Permanent and transient failures: what may be retried and what may not.

use super::*;

#[tokio::test]
async fn unknown_schema_version_is_permanent() {
    let db = TestDb::new().await;
    let envelope = changed(&paid(Provider::Alipay, &unique("o"), 100), |e| {
        e.schema_version = SCHEMA_VERSION + 1;
    });

    let result = db::apply(&db.pool, &envelope, &Expectations::default()).await;

    assert!(
        matches!(&result, Err(ApplyError::Permanent(why)) if why.contains("schema_version")),
        "{result:?}"
    );
    assert_eq!(outbox_rows(&db).await, 0);
}

#[tokio::test]
async fn negative_amount_is_permanent() {
    let db = TestDb::new().await;
    let envelope = paid(Provider::Alipay, &unique("o"), -1);

    let result = db::apply(&db.pool, &envelope, &Expectations::default()).await;

    assert!(
        matches!(result, Err(ApplyError::Permanent(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn unreachable_database_is_transient() {
    // A port nothing listens on: bind one, then let it go.
    let port = std::net::TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("free port")
        .port();
    let settings = PostgresSettings {
        url: Secret::inline(format!("postgres://postgres@127.0.0.1:{port}/test")),
        sslmode: None,
        tls: Default::default(),
        schema: "unreachable".into(),
        max_connections: 2,
        acquire_timeout_ms: 300,
    };
    let connect = db::connect(&settings).await;
    assert!(
        matches!(&connect, Err(e) if db::is_transient(e)),
        "{connect:?}"
    );

    let pool = db::connect_lazy(&settings).expect("valid settings");
    let result = db::apply(
        &pool,
        &paid(Provider::Alipay, "o", 1),
        &Expectations::default(),
    )
    .await;

    assert!(
        matches!(result, Err(ApplyError::Transient(_))),
        "{result:?}"
    );
}

#[tokio::test]
async fn closed_pool_is_transient() {
    let db = TestDb::new().await;
    db.pool.close().await;

    let result = db::apply(
        &db.pool,
        &paid(Provider::Alipay, &unique("o"), 1),
        &Expectations::default(),
    )
    .await;

    assert!(
        matches!(result, Err(ApplyError::Transient(_))),
        "{result:?}"
    );
}
