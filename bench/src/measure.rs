//! The measurement, done the way the peer benchmarks in `../shared/peers`
//! do it (their `bench-common` crate), so the numbers are comparable:
//!
//! - the peers' flags, as `--flag value` or `--flag=value`;
//! - a phase clock on a plain OS thread: warm-up, then the measured window,
//!   then stop; workers look at the phase after every call;
//! - a call counts if it completes while the phase is MEASURE, and its
//!   latency (send to reply, ns) goes into an HdrHistogram (1 ns .. 60 s, 3
//!   significant digits); `calls_per_s` = counted calls / measured time;
//! - one result line on stdout in the peers' format, details on stderr.
//!
//! (Reimplemented rather than depended on: a path dependency into the peers'
//! workspace pulls it into this workspace's `cargo fmt --all`.)

use std::sync::atomic::{AtomicU8, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use hdrhistogram::Histogram;

/// The transports `--transport` accepts.
pub const TRANSPORTS: &[&str] = &["tcp", "unix", "mem"];

/// Command-line options: the peers' plus `--runtime` and `--mem-capacity`.
#[derive(Clone, Debug, PartialEq)]
pub struct Args {
    /// `tcp`, `unix` or `mem`.
    pub transport: String,
    /// Calls in flight per connection.
    pub concurrency: usize,
    /// Echo payload in bytes; 0 calls `add(u64, u64)` instead.
    pub payload: usize,
    /// The measured window.
    pub duration: Duration,
    /// Time before the window (calls not counted).
    pub warmup: Duration,
    /// Client connections.
    pub conns: usize,
    /// TCP_NODELAY (courier-tcp always sets it, so only `true` is accepted
    /// for TCP).
    pub nodelay: bool,
    /// Executor threads.
    pub workers: usize,
    /// `smol` or `tokio`.
    pub runtime: String,
    /// Bytes buffered per direction by the in-memory transport.
    pub mem_capacity: usize,
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
            runtime: "smol".into(),
            mem_capacity: 1 << 20,
        }
    }
}

/// The usage text.
pub const USAGE: &str = "usage: courier-bench [--transport tcp|unix|mem] [--concurrency N] \
[--payload BYTES] [--duration SECS] [--warmup SECS] [--conns C] [--nodelay 1] [--workers W] \
[--runtime smol|tokio] [--mem-capacity BYTES]\npayload 0 means: call add(u64,u64) instead of echo";

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
    /// Parses arguments (without the program name). `Err("")` asks for the
    /// usage text (`--help`).
    pub fn parse<I: IntoIterator<Item = String>>(args: I) -> Result<Args, String> {
        let mut out = Args::default();
        let mut args = args.into_iter();
        while let Some(arg) = args.next() {
            let (flag, inline) = match arg.split_once('=') {
                Some((flag, value)) if flag.starts_with("--") => (flag.to_string(), Some(value)),
                _ => (arg.clone(), None),
            };
            if flag == "-h" || flag == "--help" {
                return Err(String::new());
            }
            let value = match inline {
                Some(value) => value.to_string(),
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
                "--runtime" => out.runtime = value,
                "--mem-capacity" => out.mem_capacity = number(&flag, &value)?,
                "--nodelay" => {
                    out.nodelay = match value.as_str() {
                        "1" | "true" | "on" | "yes" => true,
                        "0" | "false" | "off" | "no" => false,
                        _ => return Err(format!("--nodelay: expected 0|1, got {value:?}")),
                    }
                }
                _ => return Err(format!("unknown argument {arg:?}")),
            }
        }
        out.check()?;
        Ok(out)
    }

    fn check(&self) -> Result<(), String> {
        if !TRANSPORTS.contains(&self.transport.as_str()) {
            return Err(format!(
                "--transport: expected tcp|unix|mem, got {:?}",
                self.transport
            ));
        }
        if !["smol", "tokio"].contains(&self.runtime.as_str()) {
            return Err(format!(
                "--runtime: expected smol|tokio, got {:?}",
                self.runtime
            ));
        }
        if self.concurrency == 0 || self.conns == 0 || self.workers == 0 {
            return Err("--concurrency, --conns and --workers must be >= 1".into());
        }
        if self.payload > 1 << 24 || self.mem_capacity == 0 {
            return Err("--payload must be <= 16 MiB and --mem-capacity > 0".into());
        }
        if !self.nodelay && self.transport == "tcp" {
            // courier coalesces frames into one write itself.
            return Err("--nodelay 0: courier-tcp always sets TCP_NODELAY".into());
        }
        Ok(())
    }
}

const WARMUP: u8 = 0;
const MEASURE: u8 = 1;
const STOP: u8 = 2;

/// Which phase the run is in; workers read it after every call.
#[derive(Debug, Default)]
pub struct Phase(AtomicU8);

impl Phase {
    /// A shared phase, starting in warm-up.
    pub fn new() -> Arc<Phase> {
        Arc::new(Phase(AtomicU8::new(WARMUP)))
    }

    fn set(&self, phase: u8) {
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
        match phase.0.load(Ordering::Relaxed) {
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

/// Prints the peers' result line on stdout and the detail line on stderr.
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

    fn parse(args: &[&str]) -> Result<Args, String> {
        Args::parse(args.iter().map(|s| s.to_string()))
    }

    #[test]
    fn both_flag_spellings() {
        let a = parse(&[
            "--transport",
            "mem",
            "--concurrency=64",
            "--payload",
            "0",
            "--duration=0.5",
            "--runtime",
            "tokio",
        ])
        .unwrap();
        assert_eq!(a.transport, "mem");
        assert_eq!(a.concurrency, 64);
        assert_eq!(a.payload, 0);
        assert_eq!(a.duration, Duration::from_millis(500));
        assert_eq!(a.runtime, "tokio");
        assert_eq!(a.warmup, Duration::from_secs(1));
    }

    #[test]
    fn bad_arguments_are_refused() {
        for bad in [
            &["--transport", "udp"][..],
            &["--concurrency", "0"],
            &["--bogus", "1"],
            &["--duration", "-1"],
            &["--nodelay", "0"],
            &["--runtime", "async-std"],
            &["--payload"],
        ] {
            assert!(parse(bad).is_err(), "{bad:?}");
        }
        assert_eq!(parse(&["--help"]), Err(String::new()));
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
