//! The measurement every benchmark binary shares: `courier-bench` and the
//! peer benchmarks in `bench/peers/` (tarpc, tonic, raw), which compile this
//! same file (their `bench-common` crate includes it with `#[path]`), so the
//! numbers are comparable by construction:
//!
//! - the same flags, as `--flag value` or `--flag=value`, plus per-binary
//!   extra flags (`--echo`, `--client`, `--mode`, `--runtime`, ...);
//! - a phase clock on a plain OS thread: warm-up, then the measured window,
//!   then stop; workers look at the phase after every call;
//! - a call counts if it completes while the phase is MEASURE, and its
//!   latency (send to reply, ns) goes into an HdrHistogram (1 ns .. 60 s, 3
//!   significant digits); `calls_per_s` = counted calls / measured time;
//! - exactly one result line on stdout, details on stderr:
//!
//! ```text
//! <name> transport=<t> conc=<N> payload=<B> calls_per_s=<int> p50_us=<f> p99_us=<f> conns=<C> nodelay=<0|1>
//! # <name>: calls= errors= elapsed_s= mean_us= p999_us= max_us=      (stderr)
//! ```
//!
//! Self-contained on purpose (std and `hdrhistogram` only): it must build
//! in both workspaces.

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// Command-line options shared by all benchmark binaries.
#[derive(Clone, Debug, PartialEq)]
pub struct Args {
    /// `tcp`, `unix` or `mem` (whichever the binary supports).
    pub transport: String,
    /// Calls in flight per client connection.
    pub concurrency: usize,
    /// Echo payload in bytes; 0 calls `add(u64, u64)` instead.
    pub payload: usize,
    /// The measured window.
    pub duration: Duration,
    /// Time before the window (calls not counted).
    pub warmup: Duration,
    /// Client connections.
    pub conns: usize,
    /// TCP_NODELAY on both ends.
    pub nodelay: bool,
    /// Executor (tokio worker) threads; ignored by raw.
    pub workers: usize,
    /// Binary-specific flags (`--name value`), allowed via `extra_flags`.
    pub extra: Vec<(String, String)>,
}

impl Default for Args {
    fn default() -> Self {
        Args {
            transport: "tcp".into(),
            concurrency: 1,
            payload: 16,
            duration: Duration::from_secs(5),
            warmup: Duration::from_secs(1),
            conns: 1,
            nodelay: true,
            workers: 2,
            extra: Vec::new(),
        }
    }
}

/// The usage text of a binary accepting `transports` and `extra_flags`.
pub fn usage(bin: &str, transports: &[&str], extra_flags: &[&str]) -> String {
    let extra: String = extra_flags.iter().map(|f| format!(" [{f} V]")).collect();
    format!(
        "usage: {bin} [--transport {}] [--concurrency N] [--payload BYTES] \
         [--duration SECS] [--warmup SECS] [--conns C] [--nodelay 0|1] [--workers W]{extra}\n\
         payload 0 means: call add(u64,u64) instead of echo",
        transports.join("|")
    )
}

fn number<T: std::str::FromStr>(flag: &str, value: &str) -> Result<T, String> {
    value
        .parse()
        .map_err(|_| format!("{flag}: expected a number, got {value:?}"))
}

fn seconds(flag: &str, value: &str) -> Result<Duration, String> {
    let secs: f64 = number(flag, value)?;
    Duration::try_from_secs_f64(secs).map_err(|_| format!("{flag}: bad duration {value:?}"))
}

impl Args {
    /// Parses arguments (without the program name) on top of
    /// `Args::default()`. `Err("")` asks for the usage text (`--help`).
    pub fn parse_from<I, S>(
        args: I,
        transports: &[&str],
        extra_flags: &[&str],
    ) -> Result<Args, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        Args::parse_with(Args::default(), args, transports, extra_flags)
    }

    /// Parses arguments (without the program name) on top of `defaults`.
    /// `Err("")` asks for the usage text (`--help`).
    pub fn parse_with<I, S>(
        defaults: Args,
        args: I,
        transports: &[&str],
        extra_flags: &[&str],
    ) -> Result<Args, String>
    where
        I: IntoIterator<Item = S>,
        S: Into<String>,
    {
        let mut out = defaults;
        let mut args = args.into_iter().map(Into::into);
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => {
                    (flag.to_string(), Some(value.to_string()))
                }
                _ => (arg.clone(), None),
            };
            if flag == "-h" || flag == "--help" {
                return Err(String::new());
            }
            let value = match inline {
                Some(value) => value,
                None => args
                    .next()
                    .ok_or_else(|| format!("{flag}: missing value"))?,
            };
            match flag.as_str() {
                "--transport" | "-t" => out.transport = value,
                "--concurrency" | "--conc" | "-c" => out.concurrency = number(&flag, &value)?,
                "--payload" | "-p" => out.payload = number(&flag, &value)?,
                "--duration" | "-d" => out.duration = seconds(&flag, &value)?,
                "--warmup" | "-w" => out.warmup = seconds(&flag, &value)?,
                "--conns" => out.conns = number(&flag, &value)?,
                "--workers" => out.workers = number(&flag, &value)?,
                "--nodelay" => {
                    out.nodelay = match value.as_str() {
                        "1" | "true" | "on" | "yes" => true,
                        "0" | "false" | "off" | "no" => false,
                        _ => return Err(format!("--nodelay: expected 0|1, got {value:?}")),
                    }
                }
                f if extra_flags.contains(&f) => out.extra.push((flag, value)),
                _ => return Err(format!("unknown argument {arg:?}")),
            }
        }
        if !transports.contains(&out.transport.as_str()) {
            return Err(format!(
                "--transport: expected {}, got {:?}",
                transports.join("|"),
                out.transport
            ));
        }
        if out.concurrency == 0 || out.conns == 0 || out.workers == 0 {
            return Err("--concurrency, --conns and --workers must be >= 1".into());
        }
        if out.payload > 1 << 24 {
            return Err("--payload must be <= 16 MiB".into());
        }
        Ok(out)
    }

    /// Parses the process arguments on top of `defaults`; prints the usage
    /// and exits on `--help` or an error.
    pub fn from_env(defaults: Args, transports: &[&str], extra_flags: &[&str]) -> Args {
        let mut argv = std::env::args();
        let bin = argv.next().unwrap_or_else(|| "bench".into());
        match Args::parse_with(defaults, argv, transports, extra_flags) {
            Ok(args) => args,
            Err(e) => fail(&usage(&bin, transports, extra_flags), &e),
        }
    }

    /// The last value given for a binary-specific flag.
    pub fn extra(&self, flag: &str) -> Option<&str> {
        self.extra
            .iter()
            .rev()
            .find(|(f, _)| f == flag)
            .map(|(_, v)| v.as_str())
    }
}

/// Prints `usage` and exits: status 0 when `error` is empty (`--help`),
/// else prints `error` first and exits with status 2.
pub fn fail(usage: &str, error: &str) -> ! {
    if error.is_empty() {
        println!("{usage}");
        std::process::exit(0);
    }
    eprintln!("error: {error}\n{usage}");
    std::process::exit(2);
}

/// Warm-up: calls are made but not counted.
pub const WARMUP: u8 = 0;
/// The measured window.
pub const MEASURE: u8 = 1;
/// Workers stop calling.
pub const STOP: u8 = 2;

/// Which phase the run is in; workers read it after every call.
#[derive(Debug, Default)]
pub struct Phase(AtomicU8);

impl Phase {
    /// A shared phase, starting in warm-up.
    pub fn new() -> Arc<Phase> {
        Arc::new(Phase(AtomicU8::new(WARMUP)))
    }

    /// The current phase ([`WARMUP`], [`MEASURE`] or [`STOP`]).
    #[inline]
    pub fn get(&self) -> u8 {
        self.0.load(Ordering::Relaxed)
    }

    /// Moves to another phase.
    pub fn set(&self, phase: u8) {
        self.0.store(phase, Ordering::SeqCst);
    }
}

/// Sleeps through the warm-up, opens the measured window, sleeps through it
/// and stops the workers. Returns the window's wall time. Runs on the
/// calling OS thread (not on an executor thread).
pub fn run_phases(phase: &Phase, warmup: Duration, duration: Duration) -> Duration {
    std::thread::sleep(warmup);
    phase.set(MEASURE);
    let start = Instant::now();
    std::thread::sleep(duration);
    phase.set(STOP);
    start.elapsed()
}

/// One worker's (or all workers') counted calls, errors and latencies.
pub struct Recorder {
    /// Successful calls completed in the measured window.
    pub calls: u64,
    /// Failed calls completed in the measured window.
    pub errors: u64,
    /// Latencies of the counted calls, in ns.
    pub hist: Histogram<u64>,
}

impl Default for Recorder {
    fn default() -> Self {
        Recorder::new()
    }
}

impl Recorder {
    /// An empty recorder.
    pub fn new() -> Recorder {
        Recorder {
            calls: 0,
            errors: 0,
            hist: Histogram::new_with_bounds(1, 60_000_000_000, 3).expect("histogram bounds"),
        }
    }

    /// Records a finished call by the current phase; `false` once the run
    /// has stopped (the worker then stops calling).
    #[inline]
    pub fn finish(&mut self, phase: &Phase, ok: bool, latency: Duration) -> bool {
        match phase.get() {
            WARMUP => true,
            MEASURE if ok => {
                self.calls += 1;
                let ns = u64::try_from(latency.as_nanos()).unwrap_or(u64::MAX);
                self.hist.saturating_record(ns.max(1));
                true
            }
            MEASURE => {
                self.errors += 1;
                true
            }
            _ => false,
        }
    }

    /// Adds another worker's results.
    pub fn merge(&mut self, other: &Recorder) {
        self.calls += other.calls;
        self.errors += other.errors;
        self.hist.add(&other.hist).expect("same histogram bounds");
    }
}

/// Prints the result line on stdout and the detail line on stderr.
pub fn report(name: &str, args: &Args, rec: &Recorder, elapsed: Duration) {
    let secs = elapsed.as_secs_f64();
    let per_s = if secs > 0.0 {
        rec.calls as f64 / secs
    } else {
        0.0
    };
    let us = |q: f64| rec.hist.value_at_quantile(q) as f64 / 1000.0;
    eprintln!(
        "# {name}: calls={} errors={} elapsed_s={secs:.3} mean_us={:.1} p999_us={:.1} max_us={:.1}",
        rec.calls,
        rec.errors,
        rec.hist.mean() / 1000.0,
        us(0.999),
        rec.hist.max() as f64 / 1000.0,
    );
    println!(
        "{name} transport={} conc={} payload={} calls_per_s={per_s:.0} p50_us={:.1} p99_us={:.1} conns={} nodelay={}",
        args.transport,
        args.concurrency,
        args.payload,
        us(0.50),
        us(0.99),
        args.conns,
        u8::from(args.nodelay),
    );
}

#[cfg(test)]
mod tests {
    use super::*;

    const TRANSPORTS: &[&str] = &["tcp", "mem"];

    fn parse(args: &[&str], extra: &[&str]) -> Result<Args, String> {
        Args::parse_from(args.iter().copied(), TRANSPORTS, extra)
    }

    #[test]
    fn both_flag_spellings() {
        let a = parse(
            &[
                "--transport",
                "mem",
                "--concurrency=64",
                "--payload",
                "0",
                "--duration=0.5",
                "--conns",
                "2",
                "--mode",
                "stream",
            ],
            &["--mode"],
        )
        .unwrap();
        assert_eq!(a.transport, "mem");
        assert_eq!(a.concurrency, 64);
        assert_eq!(a.payload, 0);
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.conns, 2);
        assert_eq!(a.warmup, Duration::from_secs(1));
        assert!(a.nodelay);
        assert_eq!(a.extra("--mode"), Some("stream"));
        assert_eq!(a.extra("--echo"), None);
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &["--transport", "udp"][..],
            &["--concurrency", "0"],
            &["--bogus", "1"],
            &["--mode", "stream"],
            &["--duration", "-1"],
            &["--nodelay", "maybe"],
            &["--payload"],
        ] {
            assert!(parse(bad, &[]).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&["--help"], &[]), Err(String::new()));
    }

    #[test]
    fn defaults_can_be_changed() {
        let defaults = Args {
            nodelay: false,
            ..Args::default()
        };
        let a = Args::parse_with(defaults.clone(), ["--payload", "4096"], TRANSPORTS, &[]).unwrap();
        assert!(!a.nodelay);
        assert_eq!(a.payload, 4096);
        let a = Args::parse_with(defaults, ["--nodelay=1"], TRANSPORTS, &[]).unwrap();
        assert!(a.nodelay);
    }

    #[test]
    fn only_the_measured_window_counts() {
        let phase = Phase::new();
        let mut r = Recorder::new();
        assert!(r.finish(&phase, true, Duration::from_micros(5)));
        phase.set(MEASURE);
        assert!(r.finish(&phase, true, Duration::from_micros(10)));
        assert!(r.finish(&phase, false, Duration::from_micros(10)));
        phase.set(STOP);
        assert!(!r.finish(&phase, true, Duration::from_micros(10)));
        assert_eq!((r.calls, r.errors, r.hist.len()), (1, 1, 1));
    }
}
