//! Delivery of one notification to payhook's notify URL, following the provider's
//! resend schedule (scaled) until the provider's "received" answer, with the
//! notification's faults applied.

use std::sync::Arc;
use std::time::Duration;

use payhook_shared::event::Provider;
use payhook_shared::wechat_v2::parse_xml;
use tokio::sync::watch;
use tokio::time::Instant;

use super::Inner;
use super::book::Attempt;
use super::faults::{Faults, REORDER_HOLD};
use super::notify::{NotifyRequest, Payload, Spoil};
use super::schedule;

/// One notification on its way.
#[derive(Debug)]
pub(crate) struct Delivery {
    pub id: String,
    pub url: String,
    pub payload: Payload,
    pub faults: Faults,
    /// Counts first attempts of the order's notifications (reorder).
    pub order_signal: watch::Sender<u32>,
    pub created: Instant,
}

/// Whether `body` with `status` is `provider`'s "received" answer.
pub fn is_ack(provider: Provider, status: u16, body: &[u8]) -> bool {
    match provider {
        // Exactly the 7 bytes, nothing around them.
        Provider::Alipay => {
            status == 200 && body == payhook_shared::alipay::SUCCESS_ANSWER.as_bytes()
        }
        Provider::WechatV2 => {
            status == 200
                && parse_xml(body).is_ok_and(|fields| {
                    fields
                        .iter()
                        .any(|(k, v)| k == "return_code" && v == "SUCCESS")
                })
        }
        Provider::WechatV3 => matches!(status, 200 | 204),
    }
}

/// Sends one request; `(status, acked)`, status `None` if no answer came.
pub async fn send(
    client: &reqwest::Client,
    provider: Provider,
    url: &str,
    request: NotifyRequest,
) -> (Option<u16>, bool) {
    let mut builder = client
        .post(url)
        .header("Content-Type", request.content_type)
        .body(request.body);
    for (name, value) in &request.headers {
        builder = builder.header(name.as_str(), value.as_str());
    }
    match builder.send().await {
        Ok(response) => {
            let status = response.status().as_u16();
            let body = response.bytes().await.unwrap_or_default();
            (Some(status), is_ack(provider, status, &body))
        }
        Err(_) => (None, false),
    }
}

impl Inner {
    /// Sleeps `provider_time` scaled; `false` if the simulator stopped meanwhile.
    async fn pause(&self, provider_time: Duration) -> bool {
        let real = self.scale.apply(provider_time);
        tokio::select! {
            () = self.shutdown.cancelled() => false,
            () = tokio::time::sleep(real) => true,
        }
    }

    fn record(&self, id: &str, update: impl FnOnce(&mut super::book::NotificationTruth)) {
        let mut state = self.lock();
        if let Some(n) = state.book.notifications.get_mut(id) {
            update(n);
        }
    }

    /// Runs one delivery to its end (acked, dropped, given up or stopped).
    pub(crate) async fn deliver(self: Arc<Self>, d: Delivery) {
        let provider = d.payload.provider();
        if d.faults.drop {
            self.record(&d.id, |n| n.dropped = true);
            return;
        }
        if !d.faults.delay.is_zero() && !self.pause(d.faults.delay).await {
            return;
        }
        if d.faults.reorder {
            // Hold the payment back until a later notification of the order went out.
            let mut rx = d.order_signal.subscribe();
            let seen = *rx.borrow_and_update();
            let hold = self.scale.apply(REORDER_HOLD);
            tokio::select! {
                () = self.shutdown.cancelled() => return,
                _ = tokio::time::timeout(hold, rx.wait_for(|n| *n > seen)) => {}
            }
        }
        let intervals = schedule::intervals(provider);
        for attempt in 0..=intervals.len() {
            if attempt > 0 && !self.pause(intervals[attempt - 1]).await {
                return;
            }
            let platform = self.platform().current().clone();
            if attempt == 0 && d.faults.sign_test_probe && provider == Provider::WechatV3 {
                let probe = d.payload.render(
                    &platform,
                    Spoil {
                        probe: true,
                        ..Spoil::default()
                    },
                );
                let (status, acked) = send(&self.client, provider, &d.url, probe).await;
                let at = d.created.elapsed();
                self.record(&d.id, |n| {
                    n.attempts.push(Attempt {
                        at,
                        status,
                        acked,
                        fault: Some("sign_test_probe"),
                    });
                });
            }
            let attempt_no = u32::try_from(attempt).unwrap_or(u32::MAX);
            let spoil = Spoil {
                corrupt: attempt_no < d.faults.corrupt_attempts,
                stale: provider == Provider::WechatV3 && attempt_no < d.faults.stale_attempts,
                probe: false,
            };
            let fault = if spoil.corrupt {
                Some("corrupt_signature")
            } else if spoil.stale {
                Some("stale_timestamp")
            } else {
                None
            };
            let copies = if attempt == 0 && d.faults.duplicate {
                2
            } else {
                1
            };
            let sends = (0..copies).map(|_| {
                send(
                    &self.client,
                    provider,
                    &d.url,
                    d.payload.render(&platform, spoil),
                )
            });
            let results = futures::future::join_all(sends).await;
            let at = d.created.elapsed();
            let mut acked = false;
            self.record(&d.id, |n| {
                for (i, (status, ok)) in results.iter().enumerate() {
                    acked |= *ok;
                    n.attempts.push(Attempt {
                        at,
                        status: *status,
                        acked: *ok,
                        fault: if i > 0 { Some("duplicate") } else { fault },
                    });
                }
                n.acked = acked;
            });
            if attempt == 0 {
                d.order_signal.send_modify(|n| *n += 1);
            }
            if acked {
                return;
            }
        }
        self.record(&d.id, |n| n.gave_up = true);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_the_exact_answers_are_acks() {
        assert!(is_ack(Provider::Alipay, 200, b"success"));
        assert!(!is_ack(Provider::Alipay, 200, b"success\n"));
        assert!(!is_ack(Provider::Alipay, 200, b"fail"));
        assert!(!is_ack(Provider::Alipay, 500, b"success"));
        assert!(is_ack(Provider::WechatV3, 204, b""));
        assert!(is_ack(Provider::WechatV3, 200, b"{}"));
        assert!(!is_ack(Provider::WechatV3, 500, b""));
        assert!(is_ack(
            Provider::WechatV2,
            200,
            payhook_shared::wechat_v2::SUCCESS_ANSWER.as_bytes()
        ));
        assert!(!is_ack(
            Provider::WechatV2,
            200,
            payhook_shared::wechat_v2::fail_answer("x").as_bytes()
        ));
    }
}
