//! `Registration::run` when `stop` completes while a registration is in
//! flight: the registration is finished and its lease revoked, not left to
//! expire; and a stop before anything started registers nothing.

use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::task::{Context, Poll};
use std::time::Duration;

use courier::Timer;
use courier_registry::{
    Address, Endpoint, LeaseId, Registrar, RegistrarError, RegistrarFuture, Registration,
};
use futures::channel::oneshot;
use futures::executor::LocalPool;
use futures::task::LocalSpawnExt;

/// A clock stopped at zero: a sleep until zero is over at once, any later
/// one never ends (so heartbeats and step timeouts never fire).
#[derive(Clone, Copy)]
struct StoppedClock;

struct Sleep(bool);

impl Future for Sleep {
    type Output = ();
    fn poll(self: Pin<&mut Self>, _: &mut Context<'_>) -> Poll<()> {
        if self.0 {
            Poll::Ready(())
        } else {
            Poll::Pending
        }
    }
}

impl Timer for StoppedClock {
    type Sleep = Sleep;
    fn now(&self) -> Duration {
        Duration::ZERO
    }
    fn sleep_until(&self, deadline: Duration) -> Sleep {
        Sleep(deadline.is_zero())
    }
    fn reset(&self, mut sleep: Pin<&mut Sleep>, deadline: Duration) {
        sleep.0 = deadline.is_zero();
    }
}

/// A registrar whose `register` waits for the test's word, and which logs
/// every call.
#[derive(Clone, Default)]
struct HeldRegistrar {
    release: Arc<Mutex<Option<oneshot::Receiver<()>>>>,
    log: Arc<Mutex<Vec<String>>>,
}

impl Registrar for HeldRegistrar {
    fn register<'a>(&'a mut self, _: &'a Endpoint, _: Duration) -> RegistrarFuture<'a, LeaseId> {
        self.log.lock().unwrap().push("register".into());
        let release = self.release.lock().unwrap().take();
        Box::pin(async move {
            if let Some(release) = release {
                let _ = release.await;
            }
            Ok(7)
        })
    }

    fn keep_alive(&mut self, lease: LeaseId) -> RegistrarFuture<'_, ()> {
        self.log.lock().unwrap().push(format!("keep_alive {lease}"));
        Box::pin(async { Ok(()) })
    }

    fn deregister(&mut self, lease: LeaseId) -> RegistrarFuture<'_, ()> {
        self.log.lock().unwrap().push(format!("deregister {lease}"));
        Box::pin(async { Ok::<(), RegistrarError>(()) })
    }
}

fn registration() -> Registration {
    let endpoint = Endpoint::new("kv", "a", Address::Tcp(([127, 0, 0, 1], 1).into()));
    Registration::new(endpoint, Duration::from_secs(30)).propagation(Duration::ZERO)
}

#[test]
fn a_registration_in_flight_at_stop_is_finished_then_revoked() {
    let mut pool = LocalPool::new();
    let registrar = HeldRegistrar::default();
    let (release, held) = oneshot::channel();
    *registrar.release.lock().unwrap() = Some(held);
    let (stop, stopped) = oneshot::channel::<()>();
    let (done_tx, mut done) = oneshot::channel();
    let driver = registration().run(registrar.clone(), StoppedClock, stopped, None);
    pool.spawner()
        .spawn_local(async move {
            let _ = done_tx.send(driver.await);
        })
        .unwrap();
    pool.run_until_stalled();
    assert_eq!(*registrar.log.lock().unwrap(), ["register"]);
    // Stop while the registration is in flight: the driver waits for it.
    stop.send(()).unwrap();
    pool.run_until_stalled();
    assert_eq!(
        done.try_recv().unwrap(),
        None,
        "returned with a registration in flight"
    );
    release.send(()).unwrap();
    pool.run_until_stalled();
    assert_eq!(done.try_recv().unwrap(), Some(Ok(())));
    assert_eq!(*registrar.log.lock().unwrap(), ["register", "deregister 7"]);
}

#[test]
fn a_stop_before_anything_started_registers_nothing() {
    let mut pool = LocalPool::new();
    let registrar = HeldRegistrar::default();
    let driver = registration().run(registrar.clone(), StoppedClock, async {}, None);
    assert_eq!(pool.run_until(driver), Ok(()));
    assert!(registrar.log.lock().unwrap().is_empty());
}
