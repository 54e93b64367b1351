//! Replays the conformance vectors of `tests/conformance/vectors.txt`
//! (format: PROTOCOL.md, "Conformance vectors") against the real
//! `courier::Server` over `courier_mem`, driven by the deterministic `Sim`
//! executor and a manual clock; checks that the Rust client encodes and
//! decodes the same bytes, and that the method keys PROTOCOL.md lists are
//! the ones the code derives.

#[path = "reliability/support.rs"]
mod support;

use std::cell::RefCell;
use std::fmt::Write as _;
use std::panic::{catch_unwind, AssertUnwindSafe};
use std::rc::Rc;
use std::sync::atomic::{AtomicU32, Ordering};
use std::task::{Context, Poll};
use std::time::Duration;

use courier::framing::LEN_PREFIX;
use courier::wire::Header;
use courier::{
    CallError, ClientBuilder, DriverError, MethodKey, RemoteError, Schema, ServerBuilder, Shutdown,
    Timer, Transport,
};
use courier_mem::{MemError, MemTransport};
use futures::StreamExt as _;
use support::{ManualClock, Sim};

/// The service the conformance vectors call; PROTOCOL.md lists its keys.
#[courier::service]
pub trait Conformance {
    /// `a + b`, wrapping.
    async fn add(&self, a: u64, b: u64) -> u64;
    /// Returns its argument.
    async fn echo(&self, data: Vec<u8>) -> Vec<u8>;
    /// `Ok(0)` for 0, else `Err("error {code}")`.
    async fn fail(&self, code: u32) -> Result<u32, String>;
    /// `-x`, wrapping.
    async fn negate(&self, x: i64) -> i64;
    /// `"hello"`, or `"hello, {name}"`.
    async fn greet(&self, name: Option<String>) -> String;
    /// Does nothing.
    async fn ping(&self);
    /// Returns `ms` once the clock has moved `ms` milliseconds on.
    async fn sleep(&self, ms: u32) -> u32;
    /// `count` copies of `byte`.
    async fn repeat(&self, byte: u8, count: u32) -> Vec<u8>;
    /// Panics.
    async fn crash(&self);
    /// Streams `0, 1, …, n - 1` (server streaming).
    async fn count(&self, n: u32) -> courier::BoxStream<u32>;
    /// The sum of the items (client streaming).
    async fn total(&self, items: courier::Streaming<u32>) -> u64;
    /// Sends each item back as it arrives (bidirectional).
    async fn echo_stream(&self, items: courier::Streaming<u32>) -> courier::BoxStream<u32>;
    /// Adds `v` to the notes' sum (a notification).
    #[oneway]
    async fn note(&self, v: u32);
    /// The sum of the notes received so far, wrapping.
    async fn notes(&self) -> u32;
}

struct Impl {
    clock: ManualClock,
    notes: AtomicU32,
}

impl Conformance for Impl {
    async fn add(&self, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
    async fn echo(&self, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn fail(&self, code: u32) -> Result<u32, String> {
        match code {
            0 => Ok(0),
            n => Err(format!("error {n}")),
        }
    }
    async fn negate(&self, x: i64) -> i64 {
        x.wrapping_neg()
    }
    async fn greet(&self, name: Option<String>) -> String {
        match name {
            None => "hello".to_string(),
            Some(name) => format!("hello, {name}"),
        }
    }
    async fn ping(&self) {}
    async fn sleep(&self, ms: u32) -> u32 {
        let at = self.clock.now() + Duration::from_millis(ms.into());
        self.clock.sleep_until(at).await;
        ms
    }
    async fn repeat(&self, byte: u8, count: u32) -> Vec<u8> {
        vec![byte; count.min(1 << 16) as usize]
    }
    async fn crash(&self) {
        panic!("the conformance service's crash() panics on purpose");
    }
    async fn count(&self, n: u32) -> courier::BoxStream<u32> {
        Box::pin(futures::stream::iter(0..n))
    }
    async fn total(&self, items: courier::Streaming<u32>) -> u64 {
        // An item that does not decode counts 0; the stream ends at the
        // caller's end frame (or the handler is dropped first).
        items
            .fold(0u64, |sum, item| async move {
                sum + u64::from(item.unwrap_or(0))
            })
            .await
    }
    async fn echo_stream(&self, items: courier::Streaming<u32>) -> courier::BoxStream<u32> {
        // An error (the call ended) is followed by the end of the stream.
        Box::pin(items.filter_map(|item| futures::future::ready(item.ok())))
    }
    async fn note(&self, v: u32) {
        // Wrapping, as `fetch_add` does.
        self.notes.fetch_add(v, Ordering::Relaxed);
    }
    async fn notes(&self) -> u32 {
        self.notes.load(Ordering::Relaxed)
    }
}

const VECTORS: &str = include_str!("conformance/vectors.txt");
const PROTOCOL: &str = include_str!("../PROTOCOL.md");

/// Sim rounds allowed per step before the executor reports a spin.
const ROUNDS: usize = 10_000;

// ---------------------------------------------------------------- parsing

#[derive(Debug)]
struct Vector {
    name: String,
    line: usize,
    pending: Option<String>,
    max_concurrent: Option<usize>,
    max_frame: Option<usize>,
    /// `reject=1`: the server answers requests at a full table `Overloaded`.
    reject: bool,
    /// The credit window of each request stream (`ServerBuilder::stream_credit`).
    stream_credit: Option<u32>,
    steps: Vec<Step>,
}

#[derive(Debug)]
enum Action {
    Write(Vec<u8>),
    WriteEof(Vec<u8>),
    Eof,
    Advance(u64),
    Shutdown,
}

#[derive(Debug)]
struct Step {
    line: usize,
    text: String,
    action: Action,
    /// Frames the server must have sent after the action; `true` = part of
    /// an unordered run.
    replies: Vec<(Vec<u8>, bool)>,
    /// `Some(true)`: the connection must be closed here; `Some(false)`: open.
    end: Option<bool>,
}

fn parse_hex(text: &str, line: usize) -> Result<Vec<u8>, String> {
    let digits: Vec<u8> = text
        .bytes()
        .filter(|b| !b.is_ascii_whitespace() && *b != b'|')
        .collect();
    let pairs = digits.chunks_exact(2);
    if !pairs.remainder().is_empty() {
        return Err(format!("line {line}: odd number of hex digits"));
    }
    pairs
        .map(|pair| {
            let pair = std::str::from_utf8(pair).unwrap_or("??");
            u8::from_str_radix(pair, 16).map_err(|_| format!("line {line}: bad hex {pair:?}"))
        })
        .collect()
}

fn parse_vectors(text: &str) -> Result<Vec<Vector>, String> {
    let mut vectors: Vec<Vector> = Vec::new();
    for (index, raw) in text.lines().enumerate() {
        let line = index + 1;
        let content = raw.split('#').next().unwrap_or("").trim();
        if content.is_empty() {
            continue;
        }
        if let Some(name) = content.strip_prefix("name:") {
            vectors.push(Vector {
                name: name.trim().to_string(),
                line,
                pending: None,
                max_concurrent: None,
                max_frame: None,
                reject: false,
                stream_credit: None,
                steps: Vec::new(),
            });
            continue;
        }
        let vector = vectors
            .last_mut()
            .ok_or_else(|| format!("line {line}: outside a vector"))?;
        let here = |what: &str| format!("line {line} ({}): {what}", vector.name);
        if let Some(rule) = content.strip_prefix("pending:") {
            vector.pending = Some(rule.trim().to_string());
        } else if let Some(config) = content.strip_prefix("config:") {
            for setting in config.split_whitespace() {
                let (key, value) = setting
                    .split_once('=')
                    .ok_or_else(|| here("config wants KEY=VALUE"))?;
                let value: usize = value.parse().map_err(|_| here("config value"))?;
                match key {
                    "max_concurrent" => vector.max_concurrent = Some(value),
                    "max_frame" => vector.max_frame = Some(value),
                    "reject" => vector.reject = value != 0,
                    "stream_credit" => {
                        let value = u32::try_from(value).map_err(|_| here("stream_credit"))?;
                        vector.stream_credit = Some(value);
                    }
                    other => return Err(here(&format!("unknown config key {other}"))),
                }
            }
        } else if let Some(hex) = content.strip_prefix(">|") {
            push_step(
                vector,
                line,
                content,
                Action::WriteEof(parse_hex(hex, line)?),
            );
        } else if let Some(hex) = content.strip_prefix('>') {
            push_step(vector, line, content, Action::Write(parse_hex(hex, line)?));
        } else if let Some(command) = content.strip_prefix('~') {
            let words: Vec<&str> = command.split_whitespace().collect();
            let action = match words.as_slice() {
                ["eof"] => Action::Eof,
                ["shutdown"] => Action::Shutdown,
                ["advance", ms] => Action::Advance(ms.parse().map_err(|_| here("advance MS"))?),
                _ => return Err(here("unknown ~ command")),
            };
            push_step(vector, line, content, action);
        } else if let Some((unordered, hex)) = content
            .strip_prefix("<*")
            .map(|h| (true, h))
            .or_else(|| content.strip_prefix('<').map(|h| (false, h)))
        {
            let frame = parse_hex(hex, line)?;
            // A typo in an expected frame should not pass for a server bug.
            let announced = frame
                .get(..LEN_PREFIX)
                .map(|p| u32::from_le_bytes(p.try_into().unwrap()) as usize);
            if announced != Some(frame.len().saturating_sub(LEN_PREFIX))
                || Header::decode(&frame[LEN_PREFIX..]).is_err()
            {
                return Err(here("an expected frame is not one whole valid frame"));
            }
            let step = vector
                .steps
                .last_mut()
                .ok_or_else(|| here("`<` before any action"))?;
            if step.end.is_some() {
                return Err(here("`<` after `=` in the same step"));
            }
            step.replies.push((frame, unordered));
        } else if let Some(end) = content.strip_prefix('=') {
            let closed = match end.trim() {
                "closed" => true,
                "open" => false,
                _ => return Err(here("`=` wants open or closed")),
            };
            let step = vector
                .steps
                .last_mut()
                .ok_or_else(|| here("`=` before any action"))?;
            step.end = Some(closed);
        } else {
            return Err(here("unknown line"));
        }
    }
    for vector in &vectors {
        if vector.steps.last().and_then(|s| s.end).is_none() {
            return Err(format!(
                "vector {} (line {}) must end with `= open` or `= closed`",
                vector.name, vector.line
            ));
        }
    }
    Ok(vectors)
}

fn push_step(vector: &mut Vector, line: usize, text: &str, action: Action) {
    vector.steps.push(Step {
        line,
        text: text.to_string(),
        action,
        replies: Vec::new(),
        end: None,
    });
}

// ---------------------------------------------------------------- display

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// A frame as hex plus what its header says.
fn describe(frame: &[u8]) -> String {
    let what = match frame.get(LEN_PREFIX..).map(Header::decode) {
        Some(Ok((header, at))) => {
            format!(
                "{header:?} body={}",
                hex(&frame[LEN_PREFIX + at.min(frame.len() - LEN_PREFIX)..])
            )
        }
        Some(Err(e)) => format!("undecodable: {e}"),
        None => "partial prefix".to_string(),
    };
    format!("{}  ({what})", hex(frame))
}

fn list(frames: &[Vec<u8>]) -> String {
    if frames.is_empty() {
        return "    (nothing)\n".to_string();
    }
    frames
        .iter()
        .map(|f| format!("    {}\n", describe(f)))
        .collect()
}

// ---------------------------------------------------------------- replay

type ServerResult = Rc<RefCell<Option<Result<(), DriverError<MemError>>>>>;

/// The client end of the connection, as a peer written in another language
/// would use it: raw bytes in, raw bytes out.
struct Peer {
    io: MemTransport,
    /// Bytes received that do not form a whole frame yet.
    partial: Vec<u8>,
    eof: bool,
}

impl Peer {
    fn write(&mut self, mut bytes: &[u8]) -> Result<(), String> {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        while !bytes.is_empty() {
            match self.io.poll_write(&mut cx, bytes) {
                Poll::Ready(Ok(n)) => bytes = &bytes[n..],
                Poll::Ready(Err(e)) => return Err(format!("client write failed: {e}")),
                Poll::Pending => return Err("client write blocked (pipe full)".to_string()),
            }
        }
        Ok(())
    }

    fn shut_write(&mut self) {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let _ = self.io.poll_close(&mut cx);
    }

    /// Reads what the server sent; returns whether anything arrived.
    fn read(&mut self) -> bool {
        let mut cx = Context::from_waker(std::task::Waker::noop());
        let mut buf = [0u8; 4096];
        let mut any = false;
        loop {
            match self.io.poll_read(&mut cx, &mut buf) {
                Poll::Ready(Ok(0)) => {
                    self.eof = true;
                    return any;
                }
                Poll::Ready(Ok(n)) => {
                    self.partial.extend_from_slice(&buf[..n]);
                    any = true;
                }
                Poll::Ready(Err(_)) | Poll::Pending => return any,
            }
        }
    }

    /// Takes the whole frames received so far.
    fn frames(&mut self) -> Vec<Vec<u8>> {
        let mut frames = Vec::new();
        while let Some(prefix) = self.partial.get(..LEN_PREFIX) {
            let len = LEN_PREFIX + u32::from_le_bytes(prefix.try_into().unwrap()) as usize;
            if self.partial.len() < len {
                break;
            }
            frames.push(self.partial.drain(..len).collect());
        }
        frames
    }
}

/// Runs the server until it is idle and everything it wrote is read.
fn settle(sim: &mut Sim<'_>, peer: &mut Peer) {
    loop {
        sim.run_until_stalled(ROUNDS);
        // Reading may make room for the server's next write.
        if !peer.read() {
            return;
        }
    }
}

/// Checks the frames received after one step against the expected ones.
fn check_replies(step: &Step, got: &[Vec<u8>]) -> Result<(), String> {
    let expected: Vec<Vec<u8>> = step.replies.iter().map(|(f, _)| f.clone()).collect();
    let mut ok = got.len() == expected.len();
    let mut at = 0;
    while ok && at < expected.len() {
        if !step.replies[at].1 {
            ok = got[at] == expected[at];
            at += 1;
            continue;
        }
        let end = (at..expected.len())
            .find(|&i| !step.replies[i].1)
            .unwrap_or(expected.len());
        let mut want = expected[at..end].to_vec();
        let mut have = got[at..end].to_vec();
        want.sort();
        have.sort();
        ok = want == have;
        at = end;
    }
    if ok {
        return Ok(());
    }
    Err(format!(
        "after line {} `{}`:\n  expected:\n{}  received:\n{}",
        step.line,
        step.text,
        list(&expected),
        list(got)
    ))
}

fn replay(vector: &Vector) -> Result<(), String> {
    let clock = ManualClock::new();
    let shutdown = Shutdown::new();
    let (client_io, server_io) = courier_mem::pair(64 * 1024);
    let mut builder = ServerBuilder::new()
        .timer(clock.clone())
        .shutdown(shutdown.clone());
    if let Some(n) = vector.max_concurrent {
        builder = builder.max_concurrent(n);
    }
    if vector.reject {
        builder = builder.when_full(courier::WhenFull::Reject);
    }
    if let Some(n) = vector.max_frame {
        builder = builder.max_frame(n);
    }
    if let Some(n) = vector.stream_credit {
        builder = builder.stream_credit(n);
    }
    let server = builder.build(
        server_io,
        ConformanceServer::new(Impl {
            clock: clock.clone(),
            notes: AtomicU32::new(0),
        }),
    );
    let result: ServerResult = Rc::new(RefCell::new(None));
    let out = result.clone();
    let mut sim = Sim::new();
    sim.spawn(async move {
        *out.borrow_mut() = Some(server.await);
    });
    let mut peer = Peer {
        io: client_io,
        partial: Vec::new(),
        eof: false,
    };
    settle(&mut sim, &mut peer);
    let early = peer.frames();
    if !early.is_empty() {
        return Err(format!(
            "the server spoke before the client:\n{}",
            list(&early)
        ));
    }
    for step in &vector.steps {
        match &step.action {
            Action::Write(bytes) => peer.write(bytes)?,
            Action::WriteEof(bytes) => {
                peer.write(bytes)?;
                peer.shut_write();
            }
            Action::Eof => peer.shut_write(),
            Action::Advance(ms) => clock.advance(Duration::from_millis(*ms)),
            Action::Shutdown => shutdown.trigger(),
        }
        settle(&mut sim, &mut peer);
        check_replies(step, &peer.frames())?;
        let Some(closed) = step.end else { continue };
        let server_done = result.borrow().is_some();
        let state = |closed: bool| if closed { "closed" } else { "open" };
        if peer.eof != closed || server_done != closed {
            return Err(format!(
                "after line {} `{}`: the connection should be {}, but the client {} end of \
                 stream and the server {}; {} partial byte(s) received: {}",
                step.line,
                step.text,
                state(closed),
                if peer.eof { "read" } else { "did not read" },
                match &*result.borrow() {
                    Some(r) => format!("ended with {r:?}"),
                    None => "is still running".to_string(),
                },
                peer.partial.len(),
                hex(&peer.partial),
            ));
        }
    }
    if !peer.partial.is_empty() {
        return Err(format!(
            "the server left a partial frame: {}",
            hex(&peer.partial)
        ));
    }
    Ok(())
}

fn replay_guarded(vector: &Vector) -> Result<(), String> {
    catch_unwind(AssertUnwindSafe(|| replay(vector))).unwrap_or_else(|panic| {
        let message = panic
            .downcast_ref::<String>()
            .cloned()
            .or_else(|| panic.downcast_ref::<&str>().map(|s| s.to_string()))
            .unwrap_or_default();
        Err(format!("panicked: {message}"))
    })
}

#[test]
fn conformance_vectors() {
    let vectors = parse_vectors(VECTORS).unwrap_or_else(|e| panic!("vectors.txt: {e}"));
    assert!(vectors.len() >= 40, "only {} vectors parsed", vectors.len());
    let mut names = std::collections::HashSet::new();
    let mut report = String::new();
    let mut failed = 0;
    for vector in &vectors {
        assert!(names.insert(&vector.name), "duplicate name {}", vector.name);
        let outcome = replay_guarded(vector);
        match (&vector.pending, outcome) {
            (None, Ok(())) => println!("ok       {}", vector.name),
            (Some(rule), Err(why)) => {
                println!("PENDING  {} (rule: {rule})", vector.name);
                for line in why.lines() {
                    println!("         | {line}");
                }
            }
            (None, Err(why)) => {
                failed += 1;
                let _ = writeln!(
                    report,
                    "\nFAILED {} (vectors.txt line {}):\n{why}",
                    vector.name, vector.line
                );
            }
            (Some(rule), Ok(())) => {
                failed += 1;
                let _ = writeln!(
                    report,
                    "\nPASSES BUT MARKED PENDING {} (vectors.txt line {}): the rule \
                     \"{rule}\" is implemented now; remove its `pending:` line",
                    vector.name, vector.line
                );
            }
        }
    }
    assert!(failed == 0, "{failed} vector(s) failed:{report}");
}

#[test]
fn the_replayer_catches_a_wrong_vector() {
    // A vector that expects the wrong sum, and one that expects a close the
    // server does not do: both must be reported, or the suite proves nothing.
    let text = "\
name: wrong-sum
> 11000000 010000 01000000 cb4a31cc83c1762f 0203
< 08000000 010100 01000000 06
= open
name: wrong-end
> 11000000 010000 01000000 cb4a31cc83c1762f 0203
< 08000000 010100 01000000 05
= closed
name: right
> 11000000 010000 01000000 cb4a31cc83c1762f 0203
< 08000000 010100 01000000 05
= open
";
    let vectors = parse_vectors(text).unwrap();
    let wrong_sum = replay_guarded(&vectors[0]).unwrap_err();
    assert!(
        wrong_sum.contains("expected") && wrong_sum.contains("05"),
        "{wrong_sum}"
    );
    let wrong_end = replay_guarded(&vectors[1]).unwrap_err();
    assert!(wrong_end.contains("should be closed"), "{wrong_end}");
    replay_guarded(&vectors[2]).unwrap();
    // An expected frame whose prefix does not match its length is a typo.
    assert!(parse_vectors("name: x\n> 00\n< 09000000 010100 01000000 05\n= open\n").is_err());
}

// ------------------------------------------------------- the Rust client

fn vector<'a>(vectors: &'a [Vector], name: &str) -> &'a Vector {
    vectors
        .iter()
        .find(|v| v.name == name)
        .unwrap_or_else(|| panic!("no vector {name}"))
}

/// The bytes a vector's step writes.
fn written(step: &Step) -> &[u8] {
    match &step.action {
        Action::Write(bytes) | Action::WriteEof(bytes) => bytes,
        other => panic!("line {}: not a write: {other:?}", step.line),
    }
}

/// `frame` with its request id (bytes 7..11 with the prefix) replaced.
fn with_id(frame: &[u8], id: u32) -> Vec<u8> {
    let mut out = frame.to_vec();
    out[7..11].copy_from_slice(&id.to_le_bytes());
    out
}

fn id_of(frame: &[u8]) -> u32 {
    u32::from_le_bytes(frame[7..11].try_into().unwrap())
}

/// A real client over a mem pair whose other end the test plays by hand.
struct ClientRig {
    sim: Sim<'static>,
    server_end: Peer,
    client: ConformanceClient,
}

impl ClientRig {
    fn new() -> Self {
        let (client_io, server_io) = courier_mem::pair(64 * 1024);
        let (client, driver) = ClientBuilder::new()
            .timer(ManualClock::new())
            .build(client_io);
        let mut sim = Sim::new();
        sim.spawn(async move {
            let _ = driver.await;
        });
        ClientRig {
            sim,
            server_end: Peer {
                io: server_io,
                partial: Vec::new(),
                eof: false,
            },
            client: ConformanceClient::new(client),
        }
    }

    /// Starts `call` in the executor; the slot gets its result.
    fn start<T: 'static>(
        &mut self,
        call: impl std::future::Future<Output = T> + 'static,
    ) -> Rc<RefCell<Option<T>>> {
        let slot = Rc::new(RefCell::new(None));
        let out = slot.clone();
        self.sim.spawn(async move {
            *out.borrow_mut() = Some(call.await);
        });
        slot
    }

    /// Frames the client wrote since the last look.
    fn sent(&mut self) -> Vec<Vec<u8>> {
        settle(&mut self.sim, &mut self.server_end);
        self.server_end.frames()
    }

    fn reply(&mut self, frame: &[u8]) {
        self.server_end.write(frame).unwrap();
        settle(&mut self.sim, &mut self.server_end);
    }
}

#[test]
fn rust_client_encodes_and_decodes_the_vectors_bytes() {
    let vectors = parse_vectors(VECTORS).unwrap();
    let mut rig = ClientRig::new();

    // add(40, 2) with a 1000 ms timeout, as in `request-with-timeout`. The
    // id is the client's choice; every other byte must match.
    let v = vector(&vectors, "request-with-timeout");
    let client = rig.client.clone();
    let sum = rig.start(async move {
        client
            .with_timeout(Duration::from_millis(1000))
            .add(40, 2)
            .await
    });
    let sent = rig.sent();
    assert_eq!(sent.len(), 1, "{}", list(&sent));
    let id = id_of(&sent[0]);
    let want = with_id(written(&v.steps[0]), id);
    assert_eq!(
        sent[0],
        want,
        "\n client: {}\n vector: {}",
        describe(&sent[0]),
        describe(&want)
    );
    rig.reply(&with_id(&v.steps[0].replies[0].0, id));
    assert_eq!(sum.borrow_mut().take(), Some(Ok(42)));

    // Every single-write vector of a well-formed call the typed client can
    // make, encoded by the client, and its reply decoded.
    let client = rig.client.clone();
    let greeting = rig.start(async move { client.greet(Some("ann".to_string())).await });
    let sent = rig.sent();
    let v = vector(&vectors, "option-and-string");
    let id = id_of(&sent[0]);
    assert_eq!(sent, [with_id(written(&v.steps[1]), id)]);
    rig.reply(&with_id(&v.steps[1].replies[0].0, id));
    assert_eq!(
        greeting.borrow_mut().take(),
        Some(Ok("hello, ann".to_string()))
    );

    // An application error: `Ok(Err(..))`, not a `CallError`.
    let client = rig.client.clone();
    let failed = rig.start(async move { client.fail(7).await });
    let sent = rig.sent();
    let v = vector(&vectors, "application-error");
    let id = id_of(&sent[0]);
    assert_eq!(sent, [with_id(written(&v.steps[0]), id)]);
    rig.reply(&with_id(&v.steps[0].replies[0].0, id));
    assert_eq!(
        failed.borrow_mut().take(),
        Some(Ok(Err("error 7".to_string())))
    );

    // Zero arguments: an empty body both ways.
    let client = rig.client.clone();
    let pinged = rig.start(async move { client.ping().await });
    let sent = rig.sent();
    let v = vector(&vectors, "zero-arguments");
    let id = id_of(&sent[0]);
    assert_eq!(sent, [with_id(written(&v.steps[0]), id)]);
    rig.reply(&with_id(&v.steps[0].replies[0].0, id));
    assert_eq!(pinged.borrow_mut().take(), Some(Ok(())));
}

#[test]
fn rust_client_cancel_and_error_frames_match_the_spec() {
    let mut rig = ClientRig::new();

    // Dropping a call sends the cancel frame of PROTOCOL.md: 11 bytes.
    let client = rig.client.clone();
    let (stop, stopped) = futures::channel::oneshot::channel::<()>();
    let _slot = rig.start(async move {
        let call = client.sleep(10);
        futures::pin_mut!(call);
        // Poll the call once so that it is sent, then drop it.
        let _ = futures::future::select(call, stopped).await;
    });
    let sent = rig.sent();
    assert_eq!(sent.len(), 1);
    let id = id_of(&sent[0]);
    stop.send(()).unwrap();
    let sent = rig.sent();
    let mut cancel = vec![0x07, 0, 0, 0, 0x01, 0x03, 0x00];
    cancel.extend_from_slice(&id.to_le_bytes());
    assert_eq!(sent, [cancel], "{}", list(&sent));

    // Error frames: the code decides; body bytes after it are ignored; an
    // unknown code is `Other(code)`.
    for (code, body, want) in [
        (3u8, &[][..], RemoteError::DeadlineExceeded),
        (6, &[0xde, 0xad][..], RemoteError::ShuttingDown),
        (200, &[][..], RemoteError::Other(200)),
    ] {
        let client = rig.client.clone();
        let result = rig.start(async move { client.add(1, 2).await });
        let id = id_of(&rig.sent()[0]);
        let mut frame = vec![0, 0, 0, 0, 0x01, 0x02, 0x00];
        frame.extend_from_slice(&id.to_le_bytes());
        frame.push(code);
        frame.extend_from_slice(body);
        let len = (frame.len() - LEN_PREFIX) as u32;
        frame[..4].copy_from_slice(&len.to_le_bytes());
        rig.reply(&frame);
        assert_eq!(
            result.borrow_mut().take(),
            Some(Err(CallError::Remote(want)))
        );
    }

    // A response body with bytes left over after the value is `Decode`.
    let client = rig.client.clone();
    let result = rig.start(async move { client.add(1, 2).await });
    let id = id_of(&rig.sent()[0]);
    let mut frame = vec![0x09, 0, 0, 0, 0x01, 0x01, 0x00];
    frame.extend_from_slice(&id.to_le_bytes());
    frame.extend_from_slice(&[0x03, 0x00]);
    rig.reply(&frame);
    assert_eq!(result.borrow_mut().take(), Some(Err(CallError::Decode)));

    // Requests, cancels and reserved kinds sent to the client are skipped;
    // the call in flight still gets its reply.
    let client = rig.client.clone();
    let result = rig.start(async move { client.add(2, 2).await });
    let id = id_of(&rig.sent()[0]);
    let mut noise = Vec::new();
    noise.extend_from_slice(&[0x0f, 0, 0, 0, 1, 0, 0]);
    noise.extend_from_slice(&id.to_le_bytes());
    noise.extend_from_slice(&ConformanceClient::PING.0.to_le_bytes());
    noise.extend_from_slice(&[0x07, 0, 0, 0, 1, 3, 0]);
    noise.extend_from_slice(&id.to_le_bytes());
    noise.extend_from_slice(&[0x09, 0, 0, 0, 1, 0x42, 0xff]);
    noise.extend_from_slice(&id.to_le_bytes());
    noise.extend_from_slice(&[1, 2]);
    rig.reply(&noise);
    assert_eq!(result.borrow_mut().take(), None);
    let mut frame = vec![0x08, 0, 0, 0, 0x01, 0x01, 0x00];
    frame.extend_from_slice(&id.to_le_bytes());
    frame.push(4);
    rig.reply(&frame);
    assert_eq!(result.borrow_mut().take(), Some(Ok(4)));
}

// --------------------------------------------------------- method keys

#[test]
fn method_keys_are_the_documented_ones() {
    let macro_keys = [
        ("add", ConformanceClient::ADD),
        ("echo", ConformanceClient::ECHO),
        ("fail", ConformanceClient::FAIL),
        ("negate", ConformanceClient::NEGATE),
        ("greet", ConformanceClient::GREET),
        ("ping", ConformanceClient::PING),
        ("sleep", ConformanceClient::SLEEP),
        ("repeat", ConformanceClient::REPEAT),
        ("crash", ConformanceClient::CRASH),
        ("count", ConformanceClient::COUNT),
        ("total", ConformanceClient::TOTAL),
        ("echo_stream", ConformanceClient::ECHO_STREAM),
        ("note", ConformanceClient::NOTE),
        ("notes", ConformanceClient::NOTES),
    ];
    // The key table in PROTOCOL.md (5.3):
    // | `service` | `method` | `signature` | `schema(args)` | `schema(result)` | `0x…` |
    let mut rows = Vec::new();
    for line in PROTOCOL.lines() {
        let cells: Vec<&str> = line
            .split('|')
            .map(|c| c.trim().trim_matches('`'))
            .collect();
        let [_, service, method, signature, args, result, key, ..] = cells.as_slice() else {
            continue;
        };
        let Some(key) = key.strip_prefix("0x") else {
            continue;
        };
        let key = MethodKey(u64::from_str_radix(key, 16).expect("a key in hex"));
        // Hash the documented bytes with FNV-1a 64, as section 5 says.
        let mut hashed = Vec::new();
        hashed.extend_from_slice(service.as_bytes());
        hashed.push(0);
        hashed.extend_from_slice(method.as_bytes());
        hashed.push(0);
        hashed.extend(parse_hex(args, 0).expect("schema bytes in hex"));
        hashed.extend(parse_hex(result, 0).expect("schema bytes in hex"));
        let derived = hashed.iter().fold(0xcbf2_9ce4_8422_2325u64, |hash, &b| {
            (hash ^ u64::from(b)).wrapping_mul(0x100_0000_01b3)
        });
        assert_eq!(
            MethodKey(derived),
            key,
            "PROTOCOL.md: {service}.{method} {signature}"
        );
        rows.push((service.to_string(), method.to_string(), key));
    }
    assert_eq!(rows.len(), 18, "the key table has 18 rows");
    // Every key the macro derives for the conformance service is listed.
    for (method, from_macro) in macro_keys {
        assert!(
            rows.iter()
                .any(|(s, m, k)| s == "Conformance" && m == method && *k == from_macro),
            "PROTOCOL.md lacks Conformance.{method} = {from_macro}"
        );
    }
    // The Calc example of section 5 is what the macro hashes, too, and
    // `from_schema` agrees.
    #[courier::service]
    trait Calc {
        async fn add(&self, a: u64, b: u64) -> u64;
    }
    assert!(rows
        .iter()
        .any(|(s, m, k)| s == "Calc" && m == "add" && *k == CalcClient::ADD));
    assert_eq!(
        CalcClient::ADD,
        MethodKey::from_schema("Calc", "add", <(u64, u64)>::SCHEMA, u64::SCHEMA)
    );
    // The wrong `add` of the `signature-mismatch` vector.
    assert!(rows.iter().any(|(s, m, k)| s == "Conformance"
        && m == "add"
        && *k == MethodKey::from_schema("Conformance", "add", <(u32, u32)>::SCHEMA, u32::SCHEMA)));
    // The methods the stream vectors call but the service lacks: what the
    // macro derives for them.
    mod unserved {
        #[courier::service]
        pub trait Conformance {
            async fn countdown(&self, n: u32) -> courier::BoxStream<u32>;
            async fn count(&self, n: u32) -> u32;
        }
    }
    for (method, key) in [
        ("countdown", unserved::ConformanceClient::COUNTDOWN),
        ("count", unserved::ConformanceClient::COUNT),
    ] {
        assert!(
            rows.iter()
                .any(|(s, m, k)| s == "Conformance" && m == method && *k == key),
            "PROTOCOL.md lacks the unserved Conformance.{method} = {key}"
        );
    }
}
