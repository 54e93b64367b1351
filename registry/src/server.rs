//! The registry as a courier service, and an embedded registry that serves
//! it over any transport.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};
use std::task::{Context, Poll, Waker};
use std::time::Duration;

use courier::client::Encoded;
use courier::{BoxStream, Streaming, Timer};
use futures_core::Stream;
use serde::{Deserialize, Serialize};

use crate::discover::{DiscoverError, Event};
use crate::endpoint::Endpoint;
use crate::registration::LeaseId;
use crate::store::{OwnerId, RegistryError, Store, StoreConfig, WatcherId};

/// The registry's wire interface (service name `Registry`); see the crate
/// docs, section *The wire interface*, for each method's exact semantics.
#[courier::service]
pub trait Registry {
    /// Registers `endpoint` under a new lease of `ttl`; returns the lease.
    async fn register(
        &self,
        token: Option<String>,
        endpoint: Endpoint,
        ttl: Duration,
    ) -> Result<LeaseId, RegistryError>;
    /// Heartbeats: every lease sent up is renewed, and answered with
    /// `Ok(lease)` or an error, in order.
    async fn keep_alive(
        &self,
        token: Option<String>,
        leases: Streaming<LeaseId>,
    ) -> BoxStream<Result<LeaseId, RegistryError>>;
    /// Drops a lease and its instance.
    async fn deregister(&self, token: Option<String>, lease: LeaseId) -> Result<(), RegistryError>;
    /// The endpoints of one service, or of all, at the current revision.
    #[idempotent]
    async fn list(&self, service: Option<String>) -> Listing;
    /// Watches a service: a snapshot, or the changes after `from_revision`,
    /// then every change as it happens.
    async fn watch(
        &self,
        service: String,
        from_revision: Option<u64>,
    ) -> BoxStream<Result<Event, RegistryError>>;
}

/// The answer to [`Registry::list`].
#[derive(Clone, Debug, PartialEq, Eq, Serialize, Deserialize, courier::Schema)]
pub struct Listing {
    /// The registry's revision when listed.
    pub revision: u64,
    /// The endpoints, ordered by service and instance.
    pub endpoints: Vec<Endpoint>,
}

type Clock = Box<dyn Fn() -> Duration + Send + Sync>;

struct Inner {
    store: Store,
    /// The expiry driver's waker and the deadline it sleeps until.
    expiry_waker: Option<Waker>,
    armed: Option<Duration>,
}

struct Shared {
    inner: Mutex<Inner>,
    clock: Clock,
    next_owner: AtomicU64,
}

impl Shared {
    fn lock(&self) -> MutexGuard<'_, Inner> {
        self.inner
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    fn now(&self) -> Duration {
        (self.clock)()
    }

    /// Runs `f` on the state, then wakes whoever it concerns — after
    /// releasing the lock, so that no waker runs under it.
    fn update<R>(&self, f: impl FnOnce(&mut Inner) -> R) -> R {
        let (result, woken, expiry) = {
            let mut inner = self.lock();
            let result = f(&mut inner);
            let expiry = inner.rearm();
            (result, inner.store.take_woken(), expiry)
        };
        for waker in woken.into_iter().chain(expiry) {
            waker.wake();
        }
        result
    }
}

impl Inner {
    /// The expiry driver's waker, if the next expiry is earlier than the
    /// deadline it sleeps until.
    fn rearm(&mut self) -> Option<Waker> {
        let next = self.store.next_expiry();
        let earlier = match (next, self.armed) {
            (Some(next), Some(armed)) => next < armed,
            (Some(_), None) => true,
            (None, _) => false,
        };
        if earlier {
            self.expiry_waker.take()
        } else {
            None
        }
    }
}

/// An in-process registry: one [`Store`], served to any number of
/// connections ([`connection`](EmbeddedRegistry::connection)) and watched
/// in-process ([`watch`](EmbeddedRegistry::watch)). Cheap to clone; clones
/// share the registry.
#[derive(Clone)]
pub struct EmbeddedRegistry {
    shared: Arc<Shared>,
}

impl EmbeddedRegistry {
    /// A registry with `config`, on `timer`'s clock; poll the returned
    /// [`ExpiryDriver`] (it never ends) for leases to expire.
    pub fn new<T>(config: StoreConfig, timer: T) -> (EmbeddedRegistry, ExpiryDriver<T>)
    where
        T: Timer + Clone + Send + Sync + 'static,
    {
        let clock_timer = timer.clone();
        let shared = Arc::new(Shared {
            inner: Mutex::new(Inner {
                store: Store::new(config),
                expiry_waker: None,
                armed: None,
            }),
            clock: Box::new(move || clock_timer.now()),
            next_owner: AtomicU64::new(1),
        });
        let driver = ExpiryDriver {
            shared: shared.clone(),
            sleep: None,
            timer,
        };
        (EmbeddedRegistry { shared }, driver)
    }

    /// The service for one new connection: the leases it registers and the
    /// watches it opens belong to it, and when it is dropped (its
    /// connection ended) its watches close and its instances expire after
    /// [`StoreConfig::disconnect_grace`].
    pub fn connection(&self) -> RegistryConnection {
        let connection = Arc::new(Connection {
            owner: Owner {
                shared: self.shared.clone(),
                id: self.shared.next_owner.fetch_add(1, Ordering::Relaxed),
            },
        });
        RegistryConnection {
            typed: RegistryServer::from_arc(connection.clone()),
            connection,
        }
    }

    /// Watches `service` in-process: a [`Discover`](crate::Discover) stream
    /// that never yields an error. Fails when the registry has as many
    /// watches as allowed.
    pub fn watch(
        &self,
        service: &str,
        from_revision: Option<u64>,
    ) -> Result<WatchStream, RegistryError> {
        let owner = self.shared.next_owner.fetch_add(1, Ordering::Relaxed);
        WatchStream::open(self.shared.clone(), owner, service, from_revision)
    }

    /// The endpoints of `service`, or of every service.
    pub fn list(&self, service: Option<&str>) -> Listing {
        let inner = self.shared.lock();
        Listing {
            revision: inner.store.revision(),
            endpoints: inner.store.list(service),
        }
    }

    /// How many instances are registered.
    pub fn instances(&self) -> usize {
        self.shared.lock().store.instances()
    }

    /// How many watches are open.
    pub fn watchers(&self) -> usize {
        self.shared.lock().store.watchers()
    }

    /// Runs `f` on the store (for tests and tools).
    pub fn with_store<R>(&self, f: impl FnOnce(&mut Store) -> R) -> R {
        self.shared.update(|inner| f(&mut inner.store))
    }
}

/// Expires leases on time; never ends (drop it with the registry).
///
/// Invariant: after each poll either the sleep until the next expiry is
/// pending (its waker registered), or there is no lease and the registry
/// holds this driver's waker to be woken when one is added.
pub struct ExpiryDriver<T: Timer> {
    shared: Arc<Shared>,
    timer: T,
    sleep: Option<Pin<Box<T::Sleep>>>,
}

impl<T: Timer> Future for ExpiryDriver<T> {
    type Output = ();

    fn poll(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<()> {
        let this = self.get_mut();
        loop {
            let now = this.timer.now();
            let next = this.shared.update(|inner| {
                inner.store.expire(now);
                let next = inner.store.next_expiry();
                inner.armed = next;
                inner.expiry_waker = Some(cx.waker().clone());
                next
            });
            let Some(at) = next else {
                return Poll::Pending;
            };
            let sleep = match &mut this.sleep {
                Some(sleep) => {
                    this.timer.reset(sleep.as_mut(), at);
                    sleep
                }
                none => none.insert(Box::pin(this.timer.sleep_until(at))),
            };
            if sleep.as_mut().poll(cx).is_pending() {
                return Poll::Pending;
            }
        }
    }
}

// The sleep is boxed and the timer never pinned.
impl<T: Timer> Unpin for ExpiryDriver<T> {}

/// The leases and watches of one connection; see
/// [`EmbeddedRegistry::connection`].
struct Owner {
    shared: Arc<Shared>,
    id: OwnerId,
}

impl Drop for Owner {
    fn drop(&mut self) {
        let now = self.shared.now();
        self.shared
            .update(|inner| inner.store.disconnect(self.id, now));
    }
}

/// The [`Registry`] implementation for one connection (see
/// [`EmbeddedRegistry::connection`]).
pub struct Connection {
    owner: Owner,
}

impl Connection {
    fn write<R>(
        &self,
        token: Option<&str>,
        f: impl FnOnce(&mut Store, Duration) -> Result<R, RegistryError>,
    ) -> Result<R, RegistryError> {
        let now = self.owner.shared.now();
        self.owner.shared.update(|inner| {
            inner.store.authorize(token)?;
            f(&mut inner.store, now)
        })
    }
}

impl Registry for Connection {
    async fn register(
        &self,
        token: Option<String>,
        endpoint: Endpoint,
        ttl: Duration,
    ) -> Result<LeaseId, RegistryError> {
        let owner = self.owner.id;
        self.write(token.as_deref(), |store, now| {
            store.register(owner, endpoint, ttl, now)
        })
    }

    async fn keep_alive(
        &self,
        token: Option<String>,
        leases: Streaming<LeaseId>,
    ) -> BoxStream<Result<LeaseId, RegistryError>> {
        let shared = self.owner.shared.clone();
        let owner = self.owner.id;
        let authorized = shared.lock().store.authorize(token.as_deref());
        Box::pin(KeepAlive {
            shared,
            owner,
            authorized,
            leases,
        })
    }

    async fn deregister(&self, token: Option<String>, lease: LeaseId) -> Result<(), RegistryError> {
        self.write(token.as_deref(), |store, _| {
            store.deregister(lease);
            Ok(())
        })
    }

    async fn list(&self, service: Option<String>) -> Listing {
        let inner = self.owner.shared.lock();
        Listing {
            revision: inner.store.revision(),
            endpoints: inner.store.list(service.as_deref()),
        }
    }

    async fn watch(
        &self,
        service: String,
        from_revision: Option<u64>,
    ) -> BoxStream<Result<Event, RegistryError>> {
        let opened = WatchStream::open(
            self.owner.shared.clone(),
            self.owner.id,
            &service,
            from_revision,
        );
        match opened {
            Ok(stream) => Box::pin(futures_util::StreamExt::filter_map(stream, |item| {
                std::future::ready(item.ok().map(Ok))
            })),
            Err(error) => Box::pin(futures_util::stream::once(async move { Err(error) })),
        }
    }
}

/// The registry served to one connection ([`EmbeddedRegistry::connection`]):
/// the [`Registry`] service, whose `watch` sends events encoded once for
/// all the watchers that get them (the bytes are those of the typed
/// method: clients cannot tell).
pub struct RegistryConnection {
    typed: RegistryServer<Connection>,
    connection: Arc<Connection>,
}

impl courier::Service for RegistryConnection {
    fn dispatch(
        &self,
        method: courier::MethodKey,
        args: &[u8],
    ) -> Result<courier::Handler, courier::RemoteError> {
        self.serve(&mut courier::server::Request::detached(method, args))
    }

    fn serve(
        &self,
        request: &mut courier::server::Request<'_>,
    ) -> Result<courier::Handler, courier::RemoteError> {
        if request.method() != RegistryClient::WATCH {
            return self.typed.serve(request);
        }
        let (service, from_revision): (String, Option<u64>) =
            match postcard::take_from_bytes(request.args()) {
                Ok((args, [])) => args,
                _ => return Err(courier::RemoteError::BadRequest),
            };
        let owner = &self.connection.owner;
        let opened = WatchStream::open(owner.shared.clone(), owner.id, &service, from_revision);
        Ok(courier::Handler::stream(std::future::ready(EncodedWatch {
            opened: Some(opened),
        })))
    }

    fn method_info(&self, method: courier::MethodKey) -> Option<&'static courier::MethodInfo> {
        self.typed.method_info(method)
    }
}

/// The items of a watch over the wire, already encoded: the watch's
/// events, or the one error that refused it.
struct EncodedWatch {
    /// `None` once the refusal was sent.
    opened: Option<Result<WatchStream, RegistryError>>,
}

impl Stream for EncodedWatch {
    type Item = Encoded;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Encoded>> {
        let watch = match &self.opened {
            Some(Ok(watch)) => watch,
            Some(Err(_)) => {
                let Some(Err(error)) = self.opened.take() else {
                    return Poll::Ready(None);
                };
                let item = postcard::to_allocvec(&Err::<Event, _>(error)).unwrap_or_default();
                return Poll::Ready(Some(Encoded::from_encoded(item.into())));
            }
            None => return Poll::Ready(None),
        };
        let mut inner = watch.shared.lock();
        match inner.store.next_encoded(watch.id, Some(cx.waker())) {
            Some(bytes) => Poll::Ready(Some(Encoded::from_encoded(bytes))),
            None if inner.store.is_watching(watch.id) => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
}

/// The answers to one keep-alive stream: one per lease sent up.
struct KeepAlive {
    shared: Arc<Shared>,
    owner: OwnerId,
    authorized: Result<(), RegistryError>,
    leases: Streaming<LeaseId>,
}

impl Stream for KeepAlive {
    type Item = Result<LeaseId, RegistryError>;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let lease = match Pin::new(&mut self.leases).poll_next(cx) {
            Poll::Ready(Some(Ok(lease))) => lease,
            // An item that did not decode: answer it, the stream goes on.
            Poll::Ready(Some(Err(_))) => {
                return Poll::Ready(Some(Err(RegistryError::LeaseNotFound)))
            }
            Poll::Ready(None) => return Poll::Ready(None),
            Poll::Pending => return Poll::Pending,
        };
        if let Err(error) = &self.authorized {
            return Poll::Ready(Some(Err(error.clone())));
        }
        let now = self.shared.now();
        let owner = self.owner;
        let renewed = self
            .shared
            .update(|inner| inner.store.keep_alive(owner, lease, now));
        Poll::Ready(Some(renewed.map(|()| lease)))
    }
}

/// One open watch of the registry: a stream of [`Event`]s that ends only
/// when the registry closes the watch (its connection ended). Dropping it
/// closes the watch.
pub struct WatchStream {
    shared: Arc<Shared>,
    id: WatcherId,
}

impl WatchStream {
    fn open(
        shared: Arc<Shared>,
        owner: OwnerId,
        service: &str,
        from_revision: Option<u64>,
    ) -> Result<Self, RegistryError> {
        let id = shared.update(|inner| inner.store.watch(owner, service, from_revision))?;
        Ok(WatchStream { shared, id })
    }
}

/// A [`Discover`](crate::Discover) stream that never yields an error.
impl Stream for WatchStream {
    type Item = Result<Event, DiscoverError>;

    fn poll_next(self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Self::Item>> {
        let mut inner = self.shared.lock();
        match inner.store.next_event(self.id, Some(cx.waker())) {
            Some(event) => Poll::Ready(Some(Ok(event))),
            None if inner.store.is_watching(self.id) => Poll::Pending,
            None => Poll::Ready(None),
        }
    }
}

impl Drop for WatchStream {
    fn drop(&mut self) {
        self.shared.update(|inner| inner.store.unwatch(self.id));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The keys the crate docs publish for other languages.
    #[test]
    fn method_keys_are_the_documented_ones() {
        let keys: Vec<(&str, u64)> = RegistryClient::METHODS
            .iter()
            .map(|m| (m.name, m.key.0))
            .collect();
        assert_eq!(keys, DOCUMENTED_KEYS);
    }

    const DOCUMENTED_KEYS: [(&str, u64); 5] = [
        ("register", 0x0704_0734_1c29_f5ef),
        ("keep_alive", 0xbc70_4792_1649_8804),
        ("deregister", 0x2ebb_d2cd_3b27_40b1),
        ("list", 0x5391_6be7_04ca_efdc),
        ("watch", 0xeabc_02ac_0c64_89a4),
    ];
}
