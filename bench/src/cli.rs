//! `courier-bench`'s command line: the flags every benchmark shares (see
//! [`crate::measure`]) plus `--runtime smol|tokio`, `--smol-executor
//! per-thread|shared`, `--mem-capacity` and `--mode unary|stream|bidi`.

use crate::measure::Args;
use crate::stream::Mode;
use crate::{Callers, ServerThread, SmolExecutor};

/// The transports `--transport` accepts.
pub const TRANSPORTS: &[&str] = &["tcp", "unix", "mem"];

/// courier-bench's own flags.
pub const EXTRA_FLAGS: &[&str] = &[
    "--runtime",
    "--mem-capacity",
    "--mode",
    "--credit",
    "--role",
    "--addr",
    "--smol-executor",
    "--server-thread",
    "--callers",
];

/// The usage text.
pub const USAGE: &str = "usage: courier-bench [--transport tcp|unix|mem] [--concurrency N] \
[--payload BYTES] [--duration SECS] [--warmup SECS] [--conns C] [--nodelay 1] [--workers W] \
[--runtime smol|tokio] [--smol-executor per-thread|shared] [--server-thread same|next] [--callers same|spread] [--mem-capacity BYTES] [--mode unary|stream|bidi] [--credit ITEMS] \
[--role both|server|client|idle] [--addr HOST:PORT]\npayload 0 means: call add(u64,u64) instead of echo\n\
--smol-executor per-thread (default): an executor per thread, each connection's tasks on one thread;\n\
  shared: one smol::Executor run by all --workers threads\n\
--server-thread (per-thread, one process): the server's end of a connection on the client's thread\n\
  (same; default for unary) or the next one (next; default for stream and bidi)\n\
--callers (per-thread): a connection's callers on its driver's thread (same; default for unary\n\
  and bidi) or spread over the threads in turn from there (spread; default for stream)\n\
--role server: serve TCP on --addr (default 127.0.0.1:0), print `listening ADDR`, run until killed\n\
--role client: connect --conns clients to the server at --addr, measure, print the result line\n\
--role idle: connect --conns clients to --addr, one call each, print `ready N`, idle for --duration\n\
--mode stream|bidi: one streaming call per slot; calls_per_s = items/s, p50/p99 = gaps between items";

/// Which side of a TCP benchmark this process runs.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Role {
    /// Server and clients in this process (the default).
    Both,
    /// Only the server, until the process is killed.
    Server,
    /// Only the clients, against a server in another process.
    Client,
    /// `--conns` clients that make one call each, print `ready N`, then
    /// stay connected and idle for `--duration` (idle-cost measurement).
    Idle,
}

/// Parsed command line.
#[derive(Clone, Debug, PartialEq)]
pub struct Options {
    /// The shared flags.
    pub args: Args,
    /// `smol` (default) or `tokio`.
    pub runtime: String,
    /// Bytes buffered per direction by the in-memory transport (1 MiB).
    pub mem_capacity: usize,
    /// `unary` (default), `stream` or `bidi` (see [`crate::stream`]).
    pub mode: Mode,
    /// Stream credit window in items (courier's default unless set).
    pub credit: u32,
    /// `--role`: which side(s) this process runs.
    pub role: Role,
    /// `--smol-executor`: one executor per thread (default) or one shared
    /// by all threads.
    pub smol_executor: SmolExecutor,
    /// `--server-thread`: where the server's end of a connection runs with
    /// an executor per thread in one process (by default: the client's
    /// thread for unary calls, the next one for streams).
    pub server_thread: ServerThread,
    /// `--callers`: where a connection's callers run with an executor per
    /// thread (by default: spread over the threads for server streams,
    /// beside the driver otherwise).
    pub callers: Callers,
    /// `--addr`: where the server listens (`--role server`, default
    /// `127.0.0.1:0`) or is (`--role client`, required).
    pub addr: Option<String>,
}

impl Options {
    /// Parses arguments (without the program name). `Err("")` asks for the
    /// usage text (`--help`).
    pub fn parse<I: IntoIterator<Item = String>>(argv: I) -> Result<Options, String> {
        let args = Args::parse_from(argv, TRANSPORTS, EXTRA_FLAGS)?;
        let runtime = args.extra("--runtime").unwrap_or("smol").to_string();
        if !["smol", "tokio"].contains(&runtime.as_str()) {
            return Err(format!("--runtime: expected smol|tokio, got {runtime:?}"));
        }
        let mem_capacity = match args.extra("--mem-capacity") {
            None => 1 << 20,
            Some(v) => v
                .parse()
                .ok()
                .filter(|&n: &usize| n > 0)
                .ok_or_else(|| format!("--mem-capacity: expected a number > 0, got {v:?}"))?,
        };
        let mode = Mode::of(&args)?;
        let credit = crate::stream::credit(&args)?;
        if !args.nodelay && args.transport == "tcp" {
            // courier coalesces frames into one write itself.
            return Err("--nodelay 0: courier-tcp always sets TCP_NODELAY".into());
        }
        let role = match args.extra("--role").unwrap_or("both") {
            "both" => Role::Both,
            "server" => Role::Server,
            "client" => Role::Client,
            "idle" => Role::Idle,
            other => {
                return Err(format!(
                    "--role: expected both|server|client|idle, got {other:?}"
                ))
            }
        };
        let addr = args.extra("--addr").map(str::to_string);
        let smol_executor = match args.extra("--smol-executor").unwrap_or("per-thread") {
            "per-thread" => SmolExecutor::PerThread,
            "shared" => SmolExecutor::Shared,
            other => {
                return Err(format!(
                    "--smol-executor: expected per-thread|shared, got {other:?}"
                ))
            }
        };
        let server_thread = match args.extra("--server-thread") {
            None if mode == Mode::Unary => ServerThread::Same,
            None => ServerThread::Next,
            Some("same") => ServerThread::Same,
            Some("next") => ServerThread::Next,
            Some(other) => {
                return Err(format!(
                    "--server-thread: expected same|next, got {other:?}"
                ))
            }
        };
        let callers = match args.extra("--callers") {
            None if mode == Mode::Stream => Callers::Spread,
            None => Callers::Same,
            Some("same") => Callers::Same,
            Some("spread") => Callers::Spread,
            Some(other) => return Err(format!("--callers: expected same|spread, got {other:?}")),
        };
        if role != Role::Both && args.transport != "tcp" {
            return Err("--role server|client: only with --transport tcp".into());
        }
        if matches!(role, Role::Client | Role::Idle) && addr.is_none() {
            return Err("--role client|idle: --addr HOST:PORT of the server is required".into());
        }
        Ok(Options {
            role,
            smol_executor,
            server_thread,
            callers,
            addr,
            args,
            runtime,
            mem_capacity,
            mode,
            credit,
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn parse(args: &[&str]) -> Result<Options, String> {
        Options::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn courier_flags() {
        let o = parse(&[
            "--transport",
            "unix",
            "--concurrency=64",
            "--duration=0.5",
            "--runtime",
            "tokio",
        ])
        .unwrap();
        assert_eq!(o.args.transport, "unix");
        assert_eq!(o.args.concurrency, 64);
        assert_eq!(o.args.duration, Duration::from_millis(500));
        assert_eq!((o.runtime.as_str(), o.mem_capacity), ("tokio", 1 << 20));
        let o = parse(&["--mem-capacity=4096", "--transport=mem"]).unwrap();
        assert_eq!((o.runtime.as_str(), o.mem_capacity), ("smol", 4096));
        assert_eq!(o.mode, Mode::Unary);
        assert_eq!(parse(&["--mode", "stream"]).unwrap().mode, Mode::Stream);
        assert_eq!(parse(&["--mode=bidi"]).unwrap().mode, Mode::Bidi);
        assert_eq!(parse(&[]).unwrap().role, Role::Both);
        let o = parse(&["--role", "client", "--addr", "127.0.0.1:9", "--conns", "8"]).unwrap();
        assert_eq!(
            (o.role, o.addr.as_deref()),
            (Role::Client, Some("127.0.0.1:9"))
        );
        assert_eq!(o.args.conns, 8);
        assert_eq!(parse(&["--role=server"]).unwrap().role, Role::Server);
        assert_eq!(parse(&[]).unwrap().smol_executor, SmolExecutor::PerThread);
        let o = parse(&["--smol-executor", "shared", "--role=server"]).unwrap();
        assert_eq!(o.smol_executor, SmolExecutor::Shared);
        let o = parse(&["--smol-executor=per-thread"]).unwrap();
        assert_eq!(o.smol_executor, SmolExecutor::PerThread);
        // The server's thread follows the mode unless given.
        assert_eq!(parse(&[]).unwrap().server_thread, ServerThread::Same);
        for mode in ["stream", "bidi"] {
            let o = parse(&["--mode", mode]).unwrap();
            assert_eq!(o.server_thread, ServerThread::Next);
        }
        let o = parse(&["--mode=stream", "--server-thread=same"]).unwrap();
        assert_eq!(o.server_thread, ServerThread::Same);
        let o = parse(&["--server-thread", "next"]).unwrap();
        assert_eq!(o.server_thread, ServerThread::Next);
        // So do the callers.
        assert_eq!(parse(&[]).unwrap().callers, Callers::Same);
        assert_eq!(
            parse(&["--mode", "stream"]).unwrap().callers,
            Callers::Spread
        );
        assert_eq!(parse(&["--mode", "bidi"]).unwrap().callers, Callers::Same);
        let o = parse(&["--mode=stream", "--callers=same"]).unwrap();
        assert_eq!(o.callers, Callers::Same);
        assert_eq!(
            parse(&["--callers", "spread"]).unwrap().callers,
            Callers::Spread
        );
        let o = parse(&["--role=idle", "--addr=[::1]:7"]).unwrap();
        assert_eq!((o.role, o.addr.as_deref()), (Role::Idle, Some("[::1]:7")));
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &["--transport", "udp"][..],
            &["--nodelay", "0"],
            &["--runtime", "async-std"],
            &["--mem-capacity", "0"],
            &["--echo", "bytebuf"],
            &["--mode", "client"],
            &["--credit", "0"],
            &["--role", "proxy"],
            &["--smol-executor", "local"],
            &["--server-thread", "other"],
            &["--callers", "all"],
            &["--role", "client"],
            &["--role", "idle"],
            &["--role", "server", "--transport", "mem"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&["--nodelay", "0", "--transport", "mem"]).is_ok());
        assert_eq!(parse(&["--help"]), Err(String::new()));
    }
}
