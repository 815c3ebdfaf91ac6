//! The simulator delivering to a real receiver (real RabbitMQ, own broker prefix):
//! the success answer stops resends, a refused notification is resent on the
//! provider's scaled schedule, a dropped one never arrives, faults are what they say.

use payhook_testkit::harness::unique;
use std::sync::Arc;
use std::time::Duration;

use payhook_shared::clock::SystemClock;
use payhook_shared::event::{Kind, Provider};
use payhook_sim::schedule::{self, TimeScale};
use payhook_sim::{Faults, NotificationTruth, SimConfig, Simulator};
use payhook_testkit::harness::{TestBroker, TestReceiver, eventually, test_settings};

/// 4 min of Alipay time is 240 ms; WeChat's 15 s are 15 ms.
const SCALE: f64 = 0.001;
const WITHIN: Duration = Duration::from_secs(20);

struct Stack {
    sim: Simulator,
    receiver: TestReceiver,
    broker: TestBroker,
}

async fn stack() -> Stack {
    let mut config = SimConfig::default();
    let mut settings = test_settings();
    config.providers.register(&mut settings);
    let receiver = TestReceiver::spawn(settings, Arc::new(SystemClock)).await;
    config.notify_base = Some(receiver.base_url.clone());
    config.time_scale = SCALE;
    let sim = Simulator::start(config).await.expect("simulator starts");
    Stack {
        sim,
        receiver,
        broker: TestBroker::connect().await,
    }
}

impl Stack {
    /// Creates and pays an order with `faults`; returns the notification id.
    fn paid(&self, provider: Provider, order: &str, faults: Faults) -> String {
        self.sim
            .create_order(provider, order, 8_888)
            .expect("created");
        self.sim
            .set_order_faults(provider, order, faults)
            .expect("faults set");
        self.sim
            .pay(provider, order)
            .expect("paid")
            .expect("payments are notified")
    }

    async fn settled(&self, id: &str) -> NotificationTruth {
        assert!(
            eventually(WITHIN, || self
                .sim
                .notification(id)
                .is_some_and(|n| n.settled()))
            .await,
            "notification {id} did not settle: {:?}",
            self.sim.notification(id)
        );
        self.sim.notification(id).expect("known notification")
    }
}

#[tokio::test]
async fn each_provider_stops_resending_after_the_success_answer() {
    let s = stack().await;
    for provider in Provider::ALL {
        let id = s.paid(provider, &unique("o"), Faults::default());
        let n = s.settled(&id).await;
        assert!(n.acked, "{provider}: {n:?}");
        assert_eq!(n.sent(), 1, "{provider}: one request, no resend");
    }
    assert_eq!(s.broker.depth(&s.receiver.names.work).await, 3);
    assert_eq!(s.sim.summary().resends, 0);
}

#[tokio::test]
async fn a_refused_notification_is_resent_on_the_scaled_wechat_schedule() {
    let s = stack().await;
    let id = s.paid(
        Provider::WechatV3,
        &unique("o"),
        Faults {
            corrupt_attempts: 3,
            ..Faults::default()
        },
    );
    let n = s.settled(&id).await;
    assert!(n.acked);
    assert_eq!(n.sent(), 4, "three refused attempts, then the good one");
    for refused in &n.attempts[..3] {
        assert!(
            !refused.acked && refused.status.is_some_and(|s| s >= 400),
            "{refused:?}"
        );
        assert_eq!(refused.fault, Some("corrupt_signature"));
    }
    // Each resend waits at least its scaled interval (15 s, 15 s, 30 s → ms).
    for (i, pair) in n.attempts.windows(2).enumerate() {
        let gap = pair[1].at - pair[0].at;
        let interval = TimeScale(SCALE).apply(schedule::WECHAT[i]);
        assert!(gap >= interval, "resend {i}: {gap:?} < {interval:?}");
    }
    assert_eq!(s.broker.depth(&s.receiver.names.work).await, 1);
}

#[tokio::test]
async fn alipay_resends_a_refused_notification_after_four_scaled_minutes() {
    let s = stack().await;
    let id = s.paid(
        Provider::Alipay,
        &unique("o"),
        Faults {
            corrupt_attempts: 1,
            ..Faults::default()
        },
    );
    let n = s.settled(&id).await;
    assert_eq!(
        n.attempts.iter().map(|a| a.acked).collect::<Vec<_>>(),
        [false, true]
    );
    assert!(n.attempts[1].at - n.attempts[0].at >= Duration::from_millis(240));
}

#[tokio::test]
async fn a_delayed_notification_waits_its_scaled_delay_before_the_first_attempt() {
    let s = stack().await;
    let id = s.paid(
        Provider::WechatV2,
        &unique("o"),
        Faults {
            delay: Duration::from_secs(300),
            ..Faults::default()
        },
    );
    let n = s.settled(&id).await;
    assert!(n.acked);
    assert!(
        n.attempts[0].at >= Duration::from_millis(300),
        "{:?}",
        n.attempts
    );
    assert_eq!(n.faults, ["delay"]);
}

#[tokio::test]
async fn a_dropped_notification_is_never_delivered() {
    let s = stack().await;
    let dropped = s.paid(Provider::Alipay, &unique("o"), Faults::dropped());
    let delivered = s.paid(Provider::Alipay, &unique("o"), Faults::default());
    assert!(s.settled(&delivered).await.acked);
    let n = s.settled(&dropped).await;
    assert!(n.dropped && !n.acked);
    assert_eq!(n.sent(), 0);
    let work = s.broker.drain(&s.receiver.names.work).await;
    assert_eq!(work.len(), 1, "only the delivered one reached the broker");
}

#[tokio::test]
async fn a_duplicate_is_sent_twice_at_once_and_both_copies_are_acked() {
    let s = stack().await;
    let id = s.paid(
        Provider::WechatV2,
        &unique("o"),
        Faults {
            duplicate: true,
            ..Faults::default()
        },
    );
    let n = s.settled(&id).await;
    assert_eq!(n.sent(), 2);
    assert!(n.attempts.iter().all(|a| a.acked));
    assert_eq!(n.attempts[0].at, n.attempts[1].at);
    assert_eq!(s.broker.depth(&s.receiver.names.work).await, 2);
}

#[tokio::test]
async fn a_reordered_payment_arrives_after_its_refund() {
    let s = stack().await;
    let order = unique("o");
    let payment = s.paid(
        Provider::WechatV3,
        &order,
        Faults {
            reorder: true,
            ..Faults::default()
        },
    );
    let refund = s
        .sim
        .refund(Provider::WechatV3, &order, &unique("r"), 1_000)
        .expect("refunded")
        .expect("refunds are notified");
    assert!(s.settled(&refund).await.acked);
    assert!(s.settled(&payment).await.acked);
    let kinds: Vec<Kind> = s
        .broker
        .drain(&s.receiver.names.work)
        .await
        .into_iter()
        .map(|t| t.envelope.kind)
        .collect();
    assert_eq!(kinds, [Kind::Refund, Kind::Payment]);
}

#[tokio::test]
async fn a_sign_test_probe_and_a_stale_timestamp_are_refused_then_the_real_one_is_acked() {
    let s = stack().await;
    let id = s.paid(
        Provider::WechatV3,
        &unique("o"),
        Faults {
            sign_test_probe: true,
            stale_attempts: 1,
            ..Faults::default()
        },
    );
    let n = s.settled(&id).await;
    let faults: Vec<_> = n.attempts.iter().map(|a| (a.fault, a.acked)).collect();
    assert_eq!(
        faults,
        [
            (Some("sign_test_probe"), false),
            (Some("stale_timestamp"), false),
            (None, true)
        ]
    );
}

#[tokio::test]
async fn a_gbk_alipay_refund_is_acked_with_the_cumulative_amount() {
    let s = stack().await;
    let order = unique("o");
    let payment = s.paid(
        Provider::Alipay,
        &order,
        Faults {
            gbk: true,
            ..Faults::default()
        },
    );
    let first = s
        .sim
        .refund(Provider::Alipay, &order, "r1", 1_000)
        .expect("refund");
    let second = s
        .sim
        .refund(Provider::Alipay, &order, "r2", 888)
        .expect("refund");
    for id in [Some(payment), first, second].into_iter().flatten() {
        assert!(s.settled(&id).await.acked);
    }
    let work = s.broker.drain(&s.receiver.names.work).await;
    let cumulative: Vec<Option<i64>> = work
        .iter()
        .filter(|t| t.envelope.kind == Kind::Refund)
        .map(|t| t.envelope.fields.refund_amount)
        .collect();
    assert_eq!(cumulative.len(), 2);
    assert!(cumulative.contains(&Some(1_000)) && cumulative.contains(&Some(1_888)));
    let truth = s.sim.order(Provider::Alipay, &order).expect("order");
    assert_eq!((truth.refunded_fen, truth.refunds.len()), (1_888, 2));
}

#[tokio::test]
async fn a_seeded_scenario_with_fault_rates_settles_every_notification() {
    let s = stack().await;
    // A second simulator with fault rates, same merchants, same receiver.
    let mut config = SimConfig::new(s.sim.providers().clone());
    config.notify_base = Some(s.receiver.base_url.clone());
    config.time_scale = SCALE;
    config.seed = 7;
    config.fault_rates.drop = 0.3;
    config.fault_rates.duplicate = 0.3;
    let sim = Simulator::start(config).await.expect("simulator starts");
    for i in 0..12 {
        let provider = Provider::ALL[i % 3];
        let order = unique("o");
        sim.create_order(provider, &order, 100 + i as i64)
            .expect("created");
        sim.pay(provider, &order).expect("paid");
    }
    assert!(sim.settle(WITHIN).await);
    let summary = sim.summary();
    assert_eq!(summary.notifications, 12);
    assert_eq!(summary.acked + summary.dropped, 12, "{summary:?}");
    assert!(
        summary.dropped > 0 && summary.faults.contains_key("duplicate"),
        "{summary:?}"
    );
    let copies: usize = sim.notifications().iter().map(|n| n.sent()).sum();
    assert_eq!(
        s.broker.depth(&s.receiver.names.work).await as usize,
        copies,
        "every request sent was acked and queued"
    );
}
