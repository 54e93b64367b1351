//! tonic (gRPC over HTTP/2) loopback benchmark.
//!
//! One process: a tokio multi-thread runtime (2 workers by default) runs both
//! the tonic server and the clients, like tarpc-bench; or, with `--role
//! server|client` (TCP only), two processes with a runtime each: the server
//! binds `--addr` (default 127.0.0.1:0), prints `listening ADDR` and serves
//! until killed, the client connects `--conns` channels to `--addr` and
//! measures as in one process. Service (see
//! `proto/bench.proto`): `Add(AddRequest) -> AddReply`, `Echo(Bytes) -> Bytes`
//! and the server-streaming `Stream(StreamRequest) -> stream Item`.
//!
//! Transports:
//!
//! * `tcp` (default): `Server::builder().add_service(..)` on a `TcpIncoming`
//!   bound to 127.0.0.1:0; each of `--conns` clients is one
//!   `Endpoint::connect()` (= one `Channel`, one HTTP/2 connection).
//!   TCP_NODELAY: tonic turns it on by default on both ends
//!   (`Server::tcp_nodelay` and `Endpoint::tcp_nodelay` both default to true).
//!   `TcpIncoming::bind` on its own leaves the option unset, so the bench sets
//!   it explicitly from `--nodelay` (default 1, the same as what
//!   `Server::serve(addr)` does).
//! * `mem`: per connection one `tokio::io::duplex` pipe; the server half is
//!   handed to `serve_with_incoming`, the client half to
//!   `Endpoint::connect_with_connector`. Same HTTP/2 + gRPC stack, no sockets.
//!
//! Modes (`--mode`):
//!
//! * `unary` (default): `--concurrency` tasks per connection, each with its
//!   own clone of the generated client (they share the `Channel`), issue
//!   calls back to back: `Add` for `--payload 0`, else `Echo` of that many
//!   bytes. Latency = send to reply.
//! * `stream`: `--concurrency` server-streaming calls per connection (1 = one
//!   call); the server sends items of `--payload` bytes as fast as HTTP/2 flow
//!   control lets it, the client reads them back to back. Every item counts as
//!   one "call" (`calls_per_s` = items/s) and its "latency" is the gap since
//!   the previous item on the same call.
//!
//! Everything else is tonic's defaults (codec buffers, 4 MiB max decoded
//! message, HTTP/2 windows, `Channel` buffer of 1024 requests).

use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Instant;

use bench_common::{fail, report, run_phases, usage, Args, Phase, Recorder};
use futures::Stream;
use hyper_util::rt::TokioIo;
use tonic::transport::server::TcpIncoming;
use tonic::transport::{Channel, Endpoint, Server, Uri};
use tonic::{Request, Response, Status};

pub mod pb {
    tonic::include_proto!("bench");
}

use pb::bench_client::BenchClient;
use pb::bench_server::{Bench, BenchServer};

const TRANSPORTS: &[&str] = &["tcp", "mem"];
const EXTRA: &[&str] = &["--mode", "--role", "--addr"];

/// Per-direction buffer of the in-memory pipe (`--transport mem`).
const MEM_PIPE_BYTES: usize = 1 << 20;

#[derive(Debug, Default, Clone, Copy)]
struct Svc;

type ItemStream = Pin<Box<dyn Stream<Item = Result<pb::Item, Status>> + Send>>;

#[tonic::async_trait]
impl Bench for Svc {
    async fn add(&self, req: Request<pb::AddRequest>) -> Result<Response<pb::AddReply>, Status> {
        let r = req.into_inner();
        Ok(Response::new(pb::AddReply {
            sum: r.a.wrapping_add(r.b),
        }))
    }

    async fn echo(&self, req: Request<pb::Bytes>) -> Result<Response<pb::Bytes>, Status> {
        Ok(Response::new(req.into_inner()))
    }

    type StreamStream = ItemStream;

    async fn stream(
        &self,
        req: Request<pb::StreamRequest>,
    ) -> Result<Response<ItemStream>, Status> {
        let template = vec![0xA5u8; req.into_inner().payload as usize];
        // Endless and always ready: tonic encodes items until its buffer
        // reaches the yield threshold, and hyper/h2 only polls the body
        // again when flow control has room, i.e. as fast as the client reads.
        let items = futures::stream::repeat_with(move || {
            Ok(pb::Item {
                data: template.clone(),
            })
        });
        Ok(Response::new(Box::pin(items)))
    }
}

/// Binds `addr` and starts the server on it; returns the bound address.
/// Must run inside the runtime.
fn start_tcp_server(addr: SocketAddr, nodelay: bool) -> std::io::Result<SocketAddr> {
    let incoming = TcpIncoming::bind(addr)?.with_nodelay(Some(nodelay));
    let addr = incoming.local_addr()?;
    tokio::spawn(async move {
        if let Err(e) = Server::builder()
            .add_service(BenchServer::new(Svc))
            .serve_with_incoming(incoming)
            .await
        {
            eprintln!("server: {e}");
        }
    });
    Ok(addr)
}

/// The loopback address with a free port, for the one-process mode.
fn any_local() -> SocketAddr {
    SocketAddr::from(([127, 0, 0, 1], 0))
}

/// Where this process runs: `--role both|server|client` with `--addr`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Role {
    /// Server and clients in this process (the default).
    Both,
    /// Serve on this address until killed.
    Server(SocketAddr),
    /// Measure clients of the server at this address.
    Client(SocketAddr),
}

impl Role {
    /// `--role` and `--addr` of `args`.
    fn of(args: &Args) -> Result<Role, String> {
        let addr = args
            .extra("--addr")
            .map(|a| {
                a.parse::<SocketAddr>()
                    .map_err(|_| format!("--addr: expected HOST:PORT, got {a:?}"))
            })
            .transpose()?;
        let role = match (args.extra("--role").unwrap_or("both"), addr) {
            ("both", _) => Role::Both,
            ("server", addr) => Role::Server(addr.unwrap_or_else(any_local)),
            ("client", Some(addr)) => Role::Client(addr),
            ("client", None) => return Err("--role client: --addr HOST:PORT is required".into()),
            (v, _) => return Err(format!("--role: expected both|server|client, got {v:?}")),
        };
        if role != Role::Both && args.transport != "tcp" {
            return Err("--role server|client: only with --transport tcp".into());
        }
        Ok(role)
    }
}

/// One client connection (a `Channel` is one HTTP/2 connection).
async fn tcp_channel(addr: SocketAddr, nodelay: bool) -> Result<Channel, tonic::transport::Error> {
    Endpoint::from_shared(format!("http://{addr}"))?
        .tcp_nodelay(nodelay)
        .connect()
        .await
}

/// One in-memory connection: a duplex pipe with a server on one end and a
/// `Channel` on the other. Must run inside the runtime.
async fn mem_channel() -> Result<Channel, tonic::transport::Error> {
    let (client_io, server_io) = tokio::io::duplex(MEM_PIPE_BYTES);
    let incoming = futures::stream::iter([Ok::<_, std::io::Error>(server_io)]);
    tokio::spawn(async move {
        if let Err(e) = Server::builder()
            .add_service(BenchServer::new(Svc))
            .serve_with_incoming(incoming)
            .await
        {
            eprintln!("mem server: {e}");
        }
    });
    let mut client_io = Some(client_io);
    // The URI is never resolved: the connector hands out the pipe (once).
    Endpoint::from_static("http://in-memory.invalid")
        .connect_with_connector(tower::service_fn(move |_: Uri| {
            let io = client_io.take();
            async move {
                io.map(TokioIo::new).ok_or_else(|| {
                    std::io::Error::other("mem transport: the pipe cannot reconnect")
                })
            }
        }))
        .await
}

static ERROR_SHOWN: AtomicBool = AtomicBool::new(false);

/// Prints the first failed call to stderr (once per process).
fn note_error(what: &str, e: &dyn std::fmt::Display) {
    if !ERROR_SHOWN.swap(true, Ordering::Relaxed) {
        eprintln!("# first error ({what}): {e}");
    }
}

/// One in-flight unary call slot: issues calls back to back.
async fn unary_worker(
    mut client: BenchClient<Channel>,
    phase: Arc<Phase>,
    payload: usize,
    seed: u64,
) -> Recorder {
    let mut rec = Recorder::new();
    let mut buf = vec![0xA5u8; payload];
    let mut a = seed;
    loop {
        let t0 = Instant::now();
        let ok = if payload == 0 {
            a = a.wrapping_add(1);
            match client.add(pb::AddRequest { a, b: 7 }).await {
                Ok(r) => r.get_ref().sum == a.wrapping_add(7),
                Err(e) => {
                    note_error("add", &e);
                    false
                }
            }
        } else {
            // Echo returns the same bytes: reuse the returned Vec as the
            // next request, as tarpc-bench does.
            let req = pb::Bytes {
                data: std::mem::take(&mut buf),
            };
            match client.echo(req).await {
                Ok(r) => {
                    buf = r.into_inner().data;
                    let ok = buf.len() == payload;
                    if !ok {
                        buf.resize(payload, 0xA5);
                    }
                    ok
                }
                Err(e) => {
                    note_error("echo", &e);
                    buf = vec![0xA5u8; payload];
                    false
                }
            }
        };
        if !rec.finish(&phase, ok, t0.elapsed()) {
            return rec;
        }
    }
}

/// One server-streaming call: reads items back to back; each item counts as
/// a call, its latency is the gap since the previous item.
async fn stream_worker(
    mut client: BenchClient<Channel>,
    phase: Arc<Phase>,
    payload: usize,
) -> Recorder {
    let mut rec = Recorder::new();
    let mut last = Instant::now();
    let req = pb::StreamRequest {
        payload: payload as u32,
    };
    let mut items = match client.stream(req).await {
        Ok(r) => r.into_inner(),
        Err(e) => {
            note_error("stream", &e);
            rec.finish(&phase, false, last.elapsed());
            return rec;
        }
    };
    loop {
        let item = items.message().await;
        let now = Instant::now();
        let ok = matches!(&item, Ok(Some(it)) if it.data.len() == payload);
        if !rec.finish(&phase, ok, now - last) {
            // Dropping `items` cancels the call (RST_STREAM).
            return rec;
        }
        last = now;
        match item {
            Ok(Some(_)) => {}
            Ok(None) => {
                note_error("stream", &"server ended the stream");
                return rec;
            }
            Err(e) => {
                note_error("stream", &e);
                return rec;
            }
        }
    }
}

fn main() {
    let args = Args::from_env(Args::default(), TRANSPORTS, EXTRA);
    let usage_text = usage("tonic-bench", TRANSPORTS, EXTRA);
    let stream_mode = match args.extra("--mode").unwrap_or("unary") {
        "unary" => false,
        "stream" => true,
        v => fail(
            &usage_text,
            &format!("--mode: expected unary|stream, got {v:?}"),
        ),
    };
    let role = Role::of(&args).unwrap_or_else(|e| fail(&usage_text, &e));
    if args.payload > u32::MAX as usize {
        fail(&usage_text, "--payload too large");
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
        .expect("tokio runtime");

    if let Role::Server(addr) = role {
        // Separate processes: serve on `addr` until killed.
        rt.block_on(async {
            let addr = start_tcp_server(addr, args.nodelay).expect("bind");
            println!("listening {addr}");
            use std::io::Write;
            let _ = std::io::stdout().flush();
            std::future::pending::<()>().await
        });
        return;
    }

    let phase = Phase::new();

    // Set up server (unless it runs elsewhere) + client connections (not
    // timed).
    let channels: Vec<Channel> = rt.block_on(async {
        let mut v = Vec::with_capacity(args.conns);
        if args.transport == "tcp" {
            let addr = match role {
                Role::Client(addr) => addr,
                _ => start_tcp_server(any_local(), args.nodelay).expect("bind"),
            };
            for _ in 0..args.conns {
                v.push(tcp_channel(addr, args.nodelay).await.expect("connect"));
            }
        } else {
            for _ in 0..args.conns {
                v.push(mem_channel().await.expect("connect (mem)"));
            }
        }
        v
    });

    let mut handles = Vec::with_capacity(args.conns * args.concurrency);
    for (ci, channel) in channels.iter().enumerate() {
        for ti in 0..args.concurrency {
            let client = BenchClient::new(channel.clone());
            let phase = phase.clone();
            handles.push(if stream_mode {
                rt.spawn(stream_worker(client, phase, args.payload))
            } else {
                let seed = ((ci * args.concurrency + ti) as u64) << 32;
                rt.spawn(unary_worker(client, phase, args.payload, seed))
            });
        }
    }

    // Warm-up, measure, stop — timed from this (non-worker) thread.
    let elapsed = run_phases(&phase, args.warmup, args.duration);

    let total = rt.block_on(async {
        let mut total = Recorder::new();
        for h in handles {
            let r = h.await.expect("worker panicked");
            total.merge(&r);
        }
        total
    });
    drop(channels);
    let name = if stream_mode { "tonic-stream" } else { "tonic" };
    report(name, &args, &total, elapsed);
    if total.calls == 0 {
        std::process::exit(1);
    }
    // Don't wait for the server tasks to wind down.
    rt.shutdown_background();
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn exercise(channel: Channel) {
        let mut c = BenchClient::new(channel);
        let r = c.add(pb::AddRequest { a: 40, b: 2 }).await.unwrap();
        assert_eq!(r.into_inner().sum, 42);
        let r = c.echo(pb::Bytes { data: vec![7; 100] }).await.unwrap();
        assert_eq!(r.into_inner().data, vec![7; 100]);
        let mut s = c
            .stream(pb::StreamRequest { payload: 33 })
            .await
            .unwrap()
            .into_inner();
        for _ in 0..3 {
            let item = s.message().await.unwrap().unwrap();
            assert_eq!(item.data.len(), 33);
        }
    }

    fn rt() -> tokio::runtime::Runtime {
        tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .unwrap()
    }

    #[test]
    fn tcp_roundtrip() {
        rt().block_on(async {
            let addr = start_tcp_server(any_local(), true).unwrap();
            exercise(tcp_channel(addr, true).await.unwrap()).await;
        });
    }

    fn role(flags: &[&str]) -> Result<Role, String> {
        let args = Args::parse_from(flags.iter().copied(), TRANSPORTS, EXTRA)?;
        Role::of(&args)
    }

    #[test]
    fn roles_parse() {
        let addr: SocketAddr = "127.0.0.1:4000".parse().unwrap();
        assert_eq!(role(&[]), Ok(Role::Both));
        assert_eq!(role(&["--role", "server"]), Ok(Role::Server(any_local())));
        assert_eq!(
            role(&["--role", "server", "--addr", "127.0.0.1:4000"]),
            Ok(Role::Server(addr))
        );
        assert_eq!(
            role(&["--role", "client", "--addr", "127.0.0.1:4000"]),
            Ok(Role::Client(addr))
        );
        assert!(
            role(&["--role", "client"]).is_err(),
            "client without --addr"
        );
        assert!(role(&["--role", "client", "--addr", "nowhere"]).is_err());
        assert!(role(&["--role", "peer"]).is_err());
        assert!(role(&["--role", "server", "--transport", "mem"]).is_err());
    }

    /// `--role server` as the server process runs it, `--role client`'s
    /// channel against it: the same calls go through.
    #[test]
    fn client_role_reaches_a_separate_server() {
        let server = rt();
        let addr = server
            .block_on(async { start_tcp_server(any_local(), true) })
            .unwrap();
        rt().block_on(async {
            exercise(tcp_channel(addr, true).await.unwrap()).await;
        });
    }

    #[test]
    fn mem_roundtrip() {
        rt().block_on(async {
            exercise(mem_channel().await.unwrap()).await;
        });
    }
}
