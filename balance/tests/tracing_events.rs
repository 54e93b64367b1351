//! The balancer's `tracing` events, seen by a collecting subscriber: an
//! endpoint added and removed, an ejection, the probe after it, a re-send
//! on another endpoint with its reason, and a non-idempotent call not
//! re-sent.

mod support;

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::CallError;
use courier_balance::{ConnectionStatus, Ejection, RoundRobin};
use courier_registry::Change;
use support::{cluster, until, WorkClient};
use tracing::field::{Field, Visit};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::Layer;

/// One event: its message, level and fields.
#[derive(Clone, Debug, Default)]
struct Seen {
    message: String,
    level: String,
    fields: HashMap<String, String>,
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let text = format!("{value:?}");
        if field.name() == "message" {
            self.message = text;
        } else {
            self.fields.insert(field.name().into(), text);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields.insert(field.name().into(), value.into());
    }
}

/// Keeps every event of target `courier_balance`.
#[derive(Clone, Default)]
struct Events(Arc<Mutex<Vec<Seen>>>);

impl<S: tracing::Subscriber> Layer<S> for Events {
    fn on_event(&self, event: &tracing::Event<'_>, _: Context<'_, S>) {
        if event.metadata().target() != "courier_balance" {
            return;
        }
        let mut seen = Seen {
            level: event.metadata().level().to_string(),
            ..Seen::default()
        };
        event.record(&mut seen);
        self.0.lock().unwrap().push(seen);
    }
}

impl Events {
    /// Runs `f` with this collector as the thread's subscriber.
    fn during<R>(&self, f: impl FnOnce() -> R) -> R {
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::with_default(subscriber, f)
    }

    /// The events with `message` about `instance`.
    fn about(&self, message: &str, instance: &str) -> Vec<Seen> {
        self.0
            .lock()
            .unwrap()
            .iter()
            .filter(|e| {
                e.message == message
                    && e.fields.get("instance").map(String::as_str) == Some(instance)
            })
            .cloned()
            .collect()
    }
}

#[test]
fn ejection_probe_and_membership_are_traced() {
    let events = Events::default();
    events.during(|| {
        let ejection = Ejection {
            consecutive_failures: 2,
            base: Duration::from_secs(1),
            max: Duration::from_secs(8),
        };
        let (cluster, balanced, driver, servers) =
            cluster(3, |b| b.strategy(RoundRobin::new()).ejection(ejection));
        cluster.record.failing.lock().unwrap().insert("w-0".into());
        cluster.record.gate.open();
        let work = WorkClient::new(balanced);
        let body = async {
            // Two failures on w-0 eject it.
            for _ in 0..6 {
                let _ = work.flaky().await;
            }
            let ejected = events.about("endpoint ejected after repeated failures", "w-0");
            assert_eq!(ejected.len(), 1, "{ejected:?}");
            assert_eq!(ejected[0].level, "WARN");
            assert_eq!(
                ejected[0].fields.get("until").map(String::as_str),
                Some("1s")
            );
            assert!(events
                .about("endpoint probed after its ejection", "w-0")
                .is_empty());
            // Its ejection ends: the next call to it is its probe.
            cluster.record.failing.lock().unwrap().clear();
            cluster.clock.advance(Duration::from_secs(1));
            for _ in 0..6 {
                work.flaky().await.unwrap();
            }
            assert_eq!(
                events
                    .about("endpoint probed after its ejection", "w-0")
                    .len(),
                1
            );
            // It leaves discovery.
            cluster.send(Change::Removed {
                instance: "w-2".into(),
            });
            until(|| work.client().endpoints().len() == 2).await;
            let removed = events.about("endpoint removed", "w-2");
            assert_eq!(removed.len(), 1);
            assert_eq!(
                removed[0].fields.get("why").map(String::as_str),
                Some("left discovery")
            );
            drop(work);
        };
        futures::executor::block_on(async { futures::join!(body, driver, servers) });
    });
    for name in ["w-0", "w-1", "w-2"] {
        assert_eq!(events.about("endpoint added", name).len(), 1, "{name}");
    }
}

#[test]
fn a_failover_and_a_refused_re_send_are_traced_with_their_reason() {
    let events = Events::default();
    events.during(|| {
        let (cluster, balanced, driver, servers) = cluster(3, |b| b.strategy(RoundRobin::new()));
        let work = WorkClient::new(balanced);
        let body = async {
            // Three reads and three writes, one of each held on every
            // instance; w-1 dies under them.
            let reads = futures::future::join_all((0..3).map(|id| work.read(id)));
            let writes = futures::future::join_all((10..13).map(|id| work.write(id)));
            let kill = async {
                until(|| cluster.record.started_total() == 6).await;
                assert_eq!(cluster.record.started("w-1"), 2);
                cluster.kill("w-1");
                until(|| {
                    work.client()
                        .endpoints()
                        .iter()
                        .any(|e| e.instance == "w-1" && e.connection != ConnectionStatus::Ready)
                })
                .await;
                cluster.record.gate.open();
            };
            let (reads, writes, ()) = futures::join!(reads, writes, kill);
            assert!(reads.iter().all(Result::is_ok), "{reads:?}");
            assert_eq!(writes.iter().filter(|w| w.is_err()).count(), 1);
            drop(work);
        };
        futures::executor::block_on(async { futures::join!(body, driver, servers) });
    });
    let resent = events.about("call re-sent on another endpoint", "w-1");
    assert_eq!(resent.len(), 1, "the read on w-1: {resent:?}");
    assert_eq!(
        resent[0].fields.get("reason"),
        Some(&CallError::ConnectionLost.to_string())
    );
    let refused = events.about("call failed, not re-sent", "w-1");
    assert_eq!(refused.len(), 1, "the write on w-1: {refused:?}");
    let outcome = refused[0]
        .fields
        .get("outcome")
        .cloned()
        .unwrap_or_default();
    assert!(outcome.contains("idempotent"), "{outcome}");
}
