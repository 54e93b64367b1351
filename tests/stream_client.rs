//! The caller's side of streams against a raw peer that speaks the spec
//! byte by byte (PROTOCOL.md 3.6–3.9, R10, R11): what the client sends,
//! that it never lets the peer run past its credit, and how each ending
//! reaches the consumer.

use std::time::Duration;

use courier::wire::{Header, MethodKey};
use courier::{CallError, Client, DriverError, FrameError, RemoteError, Transport};
use courier_mem::MemTransport;
use futures::executor::LocalPool;
use futures::future::poll_fn;
use futures::task::LocalSpawnExt;
use futures::StreamExt;

const KEY: MethodKey = MethodKey(0x0102_0304_0506_0708);

/// The raw peer: reads whole frames and writes frames.
struct Peer {
    io: MemTransport,
    buf: Vec<u8>,
}

impl Peer {
    fn new(io: MemTransport) -> Self {
        Peer {
            io,
            buf: Vec::new(),
        }
    }

    /// The next frame (header and body), or `None` at end of stream.
    async fn read(&mut self) -> Option<(Header, Vec<u8>)> {
        loop {
            if self.buf.len() >= 4 {
                let len = u32::from_le_bytes(self.buf[..4].try_into().unwrap()) as usize;
                if self.buf.len() >= 4 + len {
                    let frame: Vec<u8> = self.buf.drain(..4 + len).skip(4).collect();
                    let (header, at) = Header::decode(&frame).unwrap();
                    return Some((header, frame[at..].to_vec()));
                }
            }
            let mut chunk = [0u8; 4096];
            let n = poll_fn(|cx| self.io.poll_read(cx, &mut chunk))
                .await
                .unwrap();
            if n == 0 {
                return None;
            }
            self.buf.extend_from_slice(&chunk[..n]);
        }
    }

    async fn write(&mut self, header: Header, body: &[u8]) {
        let bytes = frame(header, body);
        let mut at = 0;
        while at < bytes.len() {
            at += poll_fn(|cx| self.io.poll_write(cx, &bytes[at..]))
                .await
                .unwrap();
        }
    }
}

fn frame(header: Header, body: &[u8]) -> Vec<u8> {
    let mut head = [0u8; courier::wire::MAX_HEADER_LEN];
    let n = header.encode(&mut head).unwrap();
    let mut out = ((n + body.len()) as u32).to_le_bytes().to_vec();
    out.extend_from_slice(&head[..n]);
    out.extend_from_slice(body);
    out
}

fn item(id: u32, value: u64) -> (Header, Vec<u8>) {
    let header = Header::Item {
        id,
        from_callee: true,
    };
    (header, postcard::to_allocvec(&value).unwrap())
}

/// A server-streaming call sends its request and, in the same write, its
/// credit; the items the peer sends arrive in order and the response ends
/// the stream with `None`.
#[test]
fn server_stream_sends_request_and_credit_then_ends_normally() {
    let (a, b) = courier_mem::pair(64 * 1024);
    let (client, driver) = Client::new(a);
    let mut pool = LocalPool::new();
    pool.spawner()
        .spawn_local(async move {
            let _ = driver.await;
        })
        .unwrap();
    pool.spawner()
        .spawn_local(async move {
            let mut peer = Peer::new(b);
            let (request, args) = peer.read().await.unwrap();
            let Header::Request { id, method, .. } = request else {
                panic!("{request:?}")
            };
            assert_eq!(method, KEY);
            assert_eq!(args, postcard::to_allocvec(&(3u32,)).unwrap());
            let (credit, _) = peer.read().await.unwrap();
            assert_eq!(
                credit,
                Header::Credit {
                    id,
                    from_callee: false,
                    grant: 5
                }
            );
            for v in 0..3u64 {
                let (h, body) = item(id, v * 10);
                peer.write(h, &body).await;
            }
            peer.write(Header::Response { id }, &[]).await;
        })
        .unwrap();
    let items = pool.run_until(async move {
        let stream = client.server_stream::<_, u64>(KEY, (3u32,)).with_credit(5);
        stream.collect::<Vec<_>>().await
    });
    assert_eq!(items, vec![Ok(0), Ok(10), Ok(20)]);
}

/// The consumer grants credit only for what it consumed: a peer that
/// sends its whole window gets no more credit until items are read, and
/// an item beyond the credit is a protocol violation that closes the
/// connection (R10).
#[test]
fn credit_follows_consumption_and_excess_items_close_the_connection() {
    let (a, b) = courier_mem::pair(64 * 1024);
    let (client, driver) = Client::new(a);
    let mut pool = LocalPool::new();
    let driver = pool.spawner().spawn_local_with_handle(driver).unwrap();
    let (done_tx, done_rx) = futures::channel::oneshot::channel::<Vec<Header>>();
    pool.spawner()
        .spawn_local(async move {
            let mut peer = Peer::new(b);
            let (Header::Request { id, .. }, _) = peer.read().await.unwrap() else {
                panic!()
            };
            let (credit, _) = peer.read().await.unwrap();
            assert!(matches!(credit, Header::Credit { grant: 4, .. }));
            for v in 0..4 {
                let (h, body) = item(id, v);
                peer.write(h, &body).await;
            }
            // The consumer reads 3 (more than half of 4): one credit of 3.
            let (grant, _) = peer.read().await.unwrap();
            let mut seen = vec![grant];
            // Send 3 + 1 items: the consumer granted 3, held 1 → 4 > 3.
            for v in 4..8 {
                let (h, body) = item(id, v);
                peer.write(h, &body).await;
            }
            while let Some((h, _)) = peer.read().await {
                seen.push(h);
            }
            let _ = done_tx.send(seen);
        })
        .unwrap();
    let (items, driver_result) = pool.run_until(async move {
        let mut stream = client.server_stream::<_, u64>(KEY, ()).with_credit(4);
        let mut items = Vec::new();
        for _ in 0..3 {
            items.push(stream.next().await.unwrap());
        }
        // Keep reading: the excess item kills the connection.
        while let Some(item) = stream.next().await {
            items.push(item);
        }
        drop(stream);
        drop(client);
        (items, driver.await)
    });
    let seen = pool.run_until(done_rx).unwrap();
    assert!(
        matches!(
            seen[0],
            Header::Credit {
                grant: 3,
                from_callee: false,
                ..
            }
        ),
        "{seen:?}"
    );
    assert!(
        matches!(
            driver_result,
            Err(DriverError::Protocol(FrameError::CreditExceeded))
        ),
        "{driver_result:?}"
    );
    // Items before the violation arrive; then the connection's error.
    let last = items.last().unwrap();
    assert!(matches!(last, Err(CallError::Protocol(_))), "{items:?}");
    assert_eq!(&items[..4], &[Ok(0), Ok(1), Ok(2), Ok(3)][..]);
}

/// An error frame after items: the items, then the typed error, then
/// `None`.
#[test]
fn server_stream_error_ending_reaches_the_consumer_after_the_items() {
    let (a, b) = courier_mem::pair(64 * 1024);
    let (client, driver) = Client::new(a);
    let mut pool = LocalPool::new();
    pool.spawner()
        .spawn_local(async move {
            let _ = driver.await;
        })
        .unwrap();
    pool.spawner()
        .spawn_local(async move {
            let mut peer = Peer::new(b);
            let (Header::Request { id, .. }, _) = peer.read().await.unwrap() else {
                panic!()
            };
            let (h, body) = item(id, 7);
            peer.write(h, &body).await;
            let error = RemoteError::HandlerPanicked;
            peer.write(Header::Error { id, error }, &[]).await;
        })
        .unwrap();
    let items = pool.run_until(async move {
        let mut stream = client.server_stream::<_, u64>(KEY, ());
        let mut items = Vec::new();
        while let Some(item) = stream.next().await {
            items.push(item);
        }
        // Polled again after its end, it stays ended.
        assert!(stream.next().await.is_none());
        items
    });
    assert_eq!(
        items,
        vec![Ok(7), Err(CallError::Remote(RemoteError::HandlerPanicked))]
    );
}

/// Dropping a stream mid-way sends a cancel for its id (R2, R11), and
/// items that cross the cancel are ignored.
#[test]
fn dropping_a_stream_cancels_the_call() {
    let (a, b) = courier_mem::pair(64 * 1024);
    let (client, driver) = Client::new(a);
    let mut pool = LocalPool::new();
    pool.spawner()
        .spawn_local(async move {
            let _ = driver.await;
        })
        .unwrap();
    let (seen_tx, seen_rx) = futures::channel::oneshot::channel();
    pool.spawner()
        .spawn_local(async move {
            let mut peer = Peer::new(b);
            let (Header::Request { id, .. }, _) = peer.read().await.unwrap() else {
                panic!()
            };
            let _credit = peer.read().await.unwrap();
            let (h, body) = item(id, 1);
            peer.write(h, &body).await;
            let (cancel, _) = peer.read().await.unwrap();
            // Crossing items are ignored, not a violation.
            let (h, body) = item(id, 2);
            peer.write(h, &body).await;
            let _ = seen_tx.send((id, cancel, peer));
        })
        .unwrap();
    let first = pool.run_until(async {
        let mut stream = client.server_stream::<_, u64>(KEY, ());
        stream.next().await
    });
    assert_eq!(first, Some(Ok(1)));
    let (id, cancel, peer) = pool.run_until(seen_rx).unwrap();
    assert_eq!(cancel, Header::Cancel { id });
    pool.run_until_stalled();
    // The crossing item was ignored: the connection lives on.
    assert!(!client.is_closed());
    assert_eq!(client.in_flight(), 0);
    drop(peer);
}

/// A client-streaming call waits for the callee's credit, sends at most
/// that many items, then more as credit comes, then the end frame; the
/// reply resolves it.
#[test]
fn upload_sends_within_credit_and_ends() {
    let (a, b) = courier_mem::pair(64 * 1024);
    let (client, driver) = Client::new(a);
    let mut pool = LocalPool::new();
    pool.spawner()
        .spawn_local(async move {
            let _ = driver.await;
        })
        .unwrap();
    let (log_tx, log_rx) = futures::channel::oneshot::channel();
    pool.spawner()
        .spawn_local(async move {
            let mut peer = Peer::new(b);
            let (Header::Request { id, .. }, _) = peer.read().await.unwrap() else {
                panic!()
            };
            let mut log = Vec::new();
            let grant = |grant| Header::Credit {
                id,
                from_callee: true,
                grant,
            };
            peer.write(grant(2), &[]).await;
            let mut sum = 0u64;
            for _ in 0..2 {
                let (h, body) = peer.read().await.unwrap();
                assert_eq!(
                    h,
                    Header::Item {
                        id,
                        from_callee: false
                    }
                );
                sum += postcard::from_bytes::<u64>(&body).unwrap();
                log.push(h);
            }
            // Nothing more comes without credit: a pending read stays so.
            let mut early = Box::pin(peer.read());
            let nothing = futures::poll!(early.as_mut());
            assert!(nothing.is_pending());
            drop(early);
            peer.write(grant(10), &[]).await;
            loop {
                let (h, body) = peer.read().await.unwrap();
                match h {
                    Header::Item { .. } => sum += postcard::from_bytes::<u64>(&body).unwrap(),
                    Header::End { id: end } => {
                        assert_eq!(end, id);
                        break;
                    }
                    other => panic!("{other:?}"),
                }
            }
            peer.write(
                Header::Response { id },
                &postcard::to_allocvec(&sum).unwrap(),
            )
            .await;
            let _ = log_tx.send(log);
        })
        .unwrap();
    let total: Result<u64, CallError> = pool.run_until(async {
        let items = futures::stream::iter(1..=5u64);
        client.client_stream(KEY, (), items).await
    });
    assert_eq!(total, Ok(15));
    assert_eq!(pool.run_until(log_rx).unwrap().len(), 2);
}

/// A plain client answers a request from its peer with UnknownMethod
/// instead of ignoring it (R4), and keeps working.
#[test]
fn a_plain_client_refuses_calls_from_its_peer() {
    let (a, b) = courier_mem::pair(64 * 1024);
    let (client, driver) = Client::new(a);
    let mut pool = LocalPool::new();
    pool.spawner()
        .spawn_local(async move {
            let _ = driver.await;
        })
        .unwrap();
    let answer = pool.run_until(async move {
        let mut peer = Peer::new(b);
        peer.write(Header::request(9, KEY, None), &[]).await;
        let answer = peer.read().await.unwrap().0;
        drop(client);
        answer
    });
    assert_eq!(
        answer,
        Header::Error {
            id: 9,
            error: RemoteError::UnknownMethod
        }
    );
}

/// A stream's timeout covers the whole stream: items before it arrive,
/// then `DeadlineExceeded`.
#[test]
fn stream_timeout_ends_the_stream() {
    let (a, b) = courier_mem::pair(64 * 1024);
    let timer = courier::timer::AsyncIoTimer::new();
    let (client, driver) = courier::ClientBuilder::new().timer(timer).build(a);
    let result = smol::block_on(async move {
        let driver = smol::spawn(driver);
        let peer = smol::spawn(async move {
            let mut peer = Peer::new(b);
            let (Header::Request { id, timeout_ms, .. }, _) = peer.read().await.unwrap() else {
                panic!()
            };
            assert!(timeout_ms.is_some());
            let (h, body) = item(id, 1);
            peer.write(h, &body).await;
            // Then silence: keep the connection open.
            while peer.read().await.is_some() {}
        });
        let stream = client
            .server_stream::<_, u64>(KEY, ())
            .with_timeout(Duration::from_millis(50));
        let items: Vec<_> = stream.collect().await;
        drop(client);
        let _ = driver.await;
        drop(peer);
        items
    });
    assert_eq!(result, vec![Ok(1), Err(CallError::DeadlineExceeded)]);
}

/// The end frame is not an item: a caller whose items used up exactly the
/// credit still sends its end without waiting for more credit (R10).
#[test]
fn the_end_frame_needs_no_credit() {
    let (a, b) = courier_mem::pair(64 * 1024);
    let (client, driver) = Client::new(a);
    let mut pool = LocalPool::new();
    pool.spawner()
        .spawn_local(async move {
            let _ = driver.await;
        })
        .unwrap();
    let (frames_tx, frames_rx) = futures::channel::oneshot::channel();
    pool.spawner()
        .spawn_local(async move {
            let mut peer = Peer::new(b);
            let (Header::Request { id, .. }, _) = peer.read().await.unwrap() else {
                panic!()
            };
            let grant = Header::Credit {
                id,
                from_callee: true,
                grant: 2,
            };
            peer.write(grant, &[]).await;
            let mut frames = Vec::new();
            for _ in 0..3 {
                frames.push(peer.read().await.unwrap().0);
            }
            peer.write(
                Header::Response { id },
                &postcard::to_allocvec(&2u64).unwrap(),
            )
            .await;
            let _ = frames_tx.send((id, frames, peer));
        })
        .unwrap();
    let reply: Result<u64, CallError> = pool.run_until(async {
        client
            .client_stream(KEY, (), futures::stream::iter([10u64, 20]))
            .await
    });
    assert_eq!(reply, Ok(2));
    let (id, frames, _peer) = pool.run_until(frames_rx).unwrap();
    let item = Header::Item {
        id,
        from_callee: false,
    };
    assert_eq!(frames, vec![item, item, Header::End { id }]);
}
