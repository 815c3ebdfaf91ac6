//! Hostile input at the HTTP edge: compressed bombs, huge and numerous headers, invalid
//! UTF-8, malformed content types, many idle connections. Each gets a failure answer
//! (the provider's own where the request reaches payhook's handlers), nothing is
//! published, and the receiver keeps serving real notifications afterwards. Memory
//! under the same abuse is measured, not asserted: `bench-receiver --phase hostile`
//! (BENCHMARKS.md).

use payhook_testkit::harness::unique;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use payhook_shared::clock::SystemClock;
use payhook_testkit::harness::{Answer, Providers, TestBroker, TestReceiver, post, test_settings};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const FORM: &str = "application/x-www-form-urlencoded";
const XML: &str = "text/xml";
const JSON: &str = "application/json";

struct Ctx {
    providers: Providers,
    receiver: TestReceiver,
    broker: TestBroker,
    client: reqwest::Client,
}

async fn start() -> Ctx {
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    settings.receiver.request_timeout_ms = 1_000;
    Ctx {
        receiver: TestReceiver::spawn(settings, Arc::new(SystemClock)).await,
        providers,
        broker: TestBroker::connect().await,
        client: reqwest::Client::new(),
    }
}

impl Ctx {
    fn addr(&self) -> String {
        self.receiver
            .base_url
            .trim_start_matches("http://")
            .to_owned()
    }

    /// A real notification still gets its success answer.
    async fn still_serves(&self) {
        let body = self
            .providers
            .alipay
            .payment(&unique("o"), 100, &unique("n"));
        let url = self.receiver.url("/notify/alipay/m1");
        let answer = post(&self.client, &url, FORM, &[], body).await;
        assert_eq!((answer.status, answer.body.as_str()), (200, "success"));
        let work = &self.receiver.names.work;
        assert_eq!(self.broker.drain(work).await.len(), 1, "only the real one");
    }

    async fn nothing_published(&self) {
        assert_eq!(self.broker.depth(&self.receiver.names.work).await, 0);
    }
}

/// Sends raw bytes, half-closes, and reads the answer's status line (0 when the
/// server closed the connection without one).
async fn raw(addr: &str, request: &[u8]) -> (u16, String) {
    let mut stream = TcpStream::connect(addr).await.expect("connect");
    // The server may answer and close before it has read everything we send.
    let _ = stream.write_all(request).await;
    let _ = stream.shutdown().await;
    let mut answer = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(10), stream.read_to_end(&mut answer))
        .await
        .expect("answered or closed within 10 s");
    if read.is_err() && answer.is_empty() {
        return (0, String::new());
    }
    let text = String::from_utf8_lossy(&answer).into_owned();
    let status = text
        .split(' ')
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(0);
    (status, text)
}

fn gzip_bomb(inflated: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..inflated >> 20 {
        encoder.write_all(&zeros).expect("compress");
    }
    encoder.finish().expect("compress")
}

#[tokio::test]
async fn compressed_bodies_are_never_inflated() {
    let ctx = start().await;
    // 64 MiB of '0' in about 64 KiB: if the receiver inflated it, the body cap would be
    // checked after the damage.
    let bomb = gzip_bomb(64 << 20);
    assert!(bomb.len() < 65_536, "the bomb fits under the body cap");
    let gz = [("Content-Encoding".to_owned(), "gzip".to_owned())];
    for (path, content_type, failure) in [
        ("/notify/alipay/m1", FORM, "fail"),
        ("/notify/wechat/v2/m1", XML, "FAIL"),
        ("/notify/wechat/v3/m1", JSON, "FAIL"),
    ] {
        let answer: Answer = post(
            &ctx.client,
            &ctx.receiver.url(path),
            content_type,
            &gz,
            bomb.clone(),
        )
        .await;
        assert!(
            (400..500).contains(&answer.status) && answer.body.contains(failure),
            "{path}: {} {}",
            answer.status,
            answer.body
        );
    }
    // A genuine notification, compressed: inflating it would verify and ack it, so
    // `success` here would mean the receiver decompresses request bodies.
    let genuine = ctx
        .providers
        .alipay
        .payment(&unique("o"), 100, &unique("n"));
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::fast());
    encoder.write_all(&genuine).expect("compress");
    let compressed = encoder.finish().expect("compress");
    let url = ctx.receiver.url("/notify/alipay/m1");
    let answer = post(&ctx.client, &url, FORM, &gz, compressed).await;
    assert_eq!((answer.status, answer.body.as_str()), (400, "fail"));
    ctx.nothing_published().await;
    ctx.still_serves().await;
}

#[tokio::test]
async fn huge_and_numerous_headers_are_refused_and_the_receiver_keeps_serving() {
    let ctx = start().await;
    let addr = ctx.addr();
    // Each request carries a genuine notification: `success` would mean the header
    // limits let it through.
    let head = |extra: &str| {
        let body = ctx
            .providers
            .alipay
            .payment(&unique("o"), 100, &unique("n"));
        format!(
            "POST /notify/alipay/m1 HTTP/1.1\r\nHost: {addr}\r\nContent-Type: {FORM}\r\n\
             Content-Length: {}\r\nConnection: close\r\n{extra}\r\n{}",
            body.len(),
            String::from_utf8(body).expect("form bodies are ASCII")
        )
    };
    // One header of 1 MiB.
    let huge = head(&format!("X-Padding: {}\r\n", "a".repeat(1 << 20)));
    let (status, answer) = raw(&addr, huge.as_bytes()).await;
    assert!(
        status == 0 || (400..500).contains(&status),
        "huge header: {status} {answer:.200}"
    );
    // A thousand small headers.
    let many: String = (0..1000).map(|i| format!("X-H{i}: v\r\n")).collect();
    let (status, answer) = raw(&addr, head(&many).as_bytes()).await;
    assert!(
        status == 0 || (400..500).contains(&status),
        "many headers: {status} {answer:.200}"
    );
    // Header bytes that are not UTF-8 (nor even visible ASCII).
    let mut binary = head("").into_bytes();
    let at = binary
        .windows(4)
        .position(|w| w == b"\r\n\r\n")
        .expect("end of head")
        + 2;
    binary.splice(at..at, b"X-Bin: \xff\xfe\x00\x01\r\n".iter().copied());
    let (status, _) = raw(&addr, &binary).await;
    assert!(
        status == 0 || (400..500).contains(&status),
        "binary header: {status}"
    );
    ctx.nothing_published().await;
    ctx.still_serves().await;
}

#[tokio::test]
async fn invalid_utf8_and_malformed_content_types_get_each_providers_failure_answer() {
    let ctx = start().await;
    let alipay = ctx.receiver.url("/notify/alipay/m1");
    let paid = ctx
        .providers
        .alipay
        .payment(&unique("o"), 100, &unique("n"));
    for content_type in [
        "multipart/form-data; boundary=x",
        "application/x-www-form-urlencoded-not",
        "a/b/c",
        "text/plain",
        "",
    ] {
        let answer = post(&ctx.client, &alipay, content_type, &[], paid.clone()).await;
        assert!(
            (400..500).contains(&answer.status) && answer.body == "fail",
            "alipay {content_type:?}: {} {}",
            answer.status,
            answer.body
        );
    }
    // Invalid UTF-8 percent-escaped in a UTF-8 form, and raw in the body.
    for body in [
        &b"charset=utf-8&notify_id=%ff%fe&sign=x"[..],
        b"notify_id=\xff\xfe",
    ] {
        let answer = post(&ctx.client, &alipay, FORM, &[], body.to_vec()).await;
        assert_eq!((answer.status, answer.body.as_str()), (400, "fail"));
    }

    let v2 = post(
        &ctx.client,
        &ctx.receiver.url("/notify/wechat/v2/m1"),
        XML,
        &[],
        b"<xml><return_code>\xff\xfe</return_code></xml>".to_vec(),
    )
    .await;
    assert_eq!(v2.status, 400, "{}", v2.body);
    assert!(v2.body.contains("FAIL"), "{}", v2.body);

    // Signed correctly over bytes that are not UTF-8: the signature holds, the body
    // is still refused as malformed.
    let body = b"{\"id\":\"\xff\xfe\"}".to_vec();
    let now = time::OffsetDateTime::now_utc().unix_timestamp();
    let headers = ctx.providers.wechat_v3.headers(now, &body);
    let v3 = post(
        &ctx.client,
        &ctx.receiver.url("/notify/wechat/v3/m1"),
        JSON,
        &headers,
        body,
    )
    .await;
    assert_eq!(v3.status, 400, "{}", v3.body);
    assert!(v3.body.contains("\"code\":\"FAIL\""), "{}", v3.body);
    ctx.nothing_published().await;
    ctx.still_serves().await;
}

#[tokio::test]
async fn many_idle_connections_do_not_keep_notifications_out() {
    let ctx = start().await;
    let addr = ctx.addr();
    // 500 connections that never send a byte (and 100 that stop mid-header).
    let mut idle = Vec::new();
    for i in 0..600 {
        let mut stream = TcpStream::connect(&addr).await.expect("connect");
        if i >= 500 {
            stream
                .write_all(b"POST /notify/alipay/m1 HTTP/1.1\r\nHost: x\r\n")
                .await
                .expect("partial head");
        }
        idle.push(stream);
    }
    ctx.still_serves().await;
    // The receiver drops them after its request timeout: every one reads EOF (or a
    // timeout answer), none stays open forever.
    for mut stream in idle {
        let mut buf = Vec::new();
        let closed =
            tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut buf)).await;
        assert!(closed.is_ok(), "an idle connection was never closed");
    }
    ctx.nothing_published().await;
}
