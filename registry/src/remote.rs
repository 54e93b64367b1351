//! The client side of a courier registry: a [`Discover`](crate::Discover)
//! source that resumes after reconnecting, and a [`Registrar`].
//!
//! Both take a [`RegistryClient`] over any courier [`Client`](courier::Client).
//! Give them a *reconnecting* client
//! ([`ClientBuilder::build_reconnecting`](courier::ClientBuilder::build_reconnecting),
//! or courier-net's `connect_reconnecting`) so that they outlive the
//! registry's restarts: calls fail while it is down, and these types retry.

use std::future::Future;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use courier::{CallError, Timer};
use futures_channel::mpsc;
use futures_core::Stream;
use futures_util::{SinkExt, StreamExt};

use crate::discover::{DiscoverError, Event};
use crate::endpoint::Endpoint;
use crate::registration::{LeaseId, Registrar, RegistrarError, RegistrarFuture};
use crate::server::RegistryClient;
use crate::store::RegistryError;

type AnswerStream =
    Pin<Box<dyn Stream<Item = Result<Result<LeaseId, RegistryError>, CallError>> + Send>>;
type EventStream =
    Pin<Box<dyn Stream<Item = Result<Result<Event, RegistryError>, CallError>> + Send>>;

enum WatchState<S> {
    /// Open a watch on the next poll.
    Idle,
    Open(EventStream),
    /// Wait before opening again.
    Backoff(Pin<Box<S>>),
}

/// Watches one service of a courier registry: a [`Discover`](crate::Discover)
/// stream that never ends.
///
/// When the watch breaks (connection lost, registry restarting) it yields
/// one `Err(DiscoverError::Unavailable)`, waits a backoff (doubling from
/// `min` to `max`) and opens a new watch from the last revision it
/// delivered: the registry sends exactly the changes missed, or a
/// [`Resync`](crate::SnapshotKind::Resync) snapshot.
pub struct RegistryWatch<T: Timer> {
    client: RegistryClient,
    service: String,
    timer: T,
    last: Option<u64>,
    backoff: Duration,
    min: Duration,
    max: Duration,
    state: WatchState<T::Sleep>,
}

impl<T: Timer> RegistryWatch<T> {
    /// Watches `service` through `client`, retrying after 50 ms doubling up
    /// to 2 s.
    pub fn new(client: RegistryClient, service: impl Into<String>, timer: T) -> Self {
        RegistryWatch {
            client,
            service: service.into(),
            timer,
            last: None,
            backoff: Duration::from_millis(50),
            min: Duration::from_millis(50),
            max: Duration::from_secs(2),
            state: WatchState::Idle,
        }
    }

    /// Retries after `min` (at least
    /// [`MIN_WAIT`](crate::registration::MIN_WAIT)), doubling up to `max`.
    #[must_use]
    pub fn backoff(mut self, min: Duration, max: Duration) -> Self {
        self.min = min.max(crate::registration::MIN_WAIT);
        self.max = max.max(self.min);
        self.backoff = self.min;
        self
    }

    /// The revision of the last event delivered.
    pub fn revision(&self) -> Option<u64> {
        self.last
    }

    fn fail(&mut self, error: DiscoverError) -> Poll<Option<Result<Event, DiscoverError>>> {
        let at = self.timer.now().saturating_add(self.backoff);
        self.backoff = self.backoff.saturating_mul(2).min(self.max);
        self.state = WatchState::Backoff(Box::pin(self.timer.sleep_until(at)));
        Poll::Ready(Some(Err(error)))
    }
}

// Every pinned part is boxed.
impl<T: Timer> Unpin for RegistryWatch<T> {}

impl<T: Timer> Stream for RegistryWatch<T> {
    type Item = Result<Event, DiscoverError>;

    /// Invariant: returns `Pending` only from the open watch or the backoff
    /// sleep, each of which registered the waker.
    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let this = self.get_mut();
        loop {
            match &mut this.state {
                WatchState::Idle => {
                    let stream = owned_watch(this.client.clone(), this.service.clone(), this.last);
                    this.state = WatchState::Open(stream);
                }
                WatchState::Open(stream) => match stream.as_mut().poll_next(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(Some(Ok(Ok(event)))) => {
                        this.last = Some(event.revision);
                        this.backoff = this.min;
                        return Poll::Ready(Some(Ok(event)));
                    }
                    Poll::Ready(Some(Ok(Err(refused)))) => {
                        return this.fail(DiscoverError::Refused(refused.to_string()))
                    }
                    Poll::Ready(Some(Err(error))) => {
                        return this.fail(DiscoverError::Unavailable(error.to_string()))
                    }
                    Poll::Ready(None) => {
                        return this.fail(DiscoverError::Unavailable("the watch ended".into()))
                    }
                },
                WatchState::Backoff(sleep) => match sleep.as_mut().poll(cx) {
                    Poll::Pending => return Poll::Pending,
                    Poll::Ready(_) => this.state = WatchState::Idle,
                },
            }
        }
    }
}

/// A stream whose items come from a future that owns what it borrows
/// (the generated client's stream calls borrow the client): the future runs
/// inside this stream's `poll_next` and hands items over a channel of one.
pub(crate) struct Pumped<T> {
    pump: Option<Pin<Box<dyn Future<Output = ()> + Send>>>,
    items: mpsc::Receiver<T>,
}

/// Runs `make(sender)` as the pump of a [`Pumped`] stream.
pub(crate) fn pumped<T, F>(make: impl FnOnce(mpsc::Sender<T>) -> F) -> Pumped<T>
where
    F: Future<Output = ()> + Send + 'static,
{
    let (sender, items) = mpsc::channel(0);
    Pumped {
        pump: Some(Box::pin(make(sender))),
        items,
    }
}

impl<T> Stream for Pumped<T> {
    type Item = T;

    /// Invariant: `Pending` only when both the channel and the pump are
    /// pending (both registered the waker).
    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<T>> {
        loop {
            if let Poll::Ready(item) = self.items.poll_next_unpin(cx) {
                return Poll::Ready(item);
            }
            let Some(pump) = self.pump.as_mut() else {
                return Poll::Pending; // The pump ended; its sender closes the channel.
            };
            match pump.as_mut().poll(cx) {
                // It finished: its sender is dropped; the channel now ends.
                Poll::Ready(()) => self.pump = None,
                Poll::Pending => {
                    // The pump may have sent an item (the channel woke us,
                    // but check now rather than return Pending).
                    if let Poll::Ready(item) = self.items.poll_next_unpin(cx) {
                        return Poll::Ready(item);
                    }
                    return Poll::Pending;
                }
            }
        }
    }
}

fn owned_watch(client: RegistryClient, service: String, from: Option<u64>) -> EventStream {
    Box::pin(pumped(move |mut sender| async move {
        let mut events = client.watch(service, from);
        while let Some(item) = events.next().await {
            if sender.send(item).await.is_err() {
                break;
            }
        }
    }))
}

/// A [`Registrar`] for a courier registry, over a [`RegistryClient`].
///
/// Heartbeats go up one keep-alive stream, opened on the first
/// [`keep_alive`](Registrar::keep_alive) and again after it broke.
pub struct RemoteRegistrar {
    client: RegistryClient,
    token: Option<String>,
    beats: Option<Beats>,
}

struct Beats {
    up: mpsc::Sender<LeaseId>,
    answers: AnswerStream,
}

impl RemoteRegistrar {
    /// Registers through `client`, presenting `token` on every write.
    pub fn new(client: RegistryClient, token: Option<String>) -> Self {
        RemoteRegistrar {
            client,
            token,
            beats: None,
        }
    }
}

fn refused(error: RegistryError) -> RegistrarError {
    match error {
        RegistryError::LeaseNotFound => RegistrarError::LeaseLost,
        other => RegistrarError::Refused(other.to_string()),
    }
}

fn unavailable(error: CallError) -> RegistrarError {
    RegistrarError::Unavailable(error.to_string())
}

impl Registrar for RemoteRegistrar {
    fn register<'a>(
        &'a mut self,
        endpoint: &'a Endpoint,
        ttl: Duration,
    ) -> RegistrarFuture<'a, LeaseId> {
        Box::pin(async move {
            let call = self
                .client
                .register(self.token.clone(), endpoint.clone(), ttl);
            call.await.map_err(unavailable)?.map_err(refused)
        })
    }

    fn keep_alive(&mut self, lease: LeaseId) -> RegistrarFuture<'_, ()> {
        Box::pin(async move {
            // Taken out while a beat is in flight: if this future is dropped
            // before its answer, the next beat opens a fresh stream rather
            // than read the stale answer.
            let mut beats = match self.beats.take() {
                Some(beats) => beats,
                None => {
                    let (up, leases) = mpsc::channel(1);
                    let client = self.client.clone();
                    let token = self.token.clone();
                    let answers = owned_keep_alive(client, token, leases);
                    Beats { up, answers }
                }
            };
            let answer = match beats.up.send(lease).await {
                Ok(()) => beats.answers.next().await,
                Err(_) => None,
            };
            match answer {
                Some(Ok(answer)) => {
                    self.beats = Some(beats);
                    match answer {
                        Ok(renewed) if renewed == lease => Ok(()),
                        Ok(_) => Err(RegistrarError::Unavailable("mismatched answer".into())),
                        Err(error) => Err(refused(error)),
                    }
                }
                Some(Err(error)) => Err(unavailable(error)),
                None => Err(RegistrarError::Unavailable(
                    "keep-alive stream ended".into(),
                )),
            }
        })
    }

    fn deregister(&mut self, lease: LeaseId) -> RegistrarFuture<'_, ()> {
        Box::pin(async move {
            self.beats = None;
            let call = self.client.deregister(self.token.clone(), lease);
            call.await.map_err(unavailable)?.map_err(refused)
        })
    }
}

fn owned_keep_alive(
    client: RegistryClient,
    token: Option<String>,
    leases: mpsc::Receiver<LeaseId>,
) -> AnswerStream {
    Box::pin(pumped(move |mut sender| async move {
        let mut answers = client.keep_alive(token, leases);
        while let Some(answer) = answers.next().await {
            if sender.send(answer).await.is_err() {
                break;
            }
        }
    }))
}
