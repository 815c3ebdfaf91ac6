//! `bench-hostile`: the receiver's memory under hostile HTTP input, measured.
//!
//! Starts a receiver in this process (real HTTP listener, real RabbitMQ, the test
//! merchants) and runs rounds of abuse against it — gzip bombs, 1 MiB bodies against
//! the 64 KiB cap, 64 KiB headers, thousands of idle and half-sent connections,
//! slowloris bodies — with real notifications in between. After every round it prints
//! the process's resident memory (VmRSS) and its peak (VmHWM): memory that grows round
//! after round would be a leak or an unbounded buffer; a plateau is the answer.
//! The process holds the load generator too, so the figures are an upper bound on
//! the receiver's own.
//!
//! ```sh
//! cargo run --release -p payhook-bench --bin bench-hostile -- [ROUNDS]   # default 8
//! ```

use std::io::Write as _;
use std::sync::Arc;
use std::time::{Duration, Instant};

use payhook_shared::clock::SystemClock;
use payhook_testkit::harness::{Providers, TestBroker, TestReceiver, post, test_settings};
use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

const FORM: &str = "application/x-www-form-urlencoded";

fn status_kb(field: &str) -> u64 {
    std::fs::read_to_string("/proc/self/status")
        .ok()
        .and_then(|s| {
            s.lines()
                .find_map(|l| l.strip_prefix(field))
                .and_then(|v| v.split_whitespace().next()?.parse().ok())
        })
        .unwrap_or(0)
}

fn gzip_bomb(inflated_mib: usize) -> Vec<u8> {
    let mut encoder = flate2::write::GzEncoder::new(Vec::new(), flate2::Compression::best());
    let zeros = vec![b'0'; 1 << 20];
    for _ in 0..inflated_mib {
        encoder.write_all(&zeros).expect("compress");
    }
    encoder.finish().expect("compress")
}

/// Writes `request`, then reads until the server answers or closes (bounded).
async fn raw(addr: &str, request: &[u8]) -> bool {
    let Ok(mut stream) = TcpStream::connect(addr).await else {
        return false;
    };
    let _ = stream.write_all(request).await;
    let mut buf = [0_u8; 512];
    matches!(
        tokio::time::timeout(Duration::from_secs(10), stream.read(&mut buf)).await,
        Ok(Ok(_))
    )
}

#[tokio::main]
async fn main() {
    let rounds: usize = std::env::args()
        .nth(1)
        .map_or(8, |r| r.parse().expect("ROUNDS is a number"));
    let providers = Providers::new();
    let mut settings = test_settings();
    providers.register(&mut settings);
    settings.receiver.request_timeout_ms = 1_000;
    let receiver = TestReceiver::spawn(settings, Arc::new(SystemClock)).await;
    let broker = TestBroker::connect().await;
    let client = reqwest::Client::new();
    let url = receiver.url("/notify/alipay/m1");
    let addr = receiver.base_url.trim_start_matches("http://").to_owned();
    let bomb = gzip_bomb(64);
    let oversize = vec![b'a'; 1 << 20];
    let big_header = format!(
        "POST /notify/alipay/m1 HTTP/1.1\r\nHost: x\r\nX-Pad: {}\r\nContent-Length: 0\r\n\r\n",
        "a".repeat(64 << 10)
    );

    println!("| round | requests | acked | VmRSS MiB | VmHWM MiB | seconds |");
    println!("|---:|---:|---:|---:|---:|---:|");
    println!(
        "| start | 0 | 0 | {:.1} | {:.1} | 0 |",
        status_kb("VmRSS:") as f64 / 1024.0,
        status_kb("VmHWM:") as f64 / 1024.0
    );
    let (mut requests, mut acked) = (0_u64, 0_u64);
    for round in 1..=rounds {
        let started = Instant::now();
        let mut tasks = tokio::task::JoinSet::new();
        // 200 gzip bombs and 200 oversize bodies, 32 at a time.
        for i in 0..400 {
            let (client, url) = (client.clone(), url.clone());
            let body = if i % 2 == 0 {
                bomb.clone()
            } else {
                oversize.clone()
            };
            tasks.spawn(async move {
                let _ = client
                    .post(url)
                    .header("Content-Type", FORM)
                    .header("Content-Encoding", "gzip")
                    .body(body)
                    .send()
                    .await;
            });
            if tasks.len() >= 32 {
                tasks.join_next().await;
            }
        }
        while tasks.join_next().await.is_some() {}
        // 200 requests with a 64 KiB header.
        for _ in 0..200 {
            let (addr, head) = (addr.clone(), big_header.clone());
            tasks.spawn(async move {
                raw(&addr, head.as_bytes()).await;
            });
            if tasks.len() >= 32 {
                tasks.join_next().await;
            }
        }
        while tasks.join_next().await.is_some() {}
        // 2,000 connections: idle, half a head, or a body that stops (slowloris),
        // all held until the receiver cuts them off.
        let mut held = Vec::new();
        for i in 0..2000 {
            let Ok(mut stream) = TcpStream::connect(&addr).await else {
                continue;
            };
            match i % 3 {
                0 => {}
                1 => {
                    let _ = stream
                        .write_all(b"POST /notify/alipay/m1 HTTP/1.1\r\n")
                        .await;
                }
                _ => {
                    let _ = stream
                        .write_all(
                            b"POST /notify/alipay/m1 HTTP/1.1\r\nHost: x\r\n\
                              Content-Type: application/x-www-form-urlencoded\r\n\
                              Content-Length: 60000\r\n\r\nnotify_id=",
                        )
                        .await;
                }
            }
            held.push(stream);
        }
        // Real notifications while they are held.
        for n in 0..100 {
            let body = providers.alipay.payment(
                &format!("hostile-{round}-{n}"),
                100,
                &format!("hostile-{round}-{n}-{}", uuid::Uuid::new_v4().simple()),
            );
            let answer = post(&client, &url, FORM, &[], body).await;
            acked += u64::from(answer.body == "success");
        }
        for mut stream in held {
            let mut sink = Vec::new();
            let _ =
                tokio::time::timeout(Duration::from_secs(30), stream.read_to_end(&mut sink)).await;
        }
        broker.drain(&receiver.names.work).await;
        requests += 400 + 200 + 2000 + 100;
        println!(
            "| {round} | {requests} | {acked} | {:.1} | {:.1} | {:.1} |",
            status_kb("VmRSS:") as f64 / 1024.0,
            status_kb("VmHWM:") as f64 / 1024.0,
            started.elapsed().as_secs_f64()
        );
    }
    receiver.stop().await;
}
