//! `--mode stream|bidi`: courier's streams measured the way the peers'
//! `tonic-stream` row measures gRPC server streaming.
//!
//! - `stream` (result name `courier-stream`): each of the `--concurrency`
//!   slots makes one server-streaming call of [`STREAM`]; the server returns
//!   an endless, always-ready stream of `--payload`-byte items (a clone of
//!   one template per item, like tonic's), and the client reads them back to
//!   back until the stop flag, then drops the stream (which cancels the
//!   call).
//! - `bidi` (result name `courier-bidi`): each slot opens one bidirectional
//!   call of [`BIDI`]; the client sends an endless, always-ready stream of
//!   payload-sized items and the server echoes each one back.
//!
//! In both, `calls_per_s` is items received per second in the measured
//! window and the latencies are the gaps between consecutive items of one
//! call (not round trips).
//!
//! The two methods are served by [`StreamService`], a hand-written
//! [`Service`] that handles their keys itself and hands every other key to
//! the service it wraps (the generated [`BenchServer`]), so the
//! `service!` declaration in `lib.rs` stays unary.

use std::sync::Arc;
use std::time::Instant;

use courier::schema::StreamOf;
use courier::wire::MethodKey;
use courier::Schema;
use courier::{Handler, RemoteError, ServerBuilder, Service, Streaming, Timer, Transport};
use futures::StreamExt;
use serde_bytes::ByteBuf;

use crate::measure::{Args, Phase, Recorder};
use crate::{BenchImpl, BenchServer, BoxFuture, Runtime};

/// Method key of the server-streaming method: `(payload: u32)` → endless
/// stream of `payload`-byte [`ByteBuf`]s.
pub const STREAM: MethodKey = MethodKey::from_schema(
    "Bench",
    "stream",
    <(u32,) as Schema>::SCHEMA,
    <StreamOf<crate::Payload> as Schema>::SCHEMA,
);

/// Method key of the bidirectional method: `()` plus a stream of
/// [`ByteBuf`]s → the same items echoed back.
pub const BIDI: MethodKey = MethodKey::from_schema(
    "Bench",
    "bidi",
    <(StreamOf<crate::Payload>,) as Schema>::SCHEMA,
    <StreamOf<crate::Payload> as Schema>::SCHEMA,
);

/// What one run measures (`--mode`).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Mode {
    /// Unary calls (`add` or echo), one round trip per call.
    #[default]
    Unary,
    /// One server-streaming call per slot; items received per second.
    Stream,
    /// One bidirectional echo call per slot; echoed items per second.
    Bidi,
}

impl Mode {
    /// Parses `unary|stream|bidi`.
    pub fn parse(s: &str) -> Result<Mode, String> {
        match s {
            "unary" => Ok(Mode::Unary),
            "stream" => Ok(Mode::Stream),
            "bidi" => Ok(Mode::Bidi),
            _ => Err(format!("--mode: expected unary|stream|bidi, got {s:?}")),
        }
    }

    /// The `--mode` of parsed arguments (unary when absent).
    pub fn of(args: &Args) -> Result<Mode, String> {
        Mode::parse(args.extra("--mode").unwrap_or("unary"))
    }

    /// The first word of the result line.
    pub fn result_name(self) -> &'static str {
        match self {
            Mode::Unary => "courier",
            Mode::Stream => "courier-stream",
            Mode::Bidi => "courier-bidi",
        }
    }
}

/// `--credit N`: the items the server may send ahead of the client on a
/// response stream (`CallStream::with_credit`); courier's default
/// ([`courier::client::DEFAULT_CREDIT`]) when absent. The other direction
/// of a bidirectional call keeps the server's default `stream_credit`
/// (the TCP and Unix serve builders do not expose it).
pub fn credit(args: &Args) -> Result<u32, String> {
    match args.extra("--credit") {
        None => Ok(courier::client::DEFAULT_CREDIT),
        Some(v) => v
            .parse()
            .ok()
            .filter(|&n: &u32| n > 0)
            .ok_or_else(|| format!("--credit: expected a number > 0, got {v:?}")),
    }
}

/// Serves [`STREAM`] and [`BIDI`] and delegates every other method key to
/// the wrapped service.
#[derive(Clone, Debug)]
pub struct StreamService<S>(pub S);

impl<S: Service> Service for StreamService<S> {
    fn dispatch(&self, method: MethodKey, args: &[u8]) -> Result<Handler, RemoteError> {
        match method {
            STREAM => {
                let (payload,): (u32,) =
                    postcard::from_bytes(args).map_err(|_| RemoteError::BadRequest)?;
                Ok(Handler::stream(async move {
                    let template = ByteBuf::from(vec![0xa5; payload as usize]);
                    futures::stream::repeat_with(move || template.clone())
                }))
            }
            BIDI => Ok(Handler::receiving(|items: Streaming<ByteBuf>| {
                // An item that does not decode comes back empty: the caller
                // counts it as an error.
                Handler::stream(async move { items.map(Result::unwrap_or_default) })
            })),
            _ => self.0.dispatch(method, args),
        }
    }
}

/// The service every `courier-bench` server runs: the generated
/// [`BenchServer`] plus the two stream methods.
pub fn service() -> StreamService<BenchServer<BenchImpl>> {
    StreamService(BenchServer::new(BenchImpl))
}

/// The server of one connection (as [`crate::server`], with the stream
/// methods).
pub fn server<T: Transport>(
    io: T,
    concurrency: usize,
) -> courier::Server<T, StreamService<BenchServer<BenchImpl>>> {
    ServerBuilder::new()
        .max_concurrent(concurrency.max(courier::server::DEFAULT_MAX_CONCURRENT))
        .build(io, service())
}

/// Reads one call's items back to back until the stop flag; each item
/// counts as a call, its latency the gap since the previous item (or since
/// the call was made, for the first). An item of the wrong size, or an
/// error, counts as an error; the stream ending early ends the worker.
async fn read_items<S>(mut items: S, payload: usize, phase: &Phase) -> Recorder
where
    S: futures::Stream<Item = Result<ByteBuf, courier::CallError>> + Unpin,
{
    let mut rec = Recorder::new();
    let mut last = Instant::now();
    loop {
        let item = items.next().await;
        let now = Instant::now();
        let ok = matches!(&item, Some(Ok(b)) if b.len() == payload);
        // Dropping `items` at the stop flag cancels the call.
        if !rec.finish(phase, ok, now - last) {
            return rec;
        }
        last = now;
        if item.is_none() {
            eprintln!("# courier: the server ended the stream");
            return rec;
        }
    }
}

/// One `--mode stream` slot: one server-streaming call, read to the stop
/// flag.
pub async fn stream_caller(
    client: courier::Client,
    payload: usize,
    credit: u32,
    phase: Arc<Phase>,
) -> Recorder {
    let items = client
        .server_stream::<_, ByteBuf>(STREAM, (payload as u32,))
        .with_credit(credit);
    read_items(items, payload, &phase).await
}

/// One `--mode bidi` slot: one bidirectional call sending an endless,
/// always-ready stream of `payload`-byte items; counts the echoes.
pub async fn bidi_caller(
    client: courier::Client,
    payload: usize,
    credit: u32,
    phase: Arc<Phase>,
) -> Recorder {
    let template = ByteBuf::from(vec![0xa5; payload]);
    let outgoing = futures::stream::repeat_with(move || template.clone());
    let echoes = client
        .bidi_stream::<_, _, ByteBuf>(BIDI, (), outgoing)
        .with_credit(credit);
    read_items(echoes, payload, &phase).await
}

/// Spawns the client driver and `concurrency` callers of one connection in
/// `mode` ([`crate::start_client`] for unary); returns the callers'
/// handles.
pub fn start_client<R, T, Tm>(
    rt: &R,
    connection: (courier::Client, courier::ClientDriver<T, Tm>),
    mode: Mode,
    concurrency: usize,
    payload: usize,
    credit: u32,
    phase: &Arc<Phase>,
) -> Vec<BoxFuture<Recorder>>
where
    R: Runtime,
    T: Transport + Send + 'static,
    T::Error: Send,
    Tm: Timer + Send + 'static,
    Tm::Sleep: Send,
{
    let caller = match mode {
        Mode::Unary => return crate::start_client(rt, connection, concurrency, payload, phase),
        Mode::Stream => {
            |c, p, n, ph| -> BoxFuture<Recorder> { Box::pin(stream_caller(c, p, n, ph)) }
        }
        Mode::Bidi => |c, p, n, ph| -> BoxFuture<Recorder> { Box::pin(bidi_caller(c, p, n, ph)) },
    };
    let (client, driver) = connection;
    rt.detach(driver);
    (0..concurrency)
        .map(|i| rt.spawn_caller(i, caller(client.clone(), payload, credit, phase.clone())))
        .collect()
}
