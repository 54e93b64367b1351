//! Issue 8 over real TCP, on smol and on tokio: a raw client pipelines
//! 20,000 `echo(1000 B)` requests, does not read until its writes block,
//! then reads everything while it sends the rest. Every reply must arrive
//! (the server used to stop after about 5,200: draining its write backlog
//! under the high-water mark re-allowed reading but did not count as
//! progress, so it went to sleep with no read registered).
//!
//! The client is plain blocking sockets on two threads, so it behaves the
//! same under both runtimes; every wait is bounded.

#[path = "reliability/support.rs"]
mod support;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use courier::framing::split_frame;
use courier::wire::{Header, MAX_HEADER_LEN};
use courier::Shutdown;
use support::{ProbeClient, ProbeImpl};

const CALLS: u32 = 20_000;
const SIZE: usize = 1000;
/// The longest the client waits for the next byte of a reply.
const STALL: Duration = Duration::from_secs(20);

fn request(id: u32) -> Vec<u8> {
    // postcard: the length as a varint (1000 = e8 07), then the bytes.
    let mut body = vec![0xe8, 0x07];
    body.extend(std::iter::repeat_n(id as u8, SIZE));
    let mut head = [0u8; MAX_HEADER_LEN];
    let n = Header::request(id, ProbeClient::ECHO, None)
        .encode(&mut head)
        .unwrap();
    let mut out = ((n + body.len()) as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(&body);
    out
}

/// Runs the client against `addr`; panics unless every call is answered
/// with its own bytes.
fn pipelined_client(addr: SocketAddr) {
    let stream = TcpStream::connect(addr).unwrap();
    stream.set_nodelay(true).unwrap();
    let mut writer = stream.try_clone().unwrap();
    let mut reader = stream;
    let written = Arc::new(AtomicUsize::new(0));
    let finished = Arc::new(AtomicBool::new(false));
    let write_thread = {
        let (written, finished) = (written.clone(), finished.clone());
        std::thread::spawn(move || {
            for id in 0..CALLS {
                writer.write_all(&request(id)).unwrap();
                written.fetch_add(1, Ordering::SeqCst);
            }
            finished.store(true, Ordering::SeqCst);
            writer
        })
    };
    // Do not read until the writes block (no progress for a while) or
    // are all done: the server's replies pile up meanwhile.
    let mut last = usize::MAX;
    loop {
        std::thread::sleep(Duration::from_millis(200));
        let now = written.load(Ordering::SeqCst);
        if now == last || finished.load(Ordering::SeqCst) {
            break;
        }
        last = now;
    }
    let paused_at = written.load(Ordering::SeqCst);
    assert!(paused_at < CALLS as usize, "the writes never blocked");

    reader.set_read_timeout(Some(STALL)).unwrap();
    let mut bytes = Vec::new();
    let mut buf = vec![0u8; 256 * 1024];
    let mut replies = 0u32;
    let started = Instant::now();
    while replies < CALLS {
        let n = match reader.read(&mut buf) {
            Ok(0) => panic!("closed after {replies} replies"),
            Ok(n) => n,
            Err(e) => panic!("no reply for {STALL:?} after {replies} of {CALLS}: {e}"),
        };
        bytes.extend_from_slice(&buf[..n]);
        let mut used = 0;
        while let Some((frame, len)) = split_frame(&bytes[used..], 1 << 20).unwrap() {
            let (header, at) = Header::decode(frame).unwrap();
            let Header::Response { id } = header else {
                panic!("unexpected {header:?}");
            };
            assert_eq!(id, replies, "replies in order");
            let body = &frame[at..];
            assert_eq!(&body[..2], &[0xe8, 0x07]);
            assert!(body[2..].iter().all(|&b| b == id as u8));
            assert_eq!(body.len(), 2 + SIZE);
            replies += 1;
            used += len;
        }
        bytes.drain(..used);
        assert!(started.elapsed() < Duration::from_secs(300), "too slow");
    }
    write_thread.join().unwrap();
}

#[test]
fn paused_tcp_reader_gets_every_reply_on_smol() {
    let imp = ProbeImpl::shared(0);
    let shutdown = Shutdown::new();
    let listener = smol::block_on(courier_tcp::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = courier_tcp::builder()
        .shutdown(shutdown.clone())
        .serve(listener, support::service(&imp));
    let server = std::thread::spawn(move || smol::block_on(serve));
    pipelined_client(addr);
    shutdown.trigger();
    server.join().unwrap();
    assert_eq!(imp.started.load(Ordering::SeqCst), CALLS as usize);
}

#[test]
fn paused_tcp_reader_gets_every_reply_on_tokio() {
    let imp = ProbeImpl::shared(0);
    let shutdown = Shutdown::new();
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .unwrap();
    let listener = runtime
        .block_on(courier_tcp::tokio::TcpListener::bind("127.0.0.1:0"))
        .unwrap();
    let addr = listener.local_addr().unwrap();
    let serve = courier_tcp::tokio::builder()
        .shutdown(shutdown.clone())
        .serve(listener, support::service(&imp));
    let server = runtime.spawn(serve);
    pipelined_client(addr);
    shutdown.trigger();
    runtime.block_on(server).unwrap();
    assert_eq!(imp.started.load(Ordering::SeqCst), CALLS as usize);
}
