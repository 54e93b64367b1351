//! Micro-benchmarks of courier's hot paths (criterion):
//! `cargo bench -p courier-bench --bench micro`.
//!
//! - `encode`: one request frame (length prefix, header, postcard body) into
//!   a reused buffer, handed to a transport that takes everything;
//! - `decode`: splitting a frame off a buffer, parsing its header and
//!   decoding the body;
//! - `round_trip`: one `add` / echo call over `courier-mem`, client driver
//!   and server polled on the same thread (no sockets, no thread hops).

use std::hint::black_box;
use std::task::{Context, Poll};
use std::time::Instant;

use courier::framing::{split_frame, FrameWriter, DEFAULT_MAX_FRAME};
use courier::wire::Header;
use courier::Transport;
use courier_bench::BenchClient;
use criterion::{criterion_group, criterion_main, Criterion, Throughput};
use serde_bytes::ByteBuf;

/// A transport that accepts every byte and never has any to read.
struct Sink;

impl Transport for Sink {
    type Error = std::io::Error;
    fn poll_read(&mut self, _: &mut Context<'_>, _: &mut [u8]) -> Poll<std::io::Result<usize>> {
        Poll::Pending
    }
    fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
        Poll::Ready(Ok(buf.len()))
    }
    fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
    fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
        Poll::Ready(Ok(()))
    }
}

fn encode(c: &mut Criterion) {
    let mut g = c.benchmark_group("encode");
    let waker = futures::task::noop_waker();
    let mut cx = Context::from_waker(&waker);
    let header = Header::request(0x0001_0007, BenchClient::ADD, None);
    let mut w = FrameWriter::new(DEFAULT_MAX_FRAME);
    g.bench_function("request add(u64,u64)", |b| {
        b.iter(|| {
            w.encode(&header, &(black_box(123_456u64), black_box(7u64)))
                .unwrap();
            let _ = w.poll_write_all(&mut Sink, &mut cx);
        })
    });
    for size in [16usize, 4096] {
        let body = (ByteBuf::from(vec![7u8; size]),);
        let header = Header::request(0x0001_0007, BenchClient::ECHO, None);
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("request echo {size} B"), |b| {
            b.iter(|| {
                w.encode(&header, black_box(&body)).unwrap();
                let _ = w.poll_write_all(&mut Sink, &mut cx);
            })
        });
    }
    g.finish();
}

/// The bytes of one encoded frame.
fn frame_bytes<T: serde::Serialize>(header: &Header, body: &T) -> Vec<u8> {
    struct Keep(Vec<u8>);
    impl Transport for Keep {
        type Error = std::io::Error;
        fn poll_read(&mut self, _: &mut Context<'_>, _: &mut [u8]) -> Poll<std::io::Result<usize>> {
            Poll::Pending
        }
        fn poll_write(&mut self, _: &mut Context<'_>, buf: &[u8]) -> Poll<std::io::Result<usize>> {
            self.0.extend_from_slice(buf);
            Poll::Ready(Ok(buf.len()))
        }
        fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<std::io::Result<()>> {
            Poll::Ready(Ok(()))
        }
    }
    let waker = futures::task::noop_waker();
    let mut w = FrameWriter::new(DEFAULT_MAX_FRAME);
    w.encode(header, body).unwrap();
    let mut keep = Keep(Vec::new());
    let _ = w.poll_write_all(&mut keep, &mut Context::from_waker(&waker));
    keep.0
}

fn decode(c: &mut Criterion) {
    let mut g = c.benchmark_group("decode");
    let add = frame_bytes(
        &Header::request(7, BenchClient::ADD, None),
        &(123_456u64, 7u64),
    );
    g.bench_function("request add(u64,u64)", |b| {
        b.iter(|| {
            let (frame, _) = split_frame(black_box(&add), DEFAULT_MAX_FRAME)
                .unwrap()
                .unwrap();
            let (header, at) = Header::decode(frame).unwrap();
            let args: (u64, u64) = postcard::from_bytes(&frame[at..]).unwrap();
            black_box((header, args))
        })
    });
    for size in [16usize, 4096] {
        let bytes = frame_bytes(&Header::Response { id: 7 }, &ByteBuf::from(vec![7u8; size]));
        g.throughput(Throughput::Bytes(size as u64));
        g.bench_function(format!("response echo {size} B"), |b| {
            b.iter(|| {
                let (frame, _) = split_frame(black_box(&bytes), DEFAULT_MAX_FRAME)
                    .unwrap()
                    .unwrap();
                let (header, at) = Header::decode(frame).unwrap();
                let body: ByteBuf = postcard::from_bytes(&frame[at..]).unwrap();
                black_box((header, body))
            })
        });
    }
    g.finish();
}

fn round_trip(c: &mut Criterion) {
    let mut g = c.benchmark_group("round_trip_mem");
    let ex = smol::LocalExecutor::new();
    let (client_io, server_io) = courier_mem::pair(1 << 20);
    ex.spawn(courier_bench::server(server_io, 1)).detach();
    let (client, driver) = courier_bench::client(client_io, 1);
    ex.spawn(driver).detach();
    // The loop runs inside one `ex.run` so that entering the executor is
    // not part of the per-call time.
    g.bench_function("add(u64,u64)", |b| {
        b.iter_custom(|iters| {
            smol::block_on(ex.run(async {
                let start = Instant::now();
                for i in 0..iters {
                    black_box(client.add(black_box(i), 3).await.unwrap());
                }
                start.elapsed()
            }))
        })
    });
    let mut buf = Some(courier_bench::Payload::from(vec![7u8; 16]));
    g.bench_function("echo 16 B", |b| {
        b.iter_custom(|iters| {
            smol::block_on(ex.run(async {
                let mut payload = buf.take().unwrap();
                let start = Instant::now();
                for _ in 0..iters {
                    payload = client.echo(payload).await.unwrap();
                }
                let elapsed = start.elapsed();
                buf = Some(payload);
                elapsed
            }))
        })
    });
    g.finish();
}

criterion_group!(benches, encode, decode, round_trip);
criterion_main!(benches);
