//! [`EtcdDiscover`]: a watch of one service's keys.

use std::collections::{BTreeMap, VecDeque};
use std::future::Future;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{ready, Context, Poll};
use std::time::Duration;

use etcd_client::{Client, GetOptions, ResponseHeader, WatchOptions, WatchResponse, WatchStream};
use futures_core::Stream;
use tokio::runtime::Handle;

use super::entry::{self, Decoder};
use super::Shared;
use crate::discover::{Change, DiscoverError, Event, SnapshotKind};
use crate::endpoint::Endpoint;

type Item = Result<Event, DiscoverError>;
type Step = Pin<Box<dyn Future<Output = (Watcher, Item)> + Send>>;

/// A [`Discover`](crate::Discover) stream of one service's endpoints in etcd,
/// made by [`Etcd::watch`](super::Etcd::watch). See the
/// [module docs](super) for the key layout, the value format and what
/// happens when etcd is unreachable.
///
/// The stream never ends by itself: drop it to stop watching.
#[must_use = "a watch does nothing unless polled"]
pub struct EtcdDiscover {
    runtime: Option<Handle>,
    step: Step,
}

impl EtcdDiscover {
    pub(crate) fn new(client: Client, shared: Arc<Shared>, service: &str) -> Self {
        let range = entry::service_range(&shared.config.prefix, service);
        let watcher = Watcher {
            client,
            backoff: shared.config.retry_min,
            range,
            service: service.to_owned(),
            known: BTreeMap::new(),
            phase: Phase::Snapshot(SnapshotKind::Initial),
            resume: 0,
            delivered: 0,
            queue: VecDeque::new(),
            store: StoreIdentity::default(),
            retry_after: None,
            shared: shared.clone(),
        };
        EtcdDiscover {
            runtime: shared.runtime.clone(),
            step: Box::pin(watcher.next_owned()),
        }
    }
}

impl std::fmt::Debug for EtcdDiscover {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("EtcdDiscover").finish_non_exhaustive()
    }
}

impl Stream for EtcdDiscover {
    type Item = Item;

    fn poll_next(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<Option<Item>> {
        let this = &mut *self;
        let _entered = this.runtime.as_ref().map(Handle::enter);
        // The step future owns the watcher and hands it back with the item;
        // the next step starts at once, so a later poll continues it.
        let (watcher, item) = ready!(this.step.as_mut().poll(cx));
        this.step = Box::pin(watcher.next_owned());
        Poll::Ready(Some(item))
    }
}

/// What the watcher does next.
enum Phase {
    /// Read the whole range, then announce it as a snapshot of this kind.
    Snapshot(SnapshotKind),
    /// Open an etcd watch from `resume`.
    Watch,
    /// Read the open watch.
    Watching(Box<WatchStream>),
}

/// What a watch response asks for.
enum After {
    /// Keep reading the watch.
    Continue,
    /// The watch cannot go on from here: read the range again.
    Resync,
    /// etcd ended the watch for another reason: report it, then retry.
    Canceled(String),
}

/// The watch's state; owned by one step future at a time.
struct Watcher {
    client: Client,
    shared: Arc<Shared>,
    service: String,
    /// `<prefix>/<service>/`: the watched keys.
    range: Vec<u8>,
    /// The endpoints delivered so far, by instance: says added from updated,
    /// and drops updates that change nothing (a re-registration).
    known: BTreeMap<String, Endpoint>,
    phase: Phase,
    /// The next etcd revision the watch must see.
    resume: i64,
    /// The highest revision delivered: etcd answering below it lost its data.
    delivered: i64,
    /// Which etcd the revisions belong to.
    store: StoreIdentity,
    /// Items decided but not yet yielded; they survive a lost connection.
    queue: VecDeque<Item>,
    /// The wait before the next attempt, after a failure.
    retry_after: Option<Duration>,
    backoff: Duration,
}

impl Watcher {
    async fn next_owned(mut self) -> (Self, Item) {
        let item = self.next().await;
        (self, item)
    }

    /// Invariant: each turn either yields a queued item, or awaits exactly
    /// one etcd request, watch message or backoff sleep, then changes phase
    /// or queues items; it never waits on anything else.
    async fn next(&mut self) -> Item {
        loop {
            if let Some(item) = self.queue.pop_front() {
                return item;
            }
            if let Some(wait) = self.retry_after.take() {
                tokio::time::sleep(wait).await;
            }
            let timeout = self.shared.config.request_timeout;
            match std::mem::replace(&mut self.phase, Phase::Watch) {
                Phase::Snapshot(kind) => match within(timeout, self.read_range()).await {
                    Ok((revision, kvs)) => {
                        self.succeeded();
                        self.take_snapshot(kind, revision, kvs);
                    }
                    Err(why) => {
                        self.phase = Phase::Snapshot(kind);
                        return self.failed(why);
                    }
                },
                Phase::Watch => match within(timeout, self.open_watch()).await {
                    Ok(stream) => self.phase = Phase::Watching(Box::new(stream)),
                    Err(why) => return self.failed(why),
                },
                Phase::Watching(mut stream) => match stream.message().await {
                    Ok(Some(response)) => match self.on_response(&response) {
                        After::Continue => {
                            self.succeeded();
                            self.phase = Phase::Watching(stream);
                        }
                        After::Resync => {
                            self.succeeded();
                            self.phase = Phase::Snapshot(SnapshotKind::Resync);
                        }
                        // Not a success: a watch etcd keeps canceling backs off.
                        After::Canceled(why) => {
                            self.phase = Phase::Snapshot(SnapshotKind::Resync);
                            return self.failed(why);
                        }
                    },
                    Ok(None) => return self.failed("etcd closed the watch".into()),
                    Err(e) => return self.failed(e.to_string()),
                },
            }
        }
    }

    fn failed(&mut self, why: String) -> Item {
        self.retry_after = Some(self.backoff);
        self.backoff = self
            .backoff
            .saturating_mul(2)
            .min(self.shared.config.retry_max);
        Err(DiscoverError::Unavailable(why))
    }

    fn succeeded(&mut self) {
        self.backoff = self.shared.config.retry_min;
    }

    fn decoder(&self) -> Decoder<'_> {
        Decoder {
            range: &self.range,
            service: &self.service,
            max_value_len: self.shared.config.max_value_len,
            limits: &self.shared.config.limits,
        }
    }

    /// Every key of the range, in pages, all at one revision: the first
    /// page's. A page too large for the client to decode (a few huge values)
    /// is asked for again with half as many keys, down to one.
    async fn read_range(&mut self) -> Result<(i64, Vec<(Vec<u8>, Vec<u8>)>), etcd_client::Error> {
        let end = prefix_end(&self.range);
        let mut from = self.range.clone();
        let mut revision = 0;
        let mut limit = self.shared.config.page_size;
        let mut kvs = Vec::new();
        loop {
            let mut options = GetOptions::new().with_range(end.clone()).with_limit(limit);
            if revision > 0 {
                options = options.with_revision(revision);
            }
            let mut response = match self.client.get(from.clone(), Some(options)).await {
                Ok(response) => response,
                // tonic's own refusal (etcd's compaction error shares the
                // code, not the message).
                Err(etcd_client::Error::GRpcStatus(status))
                    if status.code() == tonic::Code::OutOfRange
                        && status.message().contains("message length too large")
                        && limit > 1 =>
                {
                    limit /= 2;
                    continue;
                }
                Err(e) => return Err(e),
            };
            if let Some(header) = response.header() {
                if revision == 0 {
                    revision = header.revision();
                    self.store = StoreIdentity::default();
                }
                self.store.saw(header);
            }
            let more = response.more();
            let page = response.take_kvs();
            let Some(last) = page.last() else { break };
            // The next page starts just after the last key read.
            from = last.key().to_vec();
            from.push(0);
            kvs.extend(page.into_iter().map(|kv| kv.into_key_value()));
            if !more {
                break;
            }
        }
        Ok((revision, kvs))
    }

    fn take_snapshot(&mut self, kind: SnapshotKind, revision: i64, kvs: Vec<(Vec<u8>, Vec<u8>)>) {
        let mut known = BTreeMap::new();
        let mut reports = Vec::new();
        {
            let decoder = self.decoder();
            for (key, value) in &kvs {
                match decoder.decode(key, value) {
                    Ok(endpoint) => {
                        known.insert(endpoint.instance.clone(), endpoint);
                    }
                    Err(why) => reports.push(Err(DiscoverError::Invalid(why))),
                }
            }
        }
        self.queue.extend(reports);
        self.known = known;
        self.resume = revision.saturating_add(1);
        self.delivered = revision;
        self.queue.push_back(Ok(Event {
            revision: to_revision(revision),
            change: Change::Snapshot {
                endpoints: self.known.values().cloned().collect(),
                kind,
            },
        }));
        self.phase = Phase::Watch;
    }

    async fn open_watch(&mut self) -> Result<WatchStream, etcd_client::Error> {
        let options = WatchOptions::new()
            .with_prefix()
            .with_start_revision(self.resume)
            .with_progress_notify()
            .with_fragment();
        self.client.watch(self.range.clone(), Some(options)).await
    }

    fn on_response(&mut self, response: &WatchResponse) -> After {
        if response.compact_revision() > 0 {
            // The revision to resume from is compacted away.
            return After::Resync;
        }
        if response.canceled() {
            return After::Canceled(format!(
                "etcd canceled the watch: {}",
                response.cancel_reason()
            ));
        }
        let header_revision = response.header().map_or(0, |h| h.revision());
        let replaced = response.header().is_some_and(|h| self.store.replaced_by(h));
        if response.created() && (replaced || header_revision < self.delivered) {
            // etcd's revision went backwards, or it is another cluster, or
            // its raft term went backwards: its data was lost or replaced.
            return After::Resync;
        }
        if let Some(header) = response.header() {
            self.store.saw(header);
        }
        if response.events().is_empty() {
            if !response.created() {
                // A progress notification: nothing in the range changed up
                // to the header's revision.
                self.resume = self.resume.max(header_revision.saturating_add(1));
            }
            return After::Continue;
        }
        // A fragment may end inside one revision's events: resume from that
        // revision itself, then. Seeing an event again is harmless: a put
        // of the value known and a delete of an unknown key yield nothing.
        let inside = i64::from(response.0.fragment);
        for event in response.events() {
            let Some(kv) = event.kv() else { continue };
            let revision = kv.mod_revision();
            self.resume = self.resume.max(revision.saturating_add(1 - inside));
            // etcd-client's `event_type()` panics on an unknown type: read
            // the raw field.
            let change = match event.0.r#type {
                0 => self.on_put(kv.key(), kv.value()),
                1 => self.on_delete(kv.key()),
                other => {
                    self.report(format!("unknown etcd event type {other}"));
                    None
                }
            };
            if let Some(change) = change {
                self.delivered = self.delivered.max(revision);
                self.queue.push_back(Ok(Event {
                    revision: to_revision(revision),
                    change,
                }));
            }
        }
        After::Continue
    }

    fn on_put(&mut self, key: &[u8], value: &[u8]) -> Option<Change> {
        match self.decoder().decode(key, value) {
            Ok(endpoint) => match self.known.get(&endpoint.instance) {
                Some(old) if *old == endpoint => None,
                Some(_) => {
                    self.known
                        .insert(endpoint.instance.clone(), endpoint.clone());
                    Some(Change::Updated(endpoint))
                }
                None => {
                    self.known
                        .insert(endpoint.instance.clone(), endpoint.clone());
                    Some(Change::Added(endpoint))
                }
            },
            Err(why) => {
                self.report(why);
                // A valid endpoint overwritten by garbage is gone.
                let instance = self.decoder().instance(key)?.to_owned();
                self.known.remove(&instance)?;
                Some(Change::Removed { instance })
            }
        }
    }

    fn on_delete(&mut self, key: &[u8]) -> Option<Change> {
        let instance = self.decoder().instance(key)?.to_owned();
        self.known.remove(&instance)?;
        Some(Change::Removed { instance })
    }

    fn report(&mut self, why: String) {
        self.queue.push_back(Err(DiscoverError::Invalid(why)));
    }
}

/// What identifies the etcd a watch's revisions come from, beside the
/// revision itself: its cluster id, and its raft term, which never goes
/// backwards in one cluster's life. A member that lags behind an election
/// may report an older term for a moment: the cost is one needless resync.
#[derive(Default)]
struct StoreIdentity {
    cluster: Option<u64>,
    term: u64,
}

impl StoreIdentity {
    fn saw(&mut self, header: &ResponseHeader) {
        self.cluster = Some(header.cluster_id());
        self.term = self.term.max(header.raft_term());
    }

    /// Whether `header` comes from another store than the one seen so far.
    fn replaced_by(&self, header: &ResponseHeader) -> bool {
        self.cluster.is_some_and(|c| c != header.cluster_id()) || header.raft_term() < self.term
    }
}

/// `future`, or an error once `timeout` passed.
async fn within<T, F>(timeout: Duration, future: F) -> Result<T, String>
where
    F: Future<Output = Result<T, etcd_client::Error>>,
{
    match tokio::time::timeout(timeout, future).await {
        Ok(Ok(value)) => Ok(value),
        Ok(Err(e)) => Err(e.to_string()),
        Err(_) => Err(format!("etcd did not answer within {timeout:?}")),
    }
}

/// The end of the range of keys starting with `prefix` (etcd's convention:
/// the prefix with its last byte below 0xFF incremented).
fn prefix_end(prefix: &[u8]) -> Vec<u8> {
    let mut end = prefix.to_vec();
    while let Some(last) = end.pop() {
        if last < 0xff {
            end.push(last.saturating_add(1));
            return end;
        }
    }
    // Every byte was 0xFF: to the end of the keyspace.
    vec![0]
}

/// etcd's revisions are non-negative `i64`s.
fn to_revision(revision: i64) -> u64 {
    u64::try_from(revision).unwrap_or(0)
}

#[cfg(test)]
mod tests {
    use super::prefix_end;

    #[test]
    fn the_range_end_increments_the_last_byte() {
        assert_eq!(prefix_end(b"/p/kv/"), b"/p/kv0".to_vec());
        assert_eq!(prefix_end(b"a\xff"), b"b".to_vec());
        assert_eq!(prefix_end(b"\xff"), vec![0]);
    }
}
