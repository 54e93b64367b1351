//! `courier-bench`: courier's throughput and latency on loopback, measured
//! the way the peer benchmarks in `bench/peers/` measure tarpc, tonic and
//! raw sockets (same flags, same phase clock, same histogram, same result
//! line: they compile the same `courier_bench::measure` source).
//!
//! ```text
//! cargo run --release --bin courier-bench -- --transport tcp --concurrency 64 --payload 16
//! ```
//!
//! Flags: the peers' (`--transport tcp|unix|mem`, `--concurrency N`,
//! `--payload BYTES` with 0 meaning `add(u64,u64)`, `--duration SECS`,
//! `--warmup SECS`, `--conns C`, `--workers W`; `--nodelay` must stay 1:
//! courier-tcp always sets TCP_NODELAY), as
//! `--flag value` or `--flag=value`, plus `--runtime smol|tokio` (default
//! smol), `--smol-executor per-thread|shared` (default per-thread: an
//! executor per worker thread, each connection's tasks on one thread; see
//! `courier_bench::SmolExecutor`), `--server-thread same|next` (where the
//! server's end of a connection runs in one process with an executor per
//! thread; default same for unary, next for streams: see
//! `courier_bench::ServerThread`), `--callers same|spread` (a connection's
//! callers beside its driver or spread over the threads; default spread
//! for server streams, same otherwise: see `courier_bench::Callers`),
//! `--mem-capacity BYTES` (per direction, default 1 MiB) and `--mode unary|stream|bidi` (default unary; see
//! `courier_bench::stream`) with `--credit ITEMS` (the response stream's
//! credit window, courier's default 128).

use std::sync::Arc;

use std::io::Write;
use std::net::SocketAddr;

use courier_bench::cli::{Options, Role, USAGE};
use courier_bench::measure::{fail, report, run_phases, Args, Phase, Recorder};
use courier_bench::stream::{start_client, Mode, StreamService};
use courier_bench::{
    BenchImpl, BenchServer, BoxFuture, Callers, Runtime, ServerThread, SmolExecutor, SmolRuntime,
    TokioRuntime,
};

fn main() {
    let options = Options::parse(std::env::args().skip(1)).unwrap_or_else(|e| fail(USAGE, &e));
    match options.role {
        Role::Server => return serve_only(&options),
        Role::Client => return client_only(&options),
        Role::Idle => return idle_clients(&options),
        Role::Both => {}
    }
    let Options {
        args,
        runtime,
        mem_capacity,
        mode,
        smol_executor,
        server_thread,
        callers,
        ..
    } = options;
    let (rec, elapsed) = if runtime == "tokio" {
        let rt = TokioRuntime::new(args.workers);
        let callers = match args.transport.as_str() {
            "tcp" => tokio_tcp(&rt, &args),
            "unix" => tokio_unix(&rt, &args),
            _ => mem(&rt, &args, mem_capacity),
        };
        measure(&rt, &args, callers)
    } else {
        let rt = SmolRuntime::new(args.workers, smol_executor)
            .server_thread(server_thread)
            .callers(callers);
        let callers = match args.transport.as_str() {
            "tcp" => smol_tcp(&rt, &args),
            "unix" => smol_unix(&rt, &args),
            _ => mem(&rt, &args, mem_capacity),
        };
        measure(&rt, &args, callers)
    };
    eprintln!(
        "# courier: runtime={} workers={} transport={}{}",
        runtime,
        args.workers,
        args.transport,
        executor_note(&runtime, smol_executor, Some(server_thread), callers)
    );
    report(mode.result_name(), &args, &rec, elapsed);
    if rec.calls == 0 {
        std::process::exit(1);
    }
}

/// ` smol-executor=...` on smol (with the server's thread, in one
/// process), nothing on tokio.
fn executor_note(
    runtime: &str,
    executor: SmolExecutor,
    server: Option<ServerThread>,
    callers: Callers,
) -> String {
    let callers = match callers {
        Callers::Same => "same",
        Callers::Spread => "spread",
    };
    match (runtime, executor, server) {
        ("tokio", _, _) => String::new(),
        (_, SmolExecutor::PerThread, Some(ServerThread::Same)) => {
            format!(" smol-executor=per-thread server-thread=same callers={callers}")
        }
        (_, SmolExecutor::PerThread, Some(ServerThread::Next)) => {
            format!(" smol-executor=per-thread server-thread=next callers={callers}")
        }
        (_, SmolExecutor::PerThread, None) => {
            format!(" smol-executor=per-thread callers={callers}")
        }
        (_, SmolExecutor::Shared, _) => " smol-executor=shared".into(),
    }
}

type Started = (Arc<Phase>, Vec<BoxFuture<Recorder>>);

/// `--role server`: serves TCP on `--addr` until the process is killed,
/// each connection a task of the runtime (so they spread over its
/// `--workers` threads); prints `listening ADDR` once bound.
fn serve_only(o: &Options) {
    let addr = o.addr.as_deref().unwrap_or("127.0.0.1:0");
    let limits = limits(&o.args);
    if o.runtime == "tokio" {
        let rt = TokioRuntime::new(o.args.workers);
        rt.block_on(async {
            let listener = courier_tcp::tokio::TcpListener::bind(addr)
                .await
                .expect("bind");
            announce(listener.local_addr().expect("local addr"));
            // The default on a multi-thread runtime: a task per connection.
            let serve = courier_tcp::tokio::builder()
                .max_concurrent(limits)
                .max_connections(MAX_CONNECTIONS)
                .serve(listener, service());
            serve.await
        });
    } else {
        let rt = SmolRuntime::new(o.args.workers, o.smol_executor);
        let listener = rt
            .block_on(courier_tcp::TcpListener::bind(addr))
            .expect("bind");
        announce(listener.local_addr().expect("local addr"));
        let serve = courier_tcp::builder()
            .max_concurrent(limits)
            .max_connections(MAX_CONNECTIONS)
            .mode(rt.connection_mode())
            .serve(listener, service());
        rt.block_on(serve);
    }
}

/// The server's connection limit in `--role server` (above the largest
/// `--conns` row and courier's default of 1,024).
const MAX_CONNECTIONS: usize = 20_000;

fn announce(addr: SocketAddr) {
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "listening {addr}");
    let _ = out.flush();
}

/// `--role idle`: `--conns` clients that each make one call, then stay
/// connected without calling for `--duration`, so that a script can read
/// the server's memory and count its system calls while they idle.
fn idle_clients(o: &Options) {
    let addr = server_addr(o);
    let conns = o.args.conns;
    let rt = TokioRuntime::new(o.args.workers);
    let clients = rt.block_on(async {
        let mut clients = Vec::with_capacity(conns);
        for i in 0..conns {
            // No timer: an idle client arms nothing either.
            let builder = courier::ClientBuilder::new();
            let (client, driver) = courier_tcp::tokio::connect_with(addr, builder)
                .await
                .expect("connect");
            rt.detach(driver);
            let client = courier_bench::BenchClient::new(client);
            let n = i as u64;
            assert_eq!(client.add(n, 1).await, Ok(n + 1), "first call");
            clients.push(client);
        }
        clients
    });
    let mut out = std::io::stdout().lock();
    let _ = writeln!(out, "ready {}", clients.len());
    let _ = out.flush();
    std::thread::sleep(o.args.duration);
}

fn server_addr(o: &Options) -> SocketAddr {
    let addr = o.addr.as_deref().unwrap_or_default();
    addr.parse()
        .unwrap_or_else(|_| fail(USAGE, &format!("--addr: expected HOST:PORT, got {addr:?}")))
}

/// `--role client`: `--conns` clients against the server at `--addr`.
fn client_only(o: &Options) {
    let addr = server_addr(o);
    let args = &o.args;
    let phase = Phase::new();
    let smol_executor = o.smol_executor;
    let (rec, elapsed) = if o.runtime == "tokio" {
        let rt = TokioRuntime::new(args.workers);
        let callers = connect_clients(&rt, args, &phase, |builder| {
            courier_tcp::tokio::connect_with(addr, builder)
        });
        measure(&rt, args, (phase, callers))
    } else {
        let rt = SmolRuntime::new(args.workers, smol_executor).callers(o.callers);
        let callers = connect_clients(&rt, args, &phase, |builder| {
            courier_tcp::connect_with(addr, builder)
        });
        measure(&rt, args, (phase, callers))
    };
    eprintln!(
        "# courier: role=client runtime={} workers={} transport=tcp{}",
        o.runtime,
        args.workers,
        executor_note(&o.runtime, smol_executor, None, o.callers)
    );
    report(o.mode.result_name(), args, &rec, elapsed);
    if rec.calls == 0 {
        std::process::exit(1);
    }
}

/// Runs the phase clock on this thread, then collects every caller's
/// recorder (callers stop by themselves at STOP).
fn measure<R: Runtime>(
    rt: &R,
    args: &Args,
    (phase, callers): Started,
) -> (Recorder, std::time::Duration) {
    let elapsed = run_phases(&phase, args.warmup, args.duration);
    let mut total = Recorder::new();
    rt.block_on(async {
        for caller in callers {
            total.merge(&caller.await);
        }
    });
    (total, elapsed)
}

fn mem<R: Runtime>(rt: &R, args: &Args, capacity: usize) -> Started {
    let phase = Phase::new();
    let mut callers = Vec::new();
    for _ in 0..args.conns {
        rt.next_connection();
        let (c, s) = courier_mem::pair(capacity);
        rt.detach_server(courier_bench::stream::server(s, args.concurrency));
        let client = courier_bench::client_builder(args.concurrency).build(c);
        callers.extend(start_client(
            rt,
            client,
            mode(args),
            args.concurrency,
            args.payload,
            credit(args),
            &phase,
        ));
    }
    (phase, callers)
}

/// The server limits of a run (courier's defaults unless more is asked).
fn limits(args: &Args) -> usize {
    args.concurrency
        .max(courier::server::DEFAULT_MAX_CONCURRENT)
}

fn service() -> StreamService<BenchServer<BenchImpl>> {
    courier_bench::stream::service()
}

/// `--mode` (checked by `Options::parse`).
fn mode(args: &Args) -> Mode {
    Mode::of(args).unwrap_or_else(|e| fail(USAGE, &e))
}

/// `--credit` (checked by `Options::parse`).
fn credit(args: &Args) -> u32 {
    courier_bench::stream::credit(args).unwrap_or_else(|e| fail(USAGE, &e))
}

fn smol_tcp(rt: &SmolRuntime, args: &Args) -> Started {
    let phase = Phase::new();
    let listener = rt
        .block_on(courier_tcp::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    let builder = courier_tcp::builder().max_concurrent(limits(args));
    let serve = match rt.executor() {
        // As before the pool: every connection inside the `Serve` task.
        SmolExecutor::Shared => builder.serve(listener, service()),
        SmolExecutor::PerThread => builder
            .mode(rt.connection_mode())
            .serve(listener, service()),
    };
    rt.detach(serve);
    let callers = connect_clients(rt, args, &phase, |builder| {
        courier_tcp::connect_with(addr, builder)
    });
    (phase, callers)
}

/// Connects `args.conns` clients with `connect` and starts their callers.
fn connect_clients<R, F, Fut, T, Tm, E>(
    rt: &R,
    args: &Args,
    phase: &Arc<Phase>,
    connect: F,
) -> Vec<BoxFuture<Recorder>>
where
    R: Runtime,
    F: Fn(courier::ClientBuilder) -> Fut,
    Fut: std::future::Future<Output = Result<(courier::Client, courier::ClientDriver<T, Tm>), E>>,
    E: std::fmt::Debug,
    T: courier::Transport + Send + 'static,
    T::Error: Send,
    Tm: courier::Timer + Send + 'static,
    Tm::Sleep: Send,
{
    let mut callers = Vec::new();
    for _ in 0..args.conns {
        rt.next_connection();
        let builder = courier_bench::client_builder(args.concurrency);
        let client = rt.block_on(connect(builder)).expect("connect");
        callers.extend(start_client(
            rt,
            client,
            mode(args),
            args.concurrency,
            args.payload,
            credit(args),
            phase,
        ));
    }
    callers
}

fn socket_path() -> std::path::PathBuf {
    std::env::temp_dir().join(format!("courier-bench-{}.sock", std::process::id()))
}

fn smol_unix(rt: &SmolRuntime, args: &Args) -> Started {
    let phase = Phase::new();
    let path = socket_path();
    let _ = std::fs::remove_file(&path);
    let listener = rt
        .block_on(courier_unix::UnixListener::bind(&path))
        .expect("bind");
    let builder = courier_unix::builder().max_concurrent(limits(args));
    let serve = match rt.executor() {
        // As before the pool: every connection inside the `Serve` task.
        SmolExecutor::Shared => builder.serve(listener, service()),
        SmolExecutor::PerThread => builder
            .mode(rt.connection_mode())
            .serve(listener, service()),
    };
    rt.detach(serve);
    let callers = connect_clients(rt, args, &phase, |builder| {
        courier_unix::connect_with(&path, builder)
    });
    let _ = std::fs::remove_file(&path);
    (phase, callers)
}

fn tokio_tcp(rt: &TokioRuntime, args: &Args) -> Started {
    let phase = Phase::new();
    let listener = rt
        .block_on(courier_tcp::tokio::TcpListener::bind("127.0.0.1:0"))
        .expect("bind");
    let addr = listener.local_addr().expect("local addr");
    // Built inside the runtime: on a multi-thread one, `builder()`
    // spawns each connection (tokio's default).
    rt.block_on(async {
        let serve = courier_tcp::tokio::builder()
            .max_concurrent(limits(args))
            .serve(listener, service());
        rt.detach(serve);
    });
    let callers = connect_clients(rt, args, &phase, |builder| {
        courier_tcp::tokio::connect_with(addr, builder)
    });
    (phase, callers)
}

fn tokio_unix(rt: &TokioRuntime, args: &Args) -> Started {
    let phase = Phase::new();
    let path = socket_path();
    let _ = std::fs::remove_file(&path);
    // Binding registers the socket with the runtime: do it inside.
    let listener = rt
        .block_on(courier_unix::tokio::UnixListener::bind(&path))
        .expect("bind");
    // Built inside the runtime: on a multi-thread one, `builder()`
    // spawns each connection (tokio's default).
    rt.block_on(async {
        let serve = courier_unix::tokio::builder()
            .max_concurrent(limits(args))
            .serve(listener, service());
        rt.detach(serve);
    });
    let callers = connect_clients(rt, args, &phase, |builder| {
        courier_unix::tokio::connect_with(&path, builder)
    });
    let _ = std::fs::remove_file(&path);
    (phase, callers)
}
