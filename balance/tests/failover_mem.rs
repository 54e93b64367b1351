//! The balanced client over in-memory servers, on a manual clock: calls
//! spread over the instances; a killed instance's idempotent calls are
//! re-sent and all succeed, its non-idempotent ones fail typed and never
//! run twice; the retry budget caps re-sends; outliers are ejected and
//! probed back; discovery removals drain and additions get traffic; the
//! calls picked between two polls of the driver share a turn.

mod support;

use std::time::Duration;

use courier::{CallError, NotRetried, RemoteError, Unsent};
use courier_balance::{Balanced, BalancedBuilder};
use courier_balance::{Candidate, Pick, Strategy};
use courier_balance::{ConnectionStatus, Ejection, RetryBudget, RoundRobin};
use courier_registry::{Change, SnapshotKind};
use futures::StreamExt;
use support::{cluster, cluster_with, endpoint, until, ManualClock, WorkClient};

const CALLS: u64 = 60;

/// Runs `CALLS` calls of `method` with every handler held at the gate,
/// kills `w-1` while they are all running, opens the gate; returns the
/// results by id and how many were running on `w-1`.
fn kill_mid_load(
    write: bool,
    configure: impl FnOnce(BalancedBuilder<ManualClock>) -> BalancedBuilder<ManualClock>,
) -> (Vec<Result<String, CallError>>, u64, support::Cluster) {
    let (cluster, balanced, driver, servers) = cluster(3, configure);
    let work = WorkClient::new(balanced);
    let body = async {
        let calls = (0..CALLS).map(|id| {
            let work = &work;
            async move {
                if write {
                    work.write(id).await
                } else {
                    work.read(id).await
                }
            }
        });
        let all = futures::future::join_all(calls);
        let kill = async {
            until(|| cluster.record.started_total() == CALLS).await;
            let on_dead = cluster.record.started("w-1");
            cluster.kill("w-1");
            // Let the connection's end reach the calls before the others
            // finish.
            until(|| {
                work.client()
                    .endpoints()
                    .iter()
                    .any(|e| e.instance == "w-1" && e.connection != ConnectionStatus::Ready)
            })
            .await;
            cluster.record.gate.open();
            on_dead
        };
        let (results, on_dead) = futures::join!(all, kill);
        drop(work);
        (results, on_dead)
    };
    let ((results, on_dead), (), ()) =
        futures::executor::block_on(async { futures::join!(body, driver, servers) });
    (results, on_dead, cluster)
}

#[test]
fn idempotent_calls_all_succeed_when_an_instance_dies_under_them() {
    let (results, on_dead, cluster) = kill_mid_load(false, |b| b);
    assert!(on_dead > 0, "the dead instance had calls running");
    for (id, result) in results.iter().enumerate() {
        let served_by = result.as_ref().unwrap_or_else(|e| panic!("call {id}: {e}"));
        assert_ne!(served_by, "w-1", "answered by the dead instance");
    }
    // Exactly the calls that were running on w-1 ran twice.
    let runs = cluster.record.runs.lock().unwrap();
    let twice = runs.values().filter(|&&n| n == 2).count() as u64;
    assert_eq!(twice, on_dead);
    assert!(runs.values().all(|&n| n <= 2));
}

#[test]
fn a_non_idempotent_call_on_the_dead_instance_fails_typed_and_never_runs_twice() {
    let (results, on_dead, cluster) = kill_mid_load(true, |b| b);
    assert!(on_dead > 0);
    let failed: Vec<_> = results.iter().filter(|r| r.is_err()).collect();
    assert_eq!(failed.len() as u64, on_dead, "one failure per call on w-1");
    for error in failed {
        assert_eq!(
            *error,
            Err(CallError::NotRetried {
                reason: NotRetried::NotIdempotent,
                may_have_run: true
            })
        );
    }
    assert!(results
        .iter()
        .filter_map(|r| r.as_ref().ok())
        .all(|by| by != "w-1"));
    let runs = cluster.record.runs.lock().unwrap();
    assert_eq!(runs.len() as u64, CALLS, "every call ran");
    assert!(runs.values().all(|&n| n == 1), "no call ran twice");
}

#[test]
fn an_exhausted_budget_fails_the_rest_typed() {
    let (results, on_dead, cluster) =
        kill_mid_load(false, |b| b.retry_budget(RetryBudget::new(0, 1)));
    assert!(on_dead >= 2, "{on_dead}");
    let exhausted = CallError::NotRetried {
        reason: NotRetried::BudgetExhausted,
        may_have_run: true,
    };
    let failed = results.iter().filter(|r| **r == Err(exhausted)).count() as u64;
    // One token: one re-send; the other calls of w-1 fail.
    assert_eq!(failed, on_dead - 1);
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count() as u64,
        CALLS - failed
    );
    let runs = cluster.record.runs.lock().unwrap();
    assert_eq!(runs.values().filter(|&&n| n == 2).count(), 1);
}

#[test]
fn a_call_out_of_attempts_fails_typed() {
    // One attempt: nothing is re-sent, whatever the budget.
    let (results, on_dead, cluster) = kill_mid_load(false, |b| b.max_attempts(1));
    assert!(on_dead > 0);
    let out = CallError::NotRetried {
        reason: NotRetried::AttemptsExhausted,
        may_have_run: true,
    };
    assert_eq!(
        results.iter().filter(|r| **r == Err(out)).count() as u64,
        on_dead
    );
    assert_eq!(
        results.iter().filter(|r| r.is_ok()).count() as u64,
        CALLS - on_dead
    );
    assert!(cluster
        .record
        .runs
        .lock()
        .unwrap()
        .values()
        .all(|&n| n == 1));
}

#[test]
fn an_outlier_is_ejected_then_probed_back() {
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
        let mut panicked = 0;
        for _ in 0..6 {
            match work.flaky().await {
                Ok(by) => assert_ne!(by, "w-0"),
                Err(e) => {
                    assert_eq!(e, CallError::Remote(RemoteError::HandlerPanicked));
                    panicked += 1;
                }
            }
        }
        assert_eq!(panicked, 2);
        let stats = work.client().endpoints();
        let w0 = stats.iter().find(|e| e.instance == "w-0").unwrap();
        assert_eq!(w0.ejected_until, Some(Duration::from_secs(1)));
        assert_eq!((w0.calls, w0.failures), (2, 2));
        // Ejected: ten calls, none to w-0, all fine.
        for _ in 0..10 {
            assert_ne!(work.flaky().await.unwrap(), "w-0");
        }
        let calls = |work: &WorkClient<Balanced<ManualClock>>| {
            work.client()
                .endpoints()
                .into_iter()
                .find(|e| e.instance == "w-0")
                .unwrap()
        };
        assert_eq!(calls(&work).calls, 2);
        // Healed; its ejection ends: probed, and back in the rotation.
        cluster.record.failing.lock().unwrap().clear();
        cluster.clock.advance(Duration::from_secs(1));
        let mut by_w0 = 0;
        for _ in 0..6 {
            if work.flaky().await.unwrap() == "w-0" {
                by_w0 += 1;
            }
        }
        assert_eq!(by_w0, 2);
        let w0 = calls(&work);
        assert!(!w0.is_ejected());
        assert_eq!(w0.consecutive_failures, 0);
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn a_failed_probe_is_ejected_for_twice_as_long() {
    let ejection = Ejection {
        consecutive_failures: 1,
        base: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };
    let (cluster, balanced, driver, servers) =
        cluster(2, |b| b.strategy(RoundRobin::new()).ejection(ejection));
    cluster.record.failing.lock().unwrap().insert("w-0".into());
    let work = WorkClient::new(balanced);
    let body = async {
        let w0 = |work: &WorkClient<Balanced<ManualClock>>| {
            work.client()
                .endpoints()
                .into_iter()
                .find(|e| e.instance == "w-0")
                .unwrap()
        };
        while work.flaky().await.is_ok() {}
        assert_eq!(w0(&work).ejected_until, Some(Duration::from_secs(1)));
        cluster.clock.advance(Duration::from_secs(1));
        while work.flaky().await.is_ok() {}
        // Probed at 1 s, failed: out until 1 + 2 s.
        assert_eq!(w0(&work).ejected_until, Some(Duration::from_secs(3)));
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn a_removed_instance_drains_its_calls_and_an_added_one_gets_traffic() {
    let (cluster, balanced, driver, servers) = cluster(3, |b| b);
    let work = WorkClient::new(balanced);
    let body = async {
        let calls = futures::future::join_all((0..30).map(|id| work.read(id)));
        let change = async {
            until(|| cluster.record.started_total() == 30).await;
            let on_removed = cluster.record.started("w-2");
            cluster.send(Change::Removed {
                instance: "w-2".into(),
            });
            until(|| work.client().endpoints().len() == 2).await;
            assert!(!cluster.record.ended.lock().unwrap().contains("w-2"));
            cluster.record.gate.open();
            on_removed
        };
        let (results, on_removed) = futures::join!(calls, change);
        assert!(on_removed > 0);
        // The calls in flight on w-2 finished there: nothing re-sent.
        let by_w2 = results.iter().filter(|r| r.as_deref() == Ok("w-2")).count() as u64;
        assert_eq!(by_w2, on_removed);
        assert!(cluster
            .record
            .runs
            .lock()
            .unwrap()
            .values()
            .all(|&n| n == 1));
        // Then its connection closed.
        until(|| cluster.record.ended.lock().unwrap().contains("w-2")).await;
        // A new instance joins and gets calls; w-2 gets none.
        cluster.send(Change::Added(endpoint(3)));
        until(|| {
            work.client()
                .endpoints()
                .iter()
                .any(|e| e.instance == "w-3" && e.connection == ConnectionStatus::Ready)
        })
        .await;
        let results = futures::future::join_all((100..130).map(|id| work.read(id))).await;
        let by = |name: &str| results.iter().filter(|r| r.as_deref() == Ok(name)).count();
        assert!(by("w-3") > 0);
        assert_eq!(by("w-2"), 0);
        assert!(results.iter().all(Result::is_ok));
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn without_endpoints_a_call_fails_not_sent_at_once() {
    // Discovery answered with an empty set: nothing to wait for.
    let (cluster, balanced, driver, servers) = cluster(0, |b| b);
    let work = WorkClient::new(balanced);
    let body = async {
        // One turn lets the driver apply the empty snapshot.
        support::yield_now().await;
        assert_eq!(
            work.read(1).await,
            Err(CallError::NotSent(Unsent::NoEndpoint))
        );
        // An instance that refuses dials is down: skipped, nothing to
        // wait for.
        cluster.kill("w-0");
        cluster.send(Change::Snapshot {
            endpoints: vec![endpoint(0)],
            kind: SnapshotKind::Resync,
        });
        until(|| {
            work.client()
                .endpoints()
                .iter()
                .any(|e| matches!(e.connection, ConnectionStatus::Down { .. }) && e.failures == 1)
        })
        .await;
        assert_eq!(
            work.read(2).await,
            Err(CallError::NotSent(Unsent::NoEndpoint))
        );
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn before_discovery_answers_a_call_waits_up_to_max_wait() {
    // A source that never answers, and dials that never finish.
    let clock = ManualClock::default();
    let (_events, silent) = futures::channel::mpsc::unbounded();
    let never = |_: &courier_registry::Endpoint| {
        futures::future::pending::<Result<(courier::Client, futures::future::Pending<()>), String>>(
        )
    };
    let (balanced, driver) = courier_balance::Balanced::builder(clock.clone())
        .max_wait(Duration::from_secs(2))
        .build(silent, never);
    let work = WorkClient::new(balanced);
    let body = async {
        let call = work.read(1);
        let advance = async {
            support::yield_now().await;
            clock.advance(Duration::from_secs(1));
            support::yield_now().await;
            clock.advance(Duration::from_secs(1));
        };
        let (result, ()) = futures::join!(call, advance);
        assert_eq!(result, Err(CallError::NotSent(Unsent::NoEndpoint)));
        // With a shorter timeout, the deadline ends the wait.
        let timed = work.with_timeout(Duration::from_millis(500));
        let call = timed.read(2);
        let advance = async {
            support::yield_now().await;
            clock.advance(Duration::from_millis(500));
        };
        let (result, ()) = futures::join!(call, advance);
        assert_eq!(result, Err(CallError::DeadlineExceeded));
        drop(timed);
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver) });
}

#[test]
fn streams_go_to_one_endpoint() {
    let (cluster, balanced, driver, servers) = cluster(3, |b| b.strategy(RoundRobin::new()));
    let work = WorkClient::new(balanced);
    let body = async {
        until(|| {
            let stats = work.client().endpoints();
            stats.len() == 3
                && stats
                    .iter()
                    .all(|e| e.connection == ConnectionStatus::Ready)
        })
        .await;
        for _ in 0..3 {
            let names: Vec<_> = work.names(3).collect().await;
            assert_eq!(names.len(), 3, "{names:?}");
            assert!(names.iter().all(|n| n == &names[0]), "{names:?}");
        }
        let stats = work.client().endpoints();
        assert!(stats.iter().all(|e| e.calls == 1), "{stats:?}");
        drop(cluster);
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn a_down_endpoint_is_dialled_again_with_doubling_backoff() {
    let ms = Duration::from_millis;
    let (cluster, balanced, driver, servers) = cluster(2, |b| {
        b.strategy(RoundRobin::new())
            .reconnect_backoff(ms(100), ms(300))
    });
    cluster.record.gate.open();
    let work = WorkClient::new(balanced);
    let w0 = |work: &WorkClient<Balanced<ManualClock>>| {
        work.client()
            .endpoints()
            .into_iter()
            .find(|e| e.instance == "w-0")
            .unwrap()
    };
    let ready = |work: &WorkClient<Balanced<ManualClock>>| {
        let stats = work.client().endpoints();
        stats.len() == 2
            && stats
                .iter()
                .all(|e| e.connection == ConnectionStatus::Ready)
    };
    let body = async {
        until(|| ready(&work)).await;
        cluster.kill("w-0");
        // Down at once: the connection's end; first redial after 100 ms.
        until(|| w0(&work).connection != ConnectionStatus::Ready).await;
        assert_eq!(
            w0(&work).connection,
            ConnectionStatus::Down { retry_at: ms(100) }
        );
        // Skipped while down.
        for id in 0..4 {
            assert_eq!(work.read(id).await.as_deref(), Ok("w-1"));
        }
        cluster.clock.advance(ms(99));
        support::yield_now().await;
        assert_eq!(w0(&work).failures, 0, "not dialled before its time");
        cluster.clock.advance(ms(1));
        // Dialled at 100 ms, refused: 100 ms to the next dial, then twice
        // that after each refusal, up to 300 ms.
        until(|| w0(&work).failures == 1).await;
        assert_eq!(
            w0(&work).connection,
            ConnectionStatus::Down { retry_at: ms(200) }
        );
        cluster.clock.advance(ms(100));
        until(|| w0(&work).failures == 2).await;
        assert_eq!(
            w0(&work).connection,
            ConnectionStatus::Down { retry_at: ms(400) }
        );
        cluster.clock.advance(ms(200));
        until(|| w0(&work).failures == 3).await;
        assert_eq!(
            w0(&work).connection,
            ConnectionStatus::Down { retry_at: ms(700) }
        );
        // The instance restarts: the next dial connects and it gets calls.
        cluster.revive("w-0");
        cluster.clock.advance(ms(300));
        until(|| w0(&work).connection == ConnectionStatus::Ready).await;
        let mut by_w0 = 0;
        for id in 10..14 {
            if work.read(id).await.unwrap() == "w-0" {
                by_w0 += 1;
            }
        }
        assert_eq!(by_w0, 2);
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn a_non_idempotent_call_refused_as_overloaded_is_sent_elsewhere_and_runs_once() {
    // w-0 runs one handler at a time and refuses more: a refused call never
    // ran, so even a write is re-sent (under the budget).
    let server = |i: usize| {
        let builder = courier::ServerBuilder::new();
        if i == 0 {
            builder
                .max_concurrent(1)
                .when_full(courier::WhenFull::Reject)
        } else {
            builder
        }
    };
    let (cluster, balanced, driver, servers) =
        cluster_with(2, server, |b| b.strategy(RoundRobin::new()));
    let work = WorkClient::new(balanced);
    let body = async {
        until(|| {
            let stats = work.client().endpoints();
            stats.len() == 2
                && stats
                    .iter()
                    .all(|e| e.connection == ConnectionStatus::Ready)
        })
        .await;
        // Round robin: w-0, w-1, w-0 (refused: to w-1), w-1.
        let calls = futures::future::join_all((0..4).map(|id| work.write(id)));
        let open = async {
            until(|| cluster.record.started_total() == 4).await;
            cluster.record.gate.open();
        };
        let (results, ()) = futures::join!(calls, open);
        let by: Vec<_> = results.iter().map(|r| r.as_deref().unwrap()).collect();
        assert_eq!(by, ["w-0", "w-1", "w-1", "w-1"]);
        assert_eq!(cluster.record.started("w-0"), 1);
        assert!(cluster
            .record
            .runs
            .lock()
            .unwrap()
            .values()
            .all(|&n| n == 1));
        // The refusal counts against w-0.
        let w0 = &work.client().endpoints()[0];
        assert_eq!((w0.calls, w0.failures), (2, 1));
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn an_update_reweights_in_place_and_a_new_address_redials() {
    let (cluster, balanced, driver, servers) = cluster(2, |b| b.strategy(RoundRobin::new()));
    cluster.record.gate.open();
    let work = WorkClient::new(balanced);
    let w0 = |work: &WorkClient<Balanced<ManualClock>>| {
        work.client()
            .endpoints()
            .into_iter()
            .find(|e| e.instance == "w-0")
    };
    let body = async {
        until(|| w0(&work).is_some_and(|e| e.connection == ConnectionStatus::Ready)).await;
        // Weight 0: the same connection stays, but gets no calls.
        cluster.send(Change::Updated(endpoint(0).with_weight(0)));
        until(|| w0(&work).is_some_and(|e| e.weight == 0)).await;
        for id in 0..4 {
            assert_eq!(work.read(id).await.as_deref(), Ok("w-1"));
        }
        assert!(!cluster.record.ended.lock().unwrap().contains("w-0"));
        assert_eq!(
            w0(&work).map(|e| e.connection),
            Some(ConnectionStatus::Ready)
        );
        // A new address: a new connection; the old one closes.
        let mut moved = endpoint(0);
        moved.address = courier_registry::Address::Unix("mem-0-moved".into());
        cluster.send(Change::Updated(moved.clone()));
        until(|| cluster.record.ended.lock().unwrap().contains("w-0")).await;
        until(|| {
            w0(&work).is_some_and(|e| {
                e.address == moved.address && e.connection == ConnectionStatus::Ready
            })
        })
        .await;
        let answers: Vec<_> = futures::future::join_all((10..14).map(|id| work.read(id))).await;
        assert!(answers.iter().any(|a| a.as_deref() == Ok("w-0")));
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn a_discovery_outage_keeps_the_known_endpoints_serving() {
    let (cluster, balanced, driver, servers) = cluster(2, |b| b);
    cluster.record.gate.open();
    let work = WorkClient::new(balanced);
    let body = async {
        let lost = courier_registry::DiscoverError::Unavailable("registry restarting".into());
        cluster.send_error(lost.clone());
        until(|| work.client().discovery_error().is_some()).await;
        assert_eq!(work.client().discovery_error(), Some(lost));
        // Registry loss is not service loss.
        let results = futures::future::join_all((0..20).map(|id| work.read(id))).await;
        assert!(results.iter().all(Result::is_ok));
        assert_eq!(work.client().endpoints().len(), 2);
        // The source is back: a resync replaces the set, the error clears.
        cluster.send(Change::Snapshot {
            endpoints: vec![endpoint(0), endpoint(1)],
            kind: SnapshotKind::Resync,
        });
        until(|| work.client().discovery_error().is_none()).await;
        assert!(!cluster.record.ended.lock().unwrap().contains("w-0"));
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn a_resync_that_leaves_out_ready_endpoints_keeps_them_for_the_grace() {
    // A restarted registry answers the resuming watch with a resync of what
    // registered again so far: here nothing.
    let grace = Duration::from_secs(3);
    let (cluster, balanced, driver, servers) = cluster(2, |b| b.resync_grace(grace));
    cluster.record.gate.open();
    let work = WorkClient::new(balanced);
    let names = |work: &WorkClient<Balanced<ManualClock>>| {
        let mut names: Vec<_> = work
            .client()
            .endpoints()
            .into_iter()
            .map(|e| e.instance)
            .collect();
        names.sort();
        names
    };
    let body = async {
        until(|| both_ready(&work)).await;
        cluster.send(Change::Snapshot {
            endpoints: vec![],
            kind: SnapshotKind::Resync,
        });
        support::yield_now().await;
        // Both kept, both serving.
        let results = futures::future::join_all((0..10).map(|id| work.read(id))).await;
        assert!(results.iter().all(Result::is_ok), "{results:?}");
        assert_eq!(names(&work), ["w-0", "w-1"]);
        // w-0 registers again: its grace ends, its connection stays.
        cluster.send(Change::Added(endpoint(0)));
        support::yield_now().await;
        // Just before the grace's end both are still there.
        cluster.clock.advance(grace - Duration::from_millis(1));
        support::yield_now().await;
        assert_eq!(names(&work), ["w-0", "w-1"]);
        // At its end w-1, never named again, leaves; w-0 stays.
        cluster.clock.advance(Duration::from_millis(1));
        until(|| names(&work) == ["w-0"]).await;
        until(|| cluster.record.ended.lock().unwrap().contains("w-1")).await;
        assert!(!cluster.record.ended.lock().unwrap().contains("w-0"));
        assert_eq!(work.read(99).await.as_deref(), Ok("w-0"));
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn with_no_resync_grace_a_resync_replaces_the_set_at_once() {
    let (cluster, balanced, driver, servers) = cluster(2, |b| b.resync_grace(Duration::ZERO));
    cluster.record.gate.open();
    let work = WorkClient::new(balanced);
    let body = async {
        until(|| both_ready(&work)).await;
        cluster.send(Change::Snapshot {
            endpoints: vec![endpoint(1)],
            kind: SnapshotKind::Resync,
        });
        until(|| work.client().endpoints().len() == 1).await;
        assert_eq!(work.read(1).await.as_deref(), Ok("w-1"));
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn a_removal_during_the_resync_grace_removes_at_once() {
    let (cluster, balanced, driver, servers) =
        cluster(2, |b| b.resync_grace(Duration::from_secs(3)));
    cluster.record.gate.open();
    let work = WorkClient::new(balanced);
    let body = async {
        until(|| both_ready(&work)).await;
        cluster.send(Change::Snapshot {
            endpoints: vec![],
            kind: SnapshotKind::Resync,
        });
        cluster.send(Change::Removed {
            instance: "w-0".into(),
        });
        until(|| work.client().endpoints().len() == 1).await;
        assert_eq!(work.client().endpoints()[0].instance, "w-1");
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

fn both_ready(work: &WorkClient<Balanced<ManualClock>>) -> bool {
    let stats = work.client().endpoints();
    stats.len() == 2
        && stats
            .iter()
            .all(|e| e.connection == ConnectionStatus::Ready)
}

#[test]
fn a_reply_s_latency_is_measured_on_the_clock_and_calls_leave_the_count() {
    let (cluster, balanced, driver, servers) = cluster(2, |b| b.strategy(RoundRobin::new()));
    cluster.record.slow.lock().unwrap().insert("w-0".into());
    cluster.record.gate.open();
    let work = WorkClient::new(balanced);
    let stats = |work: &WorkClient<Balanced<ManualClock>>, instance: &str| {
        work.client()
            .endpoints()
            .into_iter()
            .find(|e| e.instance == instance)
            .unwrap()
    };
    let body = async {
        until(|| both_ready(&work)).await;
        // One call on each; w-0's handler takes `SLOW` on the clock.
        let calls = futures::future::join(work.read(1), work.read(2));
        let slow = async {
            // w-1 answered at once; w-0's handler waits for the clock.
            until(|| {
                cluster.record.started("w-0") == 1
                    && cluster.record.started("w-1") == 1
                    && stats(&work, "w-1").in_flight == 0
            })
            .await;
            assert_eq!(stats(&work, "w-0").in_flight, 1);
            cluster.clock.advance(support::SLOW);
        };
        let ((a, b), ()) = futures::join!(calls, slow);
        let mut by: Vec<String> = vec![a.unwrap(), b.unwrap()];
        by.sort();
        assert_eq!(by, ["w-0", "w-1"]);
        // The round trip runs from the pick to the driver's poll that
        // delivered the reply: exactly the handler's time on this clock.
        let w0 = stats(&work, "w-0");
        assert_eq!(w0.latency, support::SLOW);
        assert!(stats(&work, "w-1").latency <= Duration::from_millis(1));
        assert_eq!((w0.in_flight, stats(&work, "w-1").in_flight), (0, 0));
        // A call dropped in flight leaves the count too.
        cluster.record.slow.lock().unwrap().clear();
        let mut held = Box::pin(work.read(3));
        assert!(futures::poll!(held.as_mut()).is_pending());
        let in_flight: u32 = work.client().endpoints().iter().map(|e| e.in_flight).sum();
        assert_eq!(in_flight, 1);
        drop(held);
        let in_flight: u32 = work.client().endpoints().iter().map(|e| e.in_flight).sum();
        assert_eq!(in_flight, 0);
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn a_success_clears_the_failure_record_also_on_a_new_connection() {
    let ejection = Ejection {
        consecutive_failures: 2,
        base: Duration::from_secs(1),
        max: Duration::from_secs(8),
    };
    let (cluster, balanced, driver, servers) = cluster(1, |b| b.ejection(ejection));
    let work = WorkClient::new(balanced);
    let w0 = |work: &WorkClient<Balanced<ManualClock>>| work.client().endpoints().remove(0);
    /// One call of `flaky` that fails on `w-0`.
    async fn fail_once(cluster: &support::Cluster, work: &WorkClient<Balanced<ManualClock>>) {
        cluster.record.failing.lock().unwrap().insert("w-0".into());
        assert_eq!(
            work.flaky().await,
            Err(CallError::Remote(RemoteError::HandlerPanicked))
        );
        cluster.record.failing.lock().unwrap().clear();
    }
    let body = async {
        fail_once(&cluster, &work).await;
        assert_eq!(w0(&work).consecutive_failures, 1);
        assert_eq!(work.flaky().await.as_deref(), Ok("w-0"));
        assert_eq!(w0(&work).consecutive_failures, 0);
        // Below the threshold again, then the connection is lost and
        // dialled anew: the record stays, and the new connection's first
        // success clears it.
        fail_once(&cluster, &work).await;
        cluster.kill("w-0");
        until(|| w0(&work).connection != ConnectionStatus::Ready).await;
        cluster.revive("w-0");
        cluster.clock.advance(Duration::from_secs(1));
        until(|| w0(&work).connection == ConnectionStatus::Ready).await;
        assert_eq!(w0(&work).consecutive_failures, 1);
        assert_eq!(work.flaky().await.as_deref(), Ok("w-0"));
        let w0 = w0(&work);
        assert_eq!((w0.consecutive_failures, w0.is_ejected()), (0, false));
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

/// Round robin that records each pick's turn.
struct TurnRecorder(RoundRobin, std::sync::Arc<std::sync::Mutex<Vec<u64>>>);

impl Strategy for TurnRecorder {
    fn pick(&mut self, endpoints: &[Candidate], pick: &mut Pick<'_>) -> Option<usize> {
        self.1.lock().unwrap().push(pick.turn);
        self.0.pick(endpoints, pick)
    }
}

#[test]
fn calls_picked_between_two_driver_polls_share_a_turn() {
    let turns = std::sync::Arc::default();
    let recorder = TurnRecorder(RoundRobin::new(), std::sync::Arc::clone(&turns));
    let (cluster, balanced, driver, servers) = cluster(2, |b| b.strategy(recorder));
    cluster.record.gate.open();
    let work = WorkClient::new(balanced);
    let body = async {
        until(|| both_ready(&work)).await;
        let mut batches = Vec::new();
        for size in [4, 3] {
            turns.lock().unwrap().clear();
            // One poll picks every call of the batch: no driver poll
            // between them.
            let mut batch = Box::pin(futures::future::join_all((0..size).map(|i| work.read(i))));
            assert!(futures::poll!(batch.as_mut()).is_pending());
            let picked = turns.lock().unwrap().clone();
            assert_eq!(picked.len(), size as usize);
            assert!(picked.iter().all(|&t| t == picked[0]), "{picked:?}");
            // The driver polls to deliver the replies: a later turn.
            assert!(batch.await.iter().all(Result::is_ok));
            batches.push(picked[0]);
        }
        assert!(batches[1] > batches[0], "{batches:?}");
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

#[test]
fn the_calls_of_a_turn_start_at_its_first_call_s_clock_reading() {
    let (cluster, balanced, driver, servers) = cluster(1, |b| b);
    cluster.record.gate.open();
    let work = WorkClient::new(balanced);
    let latency = |work: &WorkClient<Balanced<ManualClock>>| work.client().endpoints()[0].latency;
    let body = async {
        until(|| {
            work.client()
                .endpoints()
                .first()
                .is_some_and(|e| e.connection == ConnectionStatus::Ready)
        })
        .await;
        // Two calls in one turn, 5 ms apart on the clock, before the
        // driver polls again to write them.
        let mut first = Box::pin(work.read(1));
        assert!(futures::poll!(first.as_mut()).is_pending());
        cluster.clock.advance(Duration::from_millis(5));
        let mut second = Box::pin(work.read(2));
        assert!(futures::poll!(second.as_mut()).is_pending());
        // Only the second completes: the driver's poll that delivers its
        // reply began at 5 ms, and its round trip began at the turn's
        // first reading (0 ms), not at its own (5 ms).
        drop(first);
        assert!(second.await.is_ok());
        assert_eq!(latency(&work), Duration::from_millis(5));
        // A call of a later turn reads the clock again: 0 ms on this clock.
        cluster.clock.advance(Duration::from_secs(100));
        let before = latency(&work);
        assert!(work.read(3).await.is_ok());
        assert!(
            latency(&work) <= before,
            "{:?} > {before:?}",
            latency(&work)
        );
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}

/// Arguments whose `Serialize` panics once it has written 300 bytes (more
/// than a call encodes on its stack, so the panic comes while the call
/// holds its slot).
struct Explodes;

impl serde::Serialize for Explodes {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        use serde::ser::SerializeTuple;
        let mut tuple = s.serialize_tuple(300)?;
        for _ in 0..300 {
            tuple.serialize_element(&0u8)?;
        }
        panic!("this Serialize panics (on purpose)")
    }
}

#[test]
fn a_call_whose_serialize_panicked_fails_encode_and_leaves_the_count() {
    use courier::Channel;
    use std::future::Future;
    let (cluster, balanced, driver, servers) = cluster(1, |b| b);
    cluster.record.gate.open();
    let work = WorkClient::new(balanced);
    let in_flight = |work: &WorkClient<Balanced<ManualClock>>| -> u32 {
        work.client().endpoints().iter().map(|e| e.in_flight).sum()
    };
    let body = async {
        until(|| {
            let endpoints = work.client().endpoints();
            !endpoints.is_empty()
                && endpoints
                    .iter()
                    .all(|e| e.connection == ConnectionStatus::Ready)
        })
        .await;
        // `read` is idempotent: a failure the balancer could re-send.
        let read = &WorkClient::METHODS[0];
        assert_eq!(read.name, "read");
        let mut call = Box::pin(work.client().call::<Explodes, String>(read, Explodes, None));
        let panicked = std::panic::catch_unwind(std::panic::AssertUnwindSafe(|| {
            let waker = futures::task::noop_waker();
            let _ = call
                .as_mut()
                .poll(&mut std::task::Context::from_waker(&waker));
        }));
        assert!(panicked.is_err());
        assert_eq!(in_flight(&work), 1);
        // Polled again: the arguments are gone, so nothing is re-sent.
        assert_eq!(call.as_mut().await, Err(CallError::Encode));
        assert_eq!(in_flight(&work), 0);
        let calls: u64 = work.client().endpoints().iter().map(|e| e.calls).sum();
        assert_eq!(calls, 1);
        // The connection serves on.
        assert_eq!(work.read(1).await.as_deref(), Ok("w-0"));
        drop(call);
        drop(work);
    };
    futures::executor::block_on(async { futures::join!(body, driver, servers) });
}
