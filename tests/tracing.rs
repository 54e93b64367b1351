//! The `tracing` feature: the spans and events each side records for a
//! successful call, an application error, a timeout and a disconnect, and
//! a reconnecting client's connection events, seen by a collecting layer.

use std::collections::HashMap;
use std::io;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use courier::client::{Outage, ReconnectPolicy};
use courier::timer::AsyncIoTimer;
use courier::{CallError, ClientBuilder, ServerBuilder};
use futures::channel::oneshot;
use futures::future::{self, Either};
use tracing::field::{Field, Visit};
use tracing::span::{Attributes, Id, Record};
use tracing::{Event, Subscriber};
use tracing_subscriber::layer::{Context, SubscriberExt};
use tracing_subscriber::registry::LookupSpan;
use tracing_subscriber::Layer;

#[courier::service]
trait Store {
    async fn get(&self, key: u32) -> Option<u64>;
    async fn div(&self, a: u64, b: u64) -> Result<u64, String>;
    /// Never finishes; tells the test when it started.
    async fn stall(&self);
    /// Server streaming: 0, 1, ..., n - 1.
    async fn count(&self, n: u32) -> courier::BoxStream<u32>;
}

#[derive(Default)]
struct Imp {
    started: Mutex<Option<oneshot::Sender<()>>>,
}

impl Store for Imp {
    async fn get(&self, key: u32) -> Option<u64> {
        tracing::info!(key, "inside the handler");
        (key == 1).then_some(10)
    }
    async fn div(&self, a: u64, b: u64) -> Result<u64, String> {
        a.checked_div(b)
            .ok_or_else(|| "division by zero".to_string())
    }
    async fn stall(&self) {
        if let Some(started) = self.started.lock().unwrap().take() {
            let _ = started.send(());
        }
        future::pending::<()>().await
    }
    async fn count(&self, n: u32) -> courier::BoxStream<u32> {
        Box::pin(futures::stream::iter(0..n))
    }
}

/// A closed span or an event: its name (an event's message), its fields
/// and the name of its parent span.
#[derive(Clone, Debug, Default)]
struct Seen {
    name: String,
    target: String,
    level: String,
    fields: HashMap<String, String>,
    parent: Option<String>,
}

impl Seen {
    fn field(&self, name: &str) -> Option<&str> {
        self.fields.get(name).map(String::as_str)
    }
}

impl Visit for Seen {
    fn record_debug(&mut self, field: &Field, value: &dyn std::fmt::Debug) {
        let value = format!("{value:?}");
        if field.name() == "message" {
            self.name = value;
        } else {
            self.fields.insert(field.name().to_string(), value);
        }
    }
    fn record_str(&mut self, field: &Field, value: &str) {
        self.fields
            .insert(field.name().to_string(), value.to_string());
    }
}

/// Collects closed spans (with every field recorded on them) and events.
#[derive(Clone, Default)]
struct Collect {
    spans: Arc<Mutex<Vec<Seen>>>,
    events: Arc<Mutex<Vec<Seen>>>,
}

impl<S: Subscriber + for<'a> LookupSpan<'a>> Layer<S> for Collect {
    fn on_new_span(&self, attrs: &Attributes<'_>, id: &Id, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut seen = Seen {
            name: attrs.metadata().name().to_string(),
            target: attrs.metadata().target().to_string(),
            level: attrs.metadata().level().to_string(),
            parent: span.parent().map(|p| p.name().to_string()),
            ..Seen::default()
        };
        attrs.record(&mut seen);
        span.extensions_mut().insert(seen);
    }

    fn on_record(&self, id: &Id, values: &Record<'_>, ctx: Context<'_, S>) {
        let span = ctx.span(id).unwrap();
        let mut extensions = span.extensions_mut();
        if let Some(seen) = extensions.get_mut::<Seen>() {
            values.record(seen);
        }
    }

    fn on_event(&self, event: &Event<'_>, ctx: Context<'_, S>) {
        let mut seen = Seen {
            target: event.metadata().target().to_string(),
            level: event.metadata().level().to_string(),
            parent: ctx.event_span(event).map(|s| s.name().to_string()),
            ..Seen::default()
        };
        event.record(&mut seen);
        self.events.lock().unwrap().push(seen);
    }

    fn on_close(&self, id: Id, ctx: Context<'_, S>) {
        let span = ctx.span(&id).unwrap();
        let seen = span.extensions_mut().remove::<Seen>();
        if let Some(seen) = seen {
            self.spans.lock().unwrap().push(seen);
        }
    }
}

impl Collect {
    /// Runs `f` with this collector as the thread's subscriber.
    fn run<R>(&self, f: impl FnOnce() -> R) -> R {
        let subscriber = tracing_subscriber::registry().with(self.clone());
        tracing::subscriber::with_default(subscriber, f)
    }

    fn span(&self, name: &str, method: &str) -> Seen {
        let spans = self.spans.lock().unwrap();
        let found: Vec<_> = spans
            .iter()
            .filter(|s| s.name == name && s.field("method") == Some(method))
            .cloned()
            .collect();
        assert_eq!(found.len(), 1, "one {name} span of {method}: {spans:#?}");
        found.into_iter().next().unwrap()
    }

    fn event(&self, message: &str) -> Seen {
        let events = self.events.lock().unwrap();
        let found = events.iter().find(|e| e.name == message).cloned();
        found.unwrap_or_else(|| panic!("an event {message:?} in {events:#?}"))
    }

    fn events(&self, message: &str) -> usize {
        let events = self.events.lock().unwrap();
        events.iter().filter(|e| e.name == message).count()
    }
}

/// Asserts the client's and the server's span of one call.
fn assert_call(collect: &Collect, method: &str, outcome: &str) -> (Seen, Seen) {
    let call = collect.span("call", method);
    let serve = collect.span("serve", method);
    assert_eq!(call.target, "courier::client");
    assert_eq!(serve.target, "courier::server");
    assert_eq!(call.level, "DEBUG");
    for span in [&call, &serve] {
        assert_eq!(span.field("service"), Some("Store"), "{span:#?}");
        assert_eq!(span.field("key"), serve.field("key"));
    }
    assert_eq!(
        call.field("id"),
        serve.field("id"),
        "both sides name the id"
    );
    assert_eq!(call.field("outcome"), Some(outcome), "{call:#?}");
    assert!(call.field("wait_us").is_some(), "{call:#?}");
    assert!(serve.field("queued_us").is_some(), "{serve:#?}");
    assert!(serve.field("handler_us").is_some(), "{serve:#?}");
    assert_eq!(serve.parent.as_deref(), Some("connection"), "{serve:#?}");
    (call, serve)
}

/// A successful call and an application error, in memory.
#[test]
fn answered_calls_have_spans_on_both_sides() {
    let collect = Collect::default();
    collect.run(|| {
        let (client_io, server_io) = courier_mem::pair(64 * 1024);
        let server = ServerBuilder::new().build(server_io, StoreServer::new(Imp::default()));
        let (client, driver) = courier::Client::new(client_io);
        let store = StoreClient::new(client);
        futures::executor::block_on(async move {
            let calls = async move {
                assert_eq!(store.get(1).await, Ok(Some(10)));
                assert_eq!(store.div(1, 0).await, Ok(Err("division by zero".into())));
                assert_eq!(store.div(6, 3).await, Ok(Ok(2)));
                let items: Vec<_> = futures::StreamExt::collect(store.count(3)).await;
                assert_eq!(items, [Ok(0), Ok(1), Ok(2)]);
            };
            let (_, d, s) = futures::join!(calls, driver, server);
            d.unwrap();
            s.unwrap();
        });
    });
    let (call, serve) = assert_call(&collect, "get", "ok");
    assert_eq!(call.field("key"), Some(&*StoreClient::GET.0.to_string()));
    assert!(call.field("round_trip_us").is_some(), "{call:#?}");
    assert_eq!(serve.field("outcome"), Some("ok"));
    assert_eq!(call.field("error"), None);
    // A stream's spans last until it ended.
    let (stream, _) = assert_call(&collect, "count", "ok");
    assert!(stream.field("round_trip_us").is_some(), "{stream:#?}");
    assert_eq!(collect.span("serve", "count").field("outcome"), Some("ok"));
    // The handler's own event nests under the server's span.
    let inside = collect.event("inside the handler");
    assert_eq!(inside.parent.as_deref(), Some("serve"));

    let spans = collect.spans.lock().unwrap().clone();
    let div: Vec<_> = spans
        .iter()
        .filter(|s| s.field("method") == Some("div"))
        .collect();
    let outcomes = |name: &str| {
        let mut v: Vec<_> = div
            .iter()
            .filter(|s| s.name == name)
            .map(|s| s.field("outcome").unwrap().to_string())
            .collect();
        v.sort();
        v
    };
    assert_eq!(outcomes("call"), ["app_error", "ok"]);
    assert_eq!(outcomes("serve"), ["app_error", "ok"]);
}

/// A call past its timeout fails on the client (outcome `error`) and is
/// cancelled on the server, which drops the handler.
#[test]
fn a_timeout_is_an_error_on_the_client_and_a_cancel_on_the_server() {
    let collect = Collect::default();
    collect.run(|| {
        let (client_io, server_io) = courier_mem::pair(64 * 1024);
        // The server has no timer: only the client's cancel ends the call.
        let server = ServerBuilder::new().build(server_io, StoreServer::new(Imp::default()));
        let (client, driver) = ClientBuilder::new()
            .timer(AsyncIoTimer::new())
            .build(client_io);
        let store = StoreClient::new(client).with_timeout(Duration::from_millis(20));
        futures::executor::block_on(async move {
            let calls = async move {
                assert_eq!(store.stall().await, Err(CallError::DeadlineExceeded));
            };
            let (_, d, s) = futures::join!(calls, driver, server);
            d.unwrap();
            s.unwrap();
        });
    });
    let (call, serve) = assert_call(&collect, "stall", "error");
    assert_eq!(
        call.field("error"),
        Some(&*CallError::DeadlineExceeded.to_string())
    );
    assert_eq!(serve.field("outcome"), Some("cancelled"));
    assert_eq!(
        serve.field("error"),
        Some(&*CallError::Cancelled.to_string())
    );
}

/// A server that goes away mid-call: the client's call fails and its
/// driver reports the disconnect; the server's handler is dropped.
#[test]
fn a_disconnect_fails_the_call_and_is_reported() {
    let collect = Collect::default();
    let (started_tx, started_rx) = oneshot::channel();
    let imp = Imp {
        started: Mutex::new(Some(started_tx)),
    };
    let error = collect.run(|| {
        let (client_io, server_io) = courier_mem::pair(64 * 1024);
        let server = ServerBuilder::new().build(server_io, StoreServer::new(imp));
        let (client, driver) = courier::Client::new(client_io);
        let store = StoreClient::new(client);
        futures::executor::block_on(async move {
            // The server runs until the handler started, then is dropped
            // (its transport with it).
            let serve = async move {
                match future::select(server, started_rx).await {
                    Either::Left((result, _)) => panic!("server ended first: {result:?}"),
                    Either::Right((started, server)) => {
                        started.unwrap();
                        drop(server);
                    }
                }
            };
            let call = async move { store.stall().await };
            let (result, _, _) = futures::join!(call, driver, serve);
            result.unwrap_err()
        })
    });
    let (call, serve) = assert_call(&collect, "stall", "error");
    assert_eq!(call.field("error"), Some(&*error.to_string()));
    assert_eq!(serve.field("outcome"), Some("cancelled"));
    assert_eq!(
        serve.field("error"),
        Some(&*CallError::ConnectionLost.to_string())
    );
    let disconnected = collect.event("disconnected");
    assert_eq!(disconnected.level, "WARN");
    assert_eq!(disconnected.field("error"), Some(&*error.to_string()));
    assert_eq!(collect.event("closed").target, "courier::client");
}

/// A reconnecting client reports each connection, disconnect, failed
/// attempt and redial.
#[test]
fn a_reconnecting_client_reports_its_connection_events() {
    let collect = Collect::default();
    let attempts = Arc::new(AtomicUsize::new(0));
    let (accepted, mut incoming) = futures::channel::mpsc::unbounded();
    let connector = {
        let attempts = attempts.clone();
        move || {
            let (client, server) = courier_mem::pair(64 * 1024);
            let ready = match attempts.fetch_add(1, Ordering::SeqCst) {
                // The first connection's server end is dropped at once.
                0 => {
                    drop(server);
                    Ok(client)
                }
                1 => Err(io::Error::from(io::ErrorKind::ConnectionRefused)),
                _ => {
                    accepted.unbounded_send(server).unwrap();
                    Ok(client)
                }
            };
            std::future::ready(ready)
        }
    };
    collect.run(|| {
        let policy = ReconnectPolicy::new()
            .backoff(Duration::from_millis(1), Duration::from_millis(2))
            .outage(Outage::Wait {
                max_wait: Duration::from_secs(30),
            });
        let (client, driver) = ClientBuilder::new()
            .timer(AsyncIoTimer::new())
            .build_reconnecting(connector, policy);
        let store = StoreClient::new(client);
        futures::executor::block_on(async move {
            let serve = async move {
                use futures::StreamExt;
                let io = incoming.next().await.unwrap();
                ServerBuilder::new()
                    .build(io, StoreServer::new(Imp::default()))
                    .await
                    .unwrap();
            };
            let calls = async move {
                // Calls wait out the outage; one that the first connection's
                // end failed is retried after a pause.
                while store.get(1).await != Ok(Some(10)) {
                    async_io::Timer::after(Duration::from_millis(1)).await;
                }
            };
            futures::join!(calls, driver, serve);
        });
    });
    assert!(attempts.load(Ordering::SeqCst) >= 3);
    assert!(collect.events("connected") >= 2, "{:#?}", collect.events);
    let disconnected = collect.event("disconnected");
    assert_eq!(
        disconnected.field("error"),
        Some(&*CallError::ConnectionLost.to_string())
    );
    let failed = collect.event("connect attempt failed");
    assert!(
        failed.field("error").unwrap().contains("refused"),
        "{failed:#?}"
    );
    let reconnecting = collect.event("reconnecting");
    assert_eq!(reconnecting.level, "INFO");
    assert!(reconnecting.field("delay_ms").is_some());
    assert_eq!(collect.event("closed").target, "courier::client");
}
