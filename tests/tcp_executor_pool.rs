//! courier-tcp served and called through an `ExecutorPool`: each accepted
//! connection and its handlers on one pool thread, connections spread over
//! the threads, each client's driver and callers on one thread.

use courier_tcp::{ExecutorPool, Worker};

/// Reports where its handler ran.
#[courier::service]
pub trait Whereabouts {
    /// The name of the thread the handler runs on.
    async fn thread(&self) -> String;
}

#[derive(Clone, Copy)]
struct WhereaboutsImpl;

impl Whereabouts for WhereaboutsImpl {
    async fn thread(&self) -> String {
        thread_name()
    }
}

fn thread_name() -> String {
    std::thread::current().name().unwrap_or("").to_string()
}

#[test]
fn connections_spread_over_the_pool_and_stay_on_their_thread() {
    let pool = ExecutorPool::new(2).unwrap();
    let listener = async_io::block_on(courier_tcp::TcpListener::bind("127.0.0.1:0")).unwrap();
    let addr = listener.local_addr().unwrap();
    let shutdown = courier::Shutdown::new();
    let serve = pool.spawn(
        courier_tcp::builder()
            .shutdown(shutdown.clone())
            .spawn_connections(pool.spawner())
            .serve(listener, WhereaboutsServer::new(WhereaboutsImpl)),
    );
    let mut seen = Vec::new();
    // Connected one after the other, so accepted in this order.
    for _ in 0..4 {
        let worker = pool.worker();
        let (client, driver) = async_io::block_on(courier_tcp::connect(addr)).unwrap();
        let driver = worker.spawn(driver);
        let client = WhereaboutsClient::new(client);
        let calls = worker.spawn(async move {
            let mut answers = Vec::new();
            for _ in 0..10 {
                answers.push((thread_name(), client.thread().await.unwrap()));
            }
            answers
        });
        let answers = async_io::block_on(calls);
        async_io::block_on(driver).unwrap();
        seen.push((worker, answers));
    }
    for (i, (worker, answers)) in seen.iter().enumerate() {
        let caller = format!("courier-pool-{}", worker.index());
        let server = format!("courier-pool-{}", i % 2);
        for (caller_thread, server_thread) in answers {
            assert_eq!(
                (caller_thread, server_thread),
                (&caller, &server),
                "{seen:?}"
            );
        }
    }
    shutdown.trigger();
    async_io::block_on(serve);
    assert!(Worker::current().is_none());
}
