//! Many concurrent TCP connections, each with many calls in flight: every
//! response must match its own request (no crossed, lost or duplicated
//! replies), and the server must end with nothing left behind.

#[path = "reliability/support.rs"]
mod support;

use std::sync::atomic::Ordering;
use std::time::Duration;

use courier::Shutdown;
use support::{ProbeClient, ProbeImpl};

const CONNECTIONS: u64 = 100;
const CALLS: u64 = 1000;

/// A request payload unique to (connection, call), of varying length.
fn payload(conn: u64, call: u64) -> Vec<u8> {
    let mut data = (conn * CALLS + call).to_le_bytes().to_vec();
    data.extend((0..(call * 7 + conn) % 97).map(|i| (i as u8) ^ (call as u8)));
    data
}

#[test]
fn hundred_tcp_connections_with_a_thousand_calls_each() {
    let imp = ProbeImpl::shared(0);
    let test = async {
        let listener = courier_tcp::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        let shutdown = Shutdown::new();
        let server = smol::spawn(
            courier_tcp::builder()
                .shutdown(shutdown.clone())
                .serve(listener, support::service(&imp)),
        );
        let connections = (0..CONNECTIONS).map(|conn| async move {
            let (client, driver) = courier_tcp::connect(addr).await.unwrap();
            let driver = smol::spawn(driver);
            let probe = ProbeClient::new(client);
            let calls = (0..CALLS).map(|call| {
                let probe = &probe;
                async move {
                    let data = payload(conn, call);
                    let echoed = probe.echo(data.clone()).await.unwrap();
                    assert_eq!(echoed, data, "connection {conn}, call {call}");
                    let sum = probe.add(conn << 32, call).await.unwrap();
                    assert_eq!(sum, (conn << 32) + call, "connection {conn}, call {call}");
                }
            });
            futures::future::join_all(calls).await;
            assert_eq!(probe.client().in_flight(), 0);
            drop(probe);
            driver.await.unwrap();
        });
        futures::future::join_all(connections).await;
        shutdown.trigger();
        server.await;
    };
    let deadline = async {
        async_io::Timer::after(Duration::from_secs(300)).await;
        panic!("timed out");
    };
    smol::block_on(smol::future::or(test, deadline));
    assert_eq!(
        imp.started.load(Ordering::SeqCst) as u64,
        2 * CONNECTIONS * CALLS
    );
}
