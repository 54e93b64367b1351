//! raw: the "physical limit" reference for the RPC benchmarks.
//!
//! Same measurement shape as the RPC benchmarks (N pipelined requests in
//! flight over one TCP connection, echo server on 127.0.0.1:0 in the same
//! process), written as directly as possible with blocking std::net sockets:
//!
//! * wire format: `u32` little-endian length, then that many bytes. The top
//!   bit of the length word marks an `add` request (payload 0): body is two
//!   `u64` LE, reply is one `u64` LE (the sum). Otherwise the body is echoed.
//! * server: one thread per connection, BufReader + BufWriter; a reply is
//!   buffered and the writer is flushed only when no further complete request
//!   is already sitting in the read buffer (so bursts become one write).
//! * client: per connection one writer thread and one reader thread.
//!   The writer holds `--concurrency` credits; it buffers a request per credit
//!   and flushes only when it runs out of credits (then blocks for one).
//!   The reader reads replies in order (one connection = FIFO), records the
//!   latency against the send timestamp, and hands a credit back.
//!   No request ids are needed because replies arrive in order.
//!
//! `--client single` (extra variant, reported as `raw-single`): one client
//! thread per connection does both: it tops the window up to `--concurrency`
//! requests, flushes once, then reads at least one reply plus every reply
//! already buffered, and repeats. No cross-thread hand-off on the client, so
//! at conc=1 this is the plain ping-pong round-trip floor.

use std::collections::VecDeque;
use std::io::{self, BufReader, BufWriter, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::mpsc::{self, TryRecvError};
use std::sync::Arc;
use std::thread;
use std::time::Instant;

use bench_common::{fail, report, run_phases, usage, Args, Phase, Recorder};

const ADD_FLAG: u32 = 1 << 31;
const BUF: usize = 64 * 1024;

/// True when `buf` already holds one complete request frame.
fn complete_frame_buffered(buf: &[u8]) -> bool {
    if buf.len() < 4 {
        return false;
    }
    let word = u32::from_le_bytes([buf[0], buf[1], buf[2], buf[3]]);
    buf.len() - 4 >= (word & !ADD_FLAG) as usize
}

/// Fills `frame` with one request (header + body).
fn build_request(frame: &mut Vec<u8>, payload: usize, a: u64) {
    frame.clear();
    if payload == 0 {
        frame.extend_from_slice(&(16u32 | ADD_FLAG).to_le_bytes());
        frame.extend_from_slice(&a.to_le_bytes());
        frame.extend_from_slice(&7u64.to_le_bytes());
    } else {
        frame.extend_from_slice(&(payload as u32).to_le_bytes());
        frame.resize(4 + payload, 0xA5);
    }
}

/// Reads one reply and checks its length (and the sum for `add`).
fn read_reply(
    r: &mut BufReader<TcpStream>,
    body: &mut [u8],
    payload: usize,
) -> io::Result<Option<()>> {
    let Some(word) = read_header(r)? else {
        return Ok(None);
    };
    let len = word as usize;
    let expect_len = if payload == 0 { 8 } else { payload };
    if len != expect_len {
        return Err(io::Error::new(
            io::ErrorKind::InvalidData,
            "bad reply length",
        ));
    }
    r.read_exact(&mut body[..len])?;
    Ok(Some(()))
}

/// Reads one frame header; Ok(None) on clean EOF.
fn read_header(r: &mut impl Read) -> io::Result<Option<u32>> {
    let mut hdr = [0u8; 4];
    match r.read_exact(&mut hdr) {
        Ok(()) => Ok(Some(u32::from_le_bytes(hdr))),
        Err(e) if e.kind() == io::ErrorKind::UnexpectedEof => Ok(None),
        Err(e) => Err(e),
    }
}

fn serve_conn(stream: TcpStream, nodelay: bool) -> io::Result<()> {
    stream.set_nodelay(nodelay)?;
    let mut r = BufReader::with_capacity(BUF, stream.try_clone()?);
    let mut w = BufWriter::with_capacity(BUF, stream);
    let mut body = Vec::new();
    while let Some(word) = read_header(&mut r)? {
        let len = (word & !ADD_FLAG) as usize;
        body.resize(len, 0);
        r.read_exact(&mut body)?;
        if word & ADD_FLAG != 0 {
            if len != 16 {
                return Err(io::Error::new(
                    io::ErrorKind::InvalidData,
                    "add needs 16 bytes",
                ));
            }
            let a = u64::from_le_bytes(body[0..8].try_into().unwrap());
            let b = u64::from_le_bytes(body[8..16].try_into().unwrap());
            w.write_all(&8u32.to_le_bytes())?;
            w.write_all(&a.wrapping_add(b).to_le_bytes())?;
        } else {
            w.write_all(&(len as u32).to_le_bytes())?;
            w.write_all(&body)?;
        }
        if !complete_frame_buffered(r.buffer()) {
            w.flush()?;
        }
    }
    w.flush()
}

fn server(listener: TcpListener, nodelay: bool) {
    for stream in listener.incoming() {
        match stream {
            Ok(s) => {
                thread::spawn(move || {
                    if let Err(e) = serve_conn(s, nodelay) {
                        eprintln!("raw server conn: {e}");
                    }
                });
            }
            Err(e) => eprintln!("raw accept: {e}"),
        }
    }
}

/// Starts the writer and reader threads of one client connection.
/// Returns the reader's join handle (yielding the connection's Recorder).
fn client_conn(
    addr: SocketAddr,
    args: &Args,
    phase: Arc<Phase>,
    conn_index: usize,
) -> io::Result<(
    thread::JoinHandle<()>,
    thread::JoinHandle<io::Result<Recorder>>,
)> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(args.nodelay)?;
    let read_half = stream.try_clone()?;
    let conc = args.concurrency;
    let payload = args.payload;

    // Credits: reader -> writer. Pre-filled with `conc` credits.
    let (credit_tx, credit_rx) = mpsc::sync_channel::<()>(conc);
    for _ in 0..conc {
        credit_tx.send(()).unwrap();
    }
    // Send timestamps: writer -> reader, in request order.
    let (ts_tx, ts_rx) = mpsc::channel::<Instant>();

    let writer_phase = phase.clone();
    let writer = thread::Builder::new()
        .name(format!("raw-w{conn_index}"))
        .spawn(move || {
            let mut w = BufWriter::with_capacity(BUF, stream);
            let mut frame = Vec::with_capacity(4 + payload.max(16));
            let mut a: u64 = (conn_index as u64) << 32;
            let res: io::Result<()> = (|| {
                loop {
                    if writer_phase.get() == bench_common::STOP {
                        break;
                    }
                    match credit_rx.try_recv() {
                        Ok(()) => {}
                        Err(TryRecvError::Empty) => {
                            // Out of credits: push what we have, then wait.
                            w.flush()?;
                            if credit_rx.recv().is_err() {
                                break;
                            }
                            if writer_phase.get() == bench_common::STOP {
                                break;
                            }
                        }
                        Err(TryRecvError::Disconnected) => break,
                    }
                    a = a.wrapping_add(1);
                    build_request(&mut frame, payload, a);
                    if ts_tx.send(Instant::now()).is_err() {
                        break;
                    }
                    w.write_all(&frame)?;
                }
                w.flush()
            })();
            if let Err(e) = res {
                eprintln!("raw writer: {e}");
            }
            // Half-close: the server drains, replies to everything, and closes,
            // which ends the reader with EOF.
            let _ = w.get_ref().shutdown(Shutdown::Write);
        })?;

    let reader = thread::Builder::new()
        .name(format!("raw-r{conn_index}"))
        .spawn(move || -> io::Result<Recorder> {
            let mut rec = Recorder::new();
            let mut r = BufReader::with_capacity(BUF, read_half);
            let mut body = vec![0u8; payload.max(8)];
            while read_reply(&mut r, &mut body, payload)?.is_some() {
                let now = Instant::now();
                let t0 = ts_rx.try_recv().map_err(|_| {
                    io::Error::new(io::ErrorKind::InvalidData, "reply without request")
                })?;
                rec.finish(&phase, true, now - t0);
                // Writer may be gone during shutdown; that's fine.
                let _ = credit_tx.try_send(());
            }
            Ok(rec)
        })?;
    Ok((writer, reader))
}

/// `--client single`: one thread per connection writes and reads.
fn single_client(
    addr: SocketAddr,
    args: &Args,
    phase: Arc<Phase>,
    conn_index: usize,
) -> io::Result<thread::JoinHandle<io::Result<Recorder>>> {
    let stream = TcpStream::connect(addr)?;
    stream.set_nodelay(args.nodelay)?;
    let conc = args.concurrency;
    let payload = args.payload;
    thread::Builder::new()
        .name(format!("raw-s{conn_index}"))
        .spawn(move || -> io::Result<Recorder> {
            let mut rec = Recorder::new();
            let mut r = BufReader::with_capacity(BUF, stream.try_clone()?);
            let mut w = BufWriter::with_capacity(BUF, stream);
            let mut sent: VecDeque<Instant> = VecDeque::with_capacity(conc);
            let mut frame = Vec::with_capacity(4 + payload.max(16));
            let mut body = vec![0u8; payload.max(8)];
            let mut a: u64 = (conn_index as u64) << 32;
            let mut stopping = false;
            loop {
                if !stopping {
                    while sent.len() < conc {
                        a = a.wrapping_add(1);
                        build_request(&mut frame, payload, a);
                        sent.push_back(Instant::now());
                        w.write_all(&frame)?;
                    }
                    w.flush()?;
                }
                if sent.is_empty() {
                    break;
                }
                // At least one reply, then every reply that is already buffered.
                loop {
                    if read_reply(&mut r, &mut body, payload)?.is_none() {
                        return Err(io::Error::new(
                            io::ErrorKind::UnexpectedEof,
                            "server closed",
                        ));
                    }
                    let now = Instant::now();
                    let t0 = sent.pop_front().expect("reply without request");
                    if !rec.finish(&phase, true, now - t0) {
                        stopping = true;
                    }
                    if sent.is_empty() || !complete_frame_buffered(r.buffer()) {
                        break;
                    }
                }
            }
            let _ = w.get_ref().shutdown(Shutdown::Write);
            Ok(rec)
        })
}

fn main() {
    const EXTRA: &[&str] = &["--client"];
    let args = Args::from_env(Args::default(), &["tcp"], EXTRA);
    let single = match args.extra("--client").unwrap_or("split") {
        "split" => false,
        "single" => true,
        v => fail(
            &usage("raw-bench", &["tcp"], EXTRA),
            &format!("--client: expected split|single, got {v:?}"),
        ),
    };
    let phase = Phase::new();

    let listener = TcpListener::bind("127.0.0.1:0").expect("bind");
    let addr = listener.local_addr().expect("local_addr");
    let nodelay = args.nodelay;
    thread::Builder::new()
        .name("raw-accept".into())
        .spawn(move || server(listener, nodelay))
        .expect("spawn server");

    let mut writers = Vec::new();
    let mut readers = Vec::with_capacity(args.conns);
    for i in 0..args.conns {
        if single {
            readers.push(single_client(addr, &args, phase.clone(), i).expect("client connect"));
        } else {
            let (w, r) = client_conn(addr, &args, phase.clone(), i).expect("client connect");
            writers.push(w);
            readers.push(r);
        }
    }

    let elapsed = run_phases(&phase, args.warmup, args.duration);

    let mut total = Recorder::new();
    for w in writers {
        w.join().expect("writer panicked");
    }
    for r in readers {
        match r.join().expect("reader panicked") {
            Ok(rec) => total.merge(&rec),
            Err(e) => {
                eprintln!("raw reader: {e}");
                total.errors += 1;
            }
        }
    }
    report(
        if single { "raw-single" } else { "raw" },
        &args,
        &total,
        elapsed,
    );
    if total.calls == 0 {
        std::process::exit(1);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn frame_detection() {
        assert!(!complete_frame_buffered(&[]));
        assert!(!complete_frame_buffered(&[2, 0, 0, 0, 1]));
        assert!(complete_frame_buffered(&[2, 0, 0, 0, 1, 2]));
        assert!(complete_frame_buffered(&[0, 0, 0, 0]));
        let mut add = (16u32 | ADD_FLAG).to_le_bytes().to_vec();
        add.extend_from_slice(&[0; 15]);
        assert!(!complete_frame_buffered(&add));
        add.push(0);
        assert!(complete_frame_buffered(&add));
    }
}
