//! tarpc loopback benchmark.
//!
//! One process: a tokio multi-thread runtime (2 workers by default) runs both
//! the tarpc server (127.0.0.1:0, or an in-memory channel for `--transport mem`)
//! and the clients. Each of `--conns` client connections is shared by
//! `--concurrency` tasks, each of which issues calls back to back.
//!
//! TCP transport = tarpc's serde transport (tokio-util LengthDelimitedCodec +
//! tokio-serde Bincode), built the same way `tarpc::serde_transport::tcp`
//! builds it; TCP_NODELAY stays off unless `--nodelay 1` (tarpc default).
//!
//! `--echo vec` (default) calls `echo(Vec<u8>) -> Vec<u8>`; serde encodes a
//! `Vec<u8>` as a sequence, one element at a time. `--echo bytebuf` calls
//! `echo_bytes(serde_bytes::ByteBuf) -> ByteBuf` instead (same bytes on the
//! wire for bincode, encoded/decoded as one slice), to show how much of the
//! large-payload cost is serde's per-element `Vec<u8>` handling.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Instant;

use bench_common::{fail, report, run_phases, usage, Args, Phase, Recorder};
use futures::prelude::*;
use serde_bytes::ByteBuf;
use tarpc::{
    client, context,
    server::{BaseChannel, Channel},
};
use tokio::net::{TcpListener, TcpStream};
use tokio_serde::formats::Bincode;
use tokio_util::codec::LengthDelimitedCodec;

/// `tarpc::serde_transport::tcp::{listen, connect}` leave Nagle on; the
/// benchmark's default matches that so that a plain run measures tarpc as
/// shipped. `--nodelay 1` sets TCP_NODELAY on both ends.
const TARPC_DEFAULT_NODELAY: bool = false;

#[tarpc::service]
pub trait Bench {
    /// Returns its argument.
    async fn echo(data: Vec<u8>) -> Vec<u8>;
    /// Returns its argument (serde_bytes encoding).
    async fn echo_bytes(data: ByteBuf) -> ByteBuf;
    /// Returns a + b (wrapping).
    async fn add(a: u64, b: u64) -> u64;
}

#[derive(Clone)]
struct BenchServer;

impl Bench for BenchServer {
    async fn echo(self, _: context::Context, data: Vec<u8>) -> Vec<u8> {
        data
    }
    async fn echo_bytes(self, _: context::Context, data: ByteBuf) -> ByteBuf {
        data
    }
    async fn add(self, _: context::Context, a: u64, b: u64) -> u64 {
        a.wrapping_add(b)
    }
}

async fn spawn(fut: impl Future<Output = ()> + Send + 'static) {
    tokio::spawn(fut);
}

/// Accepts connections forever; one tarpc BaseChannel per connection, each
/// request handled in its own spawned task (the idiomatic tarpc server shape).
async fn tcp_server(listener: TcpListener, nodelay: bool) {
    loop {
        let (stream, _) = match listener.accept().await {
            Ok(c) => c,
            Err(e) => {
                eprintln!("accept: {e}");
                continue;
            }
        };
        let _ = stream.set_nodelay(nodelay);
        let framed = LengthDelimitedCodec::builder().new_framed(stream);
        let transport = tarpc::serde_transport::new(framed, Bincode::default());
        let channel = BaseChannel::with_defaults(transport);
        tokio::spawn(channel.execute(BenchServer.serve()).for_each(spawn));
    }
}

async fn tcp_client(addr: SocketAddr, nodelay: bool) -> std::io::Result<BenchClient> {
    let stream = TcpStream::connect(addr).await?;
    stream.set_nodelay(nodelay)?;
    let framed = LengthDelimitedCodec::builder().new_framed(stream);
    let transport = tarpc::serde_transport::new(framed, Bincode::default());
    Ok(BenchClient::new(client::Config::default(), transport).spawn())
}

fn mem_client() -> BenchClient {
    let (client_side, server_side) = tarpc::transport::channel::unbounded();
    let channel = BaseChannel::with_defaults(server_side);
    tokio::spawn(channel.execute(BenchServer.serve()).for_each(spawn));
    BenchClient::new(client::Config::default(), client_side).spawn()
}

/// One in-flight call slot: issues calls back to back on a shared client.
async fn worker(
    client: BenchClient,
    phase: Arc<Phase>,
    payload: usize,
    bytebuf: bool,
    seed: u64,
) -> Recorder {
    let mut rec = Recorder::new();
    let mut buf = vec![0xA5u8; payload];
    let mut a = seed;
    loop {
        let t0 = Instant::now();
        let ok = if payload == 0 {
            a = a.wrapping_add(1);
            matches!(client.add(context::current(), a, 7).await, Ok(s) if s == a.wrapping_add(7))
        } else if bytebuf {
            let req = ByteBuf::from(std::mem::take(&mut buf));
            match client.echo_bytes(context::current(), req).await {
                Ok(v) => {
                    buf = v.into_vec();
                    let ok = buf.len() == payload;
                    if !ok {
                        buf.resize(payload, 0xA5);
                    }
                    ok
                }
                Err(_) => {
                    buf = vec![0xA5u8; payload];
                    false
                }
            }
        } else {
            // Echo returns the same bytes: reuse the returned Vec as the
            // next request so that the client side allocates nothing extra.
            match client
                .echo(context::current(), std::mem::take(&mut buf))
                .await
            {
                Ok(v) => {
                    let ok = v.len() == payload;
                    buf = v;
                    if !ok {
                        buf.resize(payload, 0xA5);
                    }
                    ok
                }
                Err(_) => {
                    buf = vec![0xA5u8; payload];
                    false
                }
            }
        };
        let lat = t0.elapsed();
        if !rec.finish(&phase, ok, lat) {
            return rec;
        }
    }
}

fn main() {
    let defaults = Args {
        nodelay: TARPC_DEFAULT_NODELAY,
        ..Args::default()
    };
    const EXTRA: &[&str] = &["--echo", "--role", "--addr"];
    let args = Args::from_env(defaults, &["tcp", "mem"], EXTRA);
    let bytebuf = match args.extra("--echo").unwrap_or("vec") {
        "vec" => false,
        "bytebuf" => true,
        v => fail(
            &usage("tarpc-bench", &["tcp", "mem"], EXTRA),
            &format!("--echo: expected vec|bytebuf, got {v:?}"),
        ),
    };
    let role = args.extra("--role").unwrap_or("both").to_string();
    let addr = args.extra("--addr").map(str::to_string);
    let usage_text = usage("tarpc-bench", &["tcp", "mem"], EXTRA);
    if !["both", "server", "client"].contains(&role.as_str()) {
        fail(
            &usage_text,
            &format!("--role: expected both|server|client, got {role:?}"),
        );
    }
    if role != "both" && args.transport != "tcp" {
        fail(
            &usage_text,
            "--role server|client: only with --transport tcp",
        );
    }
    let rt = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(args.workers)
        .enable_all()
        .build()
        .expect("tokio runtime");

    if role == "server" {
        // Separate processes: serve on --addr until killed.
        let addr = addr.unwrap_or_else(|| "127.0.0.1:0".into());
        rt.block_on(async {
            let listener = TcpListener::bind(addr.as_str()).await.expect("bind");
            println!("listening {}", listener.local_addr().expect("local_addr"));
            use std::io::Write;
            let _ = std::io::stdout().flush();
            tcp_server(listener, args.nodelay).await
        });
        return;
    }
    let server_addr: Option<std::net::SocketAddr> = match (role.as_str(), addr) {
        ("client", Some(a)) => Some(a.parse().unwrap_or_else(|_| {
            fail(
                &usage_text,
                &format!("--addr: expected HOST:PORT, got {a:?}"),
            )
        })),
        ("client", None) => fail(&usage_text, "--role client: --addr HOST:PORT is required"),
        _ => None,
    };

    let phase = Phase::new();

    // Set up server + client connections (not timed).
    let clients: Vec<BenchClient> = rt.block_on(async {
        match args.transport.as_str() {
            "tcp" => {
                let addr = match server_addr {
                    Some(addr) => addr,
                    None => {
                        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind");
                        let addr = listener.local_addr().expect("local_addr");
                        tokio::spawn(tcp_server(listener, args.nodelay));
                        addr
                    }
                };
                let mut v = Vec::with_capacity(args.conns);
                for _ in 0..args.conns {
                    v.push(tcp_client(addr, args.nodelay).await.expect("connect"));
                }
                v
            }
            _ => (0..args.conns).map(|_| mem_client()).collect(),
        }
    });

    let mut handles = Vec::with_capacity(args.conns * args.concurrency);
    for (ci, client) in clients.iter().enumerate() {
        for ti in 0..args.concurrency {
            let seed = ((ci * args.concurrency + ti) as u64) << 32;
            handles.push(rt.spawn(worker(
                client.clone(),
                phase.clone(),
                args.payload,
                bytebuf,
                seed,
            )));
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
    drop(clients);
    report(
        if bytebuf { "tarpc-bytebuf" } else { "tarpc" },
        &args,
        &total,
        elapsed,
    );
    if total.calls == 0 {
        std::process::exit(1);
    }
    // Don't wait for the server tasks to wind down.
    rt.shutdown_background();
}
