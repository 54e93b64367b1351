//! `courier-bench`'s command line: the flags every benchmark shares (see
//! [`crate::measure`]) plus `--runtime smol|tokio`, `--mem-capacity` and
//! `--mode unary|stream|bidi`.

use crate::measure::Args;
use crate::stream::Mode;

/// The transports `--transport` accepts.
pub const TRANSPORTS: &[&str] = &["tcp", "unix", "mem"];

/// courier-bench's own flags.
pub const EXTRA_FLAGS: &[&str] = &["--runtime", "--mem-capacity", "--mode", "--credit"];

/// The usage text.
pub const USAGE: &str = "usage: courier-bench [--transport tcp|unix|mem] [--concurrency N] \
[--payload BYTES] [--duration SECS] [--warmup SECS] [--conns C] [--nodelay 1] [--workers W] \
[--runtime smol|tokio] [--mem-capacity BYTES] [--mode unary|stream|bidi] [--credit ITEMS]\npayload 0 means: call add(u64,u64) instead of echo\n\
--mode stream|bidi: one streaming call per slot; calls_per_s = items/s, p50/p99 = gaps between items";

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
        Ok(Options {
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
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert!(parse(&["--nodelay", "0", "--transport", "mem"]).is_ok());
        assert_eq!(parse(&["--help"]), Err(String::new()));
    }
}
