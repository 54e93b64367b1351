//! Hostile and broken peers: half a frame then end of stream, valid headers
//! with garbage bodies, bytes that are not frames, and handlers that panic.

#[path = "reliability/support.rs"]
mod support;

use support::{frame, record, varints};

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use courier::framing::split_frame;
use courier::wire::Header;
use courier::{
    CallError, Client, DriverError, FrameError, MethodKey, RemoteError, ServerBuilder, Transport,
};
use courier_mem::{MemError, MemTransport};
use support::{ProbeClient, ProbeImpl, Sim};

fn request(id: u32, method: MethodKey, body: &[u8]) -> Vec<u8> {
    frame(Header::request(id, method, None), body)
}

/// Writes all of `bytes` to a raw peer end (the pipe must have room).
fn send(peer: &mut MemTransport, bytes: &[u8]) {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    assert_eq!(
        peer.poll_write(&mut cx, bytes),
        Poll::Ready(Ok(bytes.len()))
    );
}

/// Reads what a raw peer end has buffered, as frames.
fn receive(peer: &mut MemTransport) -> Vec<(Header, Vec<u8>)> {
    let waker = std::task::Waker::noop();
    let mut cx = Context::from_waker(waker);
    let mut bytes = Vec::new();
    let mut buf = [0u8; 4096];
    while let Poll::Ready(Ok(n @ 1..)) = peer.poll_read(&mut cx, &mut buf) {
        bytes.extend_from_slice(&buf[..n]);
    }
    let mut frames = Vec::new();
    let mut rest = &bytes[..];
    while let Some((frame, used)) = split_frame(rest, 1 << 20).unwrap() {
        let (header, at) = Header::decode(frame).unwrap();
        frames.push((header, frame[at..].to_vec()));
        rest = &rest[used..];
    }
    assert!(rest.is_empty(), "a partial frame was left");
    frames
}

#[test]
fn half_a_request_frame_then_eof_is_a_typed_protocol_error() {
    let (mut peer, server_io) = courier_mem::pair(4096);
    let imp = ProbeImpl::shared(0);
    let mut server = ServerBuilder::new().build(server_io, support::service(&imp));
    let mut sim = Sim::new();
    let result = record(&mut sim, &mut server);
    // One call that stays in flight, then half of the next frame.
    send(&mut peer, &request(1, ProbeClient::GATED, &[1]));
    let second = request(2, ProbeClient::ADD, &varints(&[1, 2]));
    send(&mut peer, &second[..second.len() / 2]);
    sim.run_until_stalled(100);
    assert_eq!(imp.started.load(Ordering::SeqCst), 1);
    assert!(result.borrow().is_none());
    drop(peer);
    sim.run_until_stalled(100);
    let result: Result<(), DriverError<MemError>> = result.borrow_mut().take().unwrap();
    assert!(
        matches!(
            result,
            Err(DriverError::Protocol(FrameError::UnexpectedEof))
        ),
        "{result:?}"
    );
    drop(sim);
    assert_eq!(server.in_flight(), 0, "the handler in flight was dropped");
}

#[test]
fn half_a_prefix_then_eof_is_a_typed_protocol_error() {
    let (mut peer, server_io) = courier_mem::pair(4096);
    let server = ServerBuilder::new().build(server_io, support::service(&ProbeImpl::shared(0)));
    send(&mut peer, &[5, 0]);
    drop(peer);
    let result = futures::executor::block_on(server);
    assert!(matches!(
        result,
        Err(DriverError::Protocol(FrameError::UnexpectedEof))
    ));
}

#[test]
fn half_a_response_frame_then_eof_fails_the_call_with_a_typed_error() {
    let (client_io, mut peer) = courier_mem::pair(4096);
    let (client, driver) = Client::new(client_io);
    let probe = ProbeClient::new(client.clone());
    let mut sim = Sim::new();
    let driver_result = record(&mut sim, driver);
    let call = record(&mut sim, probe.add(1, 2));
    sim.run_until_stalled(100);
    let requests = receive(&mut peer);
    let id = requests[0].0.id();
    let reply = frame(Header::Response { id }, &[3]);
    send(&mut peer, &reply[..reply.len() - 1]);
    sim.run_until_stalled(100);
    assert!(call.borrow().is_none(), "no reply yet");
    drop(peer);
    sim.run_until_stalled(100);
    assert_eq!(
        call.borrow_mut().take(),
        Some(Err(CallError::ConnectionLost))
    );
    assert!(matches!(
        driver_result.borrow_mut().take(),
        Some(Err(DriverError::Closed))
    ));
    assert_eq!(client.in_flight(), 0);
}

#[test]
fn valid_headers_with_garbage_bodies_get_bad_request_and_the_connection_keeps_working() {
    let (mut peer, server_io) = courier_mem::pair(1 << 16);
    let imp = ProbeImpl::shared(64);
    let server = ServerBuilder::new().build(server_io, support::service(&imp));
    let mut sim = Sim::new();
    let result = record(&mut sim, server);

    // Bodies that cannot decode as the method's arguments: empty, short,
    // an endless varint, a too-long varint, trailing bytes, a length past
    // the end, a bool that is neither 0 nor 1.
    let add = ProbeClient::ADD;
    let garbage: Vec<(MethodKey, Vec<u8>)> = vec![
        (add, vec![]),
        (add, vec![1]),
        (add, vec![0x80; 3]),
        (add, vec![0xff; 11]),
        (add, varints(&[1, 2, 3])),
        (ProbeClient::ECHO, vec![200, 1, 2]),
        (ProbeClient::MAYBE_PANIC, vec![1, 7]),
        (ProbeClient::FILL, vec![1, 0xff, 0xff, 0xff, 0xff, 0xff]),
    ];
    for round in 0..50u32 {
        let mut batch = Vec::new();
        for (i, (method, body)) in garbage.iter().enumerate() {
            batch.extend(request(round * 100 + i as u32, *method, body));
        }
        // A good call in every batch: the connection still works.
        batch.extend(request(round * 100 + 99, add, &varints(&[round.into(), 1])));
        send(&mut peer, &batch);
        sim.run_until_stalled(1000);
        let mut replies = receive(&mut peer);
        replies.sort_by_key(|(header, _)| header.id());
        assert_eq!(replies.len(), garbage.len() + 1, "round {round}");
        for (i, (header, body)) in replies[..garbage.len()].iter().enumerate() {
            assert_eq!(
                *header,
                Header::Error {
                    id: round * 100 + i as u32,
                    error: RemoteError::BadRequest
                }
            );
            assert!(body.is_empty());
        }
        let (header, body) = &replies[garbage.len()];
        assert_eq!(
            *header,
            Header::Response {
                id: round * 100 + 99
            }
        );
        assert_eq!(*body, varints(&[u64::from(round) + 1]));
    }
    assert!(result.borrow().is_none(), "the connection stayed open");
    assert_eq!(
        imp.started.load(Ordering::SeqCst),
        50,
        "only good calls ran"
    );
    drop(peer);
    sim.run_until_stalled(100);
    assert!(matches!(result.borrow_mut().take(), Some(Ok(()))));
}

#[test]
fn garbage_response_body_fails_only_that_call() {
    let (client_io, mut peer) = courier_mem::pair(4096);
    let (client, driver) = Client::new(client_io);
    let probe = ProbeClient::new(client);
    let mut sim = Sim::new();
    let _driver = record(&mut sim, driver);
    let first = record(&mut sim, probe.add(1, 2));
    let second = record(&mut sim, probe.add(3, 4));
    sim.run_until_stalled(100);
    let requests = receive(&mut peer);
    assert_eq!(requests.len(), 2);
    let mut replies = frame(
        Header::Response {
            id: requests[0].0.id(),
        },
        &[0xff; 11],
    );
    replies.extend(frame(
        Header::Response {
            id: requests[1].0.id(),
        },
        &[7],
    ));
    send(&mut peer, &replies);
    sim.run_until_stalled(100);
    assert_eq!(first.borrow_mut().take(), Some(Err(CallError::Decode)));
    assert_eq!(second.borrow_mut().take(), Some(Ok(7)));
    // And the connection goes on.
    let third = record(&mut sim, probe.add(5, 6));
    sim.run_until_stalled(100);
    let requests = receive(&mut peer);
    send(
        &mut peer,
        &frame(
            Header::Response {
                id: requests[0].0.id(),
            },
            &[11],
        ),
    );
    sim.run_until_stalled(100);
    assert_eq!(third.borrow_mut().take(), Some(Ok(11)));
}

#[test]
fn bytes_that_are_not_frames_close_the_connection_with_a_typed_error() {
    for (bytes, expected) in [
        (
            frame(Header::Response { id: 1 }, &[])
                .into_iter()
                .enumerate()
                .map(|(i, b)| if i == 4 { 9 } else { b })
                .collect::<Vec<u8>>(),
            FrameError::UnsupportedVersion(9),
        ),
        (vec![3, 0, 0, 0, 1, 0, 0], FrameError::Truncated),
        (
            vec![7, 0, 0, 0, 1, 1, 0x80, 0, 0, 0, 0],
            FrameError::UnknownFlags(0x80),
        ),
    ] {
        let (mut peer, server_io) = courier_mem::pair(4096);
        let server = ServerBuilder::new().build(server_io, support::service(&ProbeImpl::shared(0)));
        send(&mut peer, &bytes);
        let result = futures::executor::block_on(server);
        match result {
            Err(DriverError::Protocol(e)) => assert_eq!(e, expected),
            other => panic!("expected {expected:?}, got {other:?}"),
        }
    }
}

/// Keeps the expected handler panics out of the test output.
fn quiet_expected_panics() {
    static ONCE: std::sync::Once = std::sync::Once::new();
    ONCE.call_once(|| {
        let default = std::panic::take_hook();
        std::panic::set_hook(Box::new(move |info| {
            let expected = info
                .payload()
                .downcast_ref::<String>()
                .is_some_and(|m| m.starts_with("handler asked to panic"));
            if !expected {
                default(info);
            }
        }));
    });
}

/// Calls `maybe_panic` 30 times, every third one panicking, alongside
/// other calls; the server is run with or without a spawner.
fn panicking_handlers(spawner: bool) {
    quiet_expected_panics();
    let (client_io, server_io) = courier_mem::pair(1 << 16);
    let imp = Arc::new(ProbeImpl {
        panics: true,
        ..ProbeImpl::default()
    });
    let executor = Arc::new(smol::Executor::new());
    let mut builder = ServerBuilder::new();
    if spawner {
        let executor = executor.clone();
        builder = builder.spawner(move |task| executor.spawn(task).detach());
    }
    let server = builder.build(server_io, support::service(&imp));
    let (client, driver) = Client::new(client_io);
    let probe = ProbeClient::new(client);
    let test = async move {
        let calls = (0..30u64).map(|i| {
            let probe = probe.clone();
            async move { (i, probe.maybe_panic(i, i % 3 == 0).await) }
        });
        let results = futures::future::join_all(calls).await;
        for (i, result) in results {
            if i % 3 == 0 {
                assert_eq!(
                    result,
                    Err(CallError::Remote(RemoteError::HandlerPanicked)),
                    "call {i}"
                );
            } else {
                assert_eq!(result, Ok(i), "call {i}");
            }
        }
        // The server keeps serving after the panics.
        assert_eq!(probe.add(40, 2).await, Ok(42));
    };
    let all = async {
        let (_, driver, server) = futures::join!(test, driver, server);
        driver.unwrap();
        server.unwrap();
    };
    let deadline = async {
        async_io::Timer::after(Duration::from_secs(60)).await;
        panic!("timed out");
    };
    futures::executor::block_on(executor.run(smol::future::or(all, deadline)));
    assert_eq!(imp.started.load(Ordering::SeqCst), 31);
}

#[test]
fn panicking_handler_is_a_typed_error_and_the_server_goes_on() {
    panicking_handlers(false);
}

#[test]
fn panicking_spawned_handler_is_a_typed_error_and_the_server_goes_on() {
    panicking_handlers(true);
}
