//! How to unit-test a service without sockets: connect a client to it
//! through `courier-mem`, an in-memory byte pipe that goes through the real
//! wire format, and drive both ends on `futures::executor::block_on`.
//! In a crate, the body of `main` would be a `#[test]`.
//!
//! ```text
//! cargo run --example testing_in_memory
//! ```

use std::time::Duration;

use courier::{CallError, ClientBuilder, RemoteError, ServerBuilder};

/// A bank account.
#[courier::service]
pub trait Account {
    /// Deposits, returns the balance.
    async fn deposit(&self, amount: u64) -> u64;
    /// Withdraws, or fails with the balance that was too small.
    async fn withdraw(&self, amount: u64) -> Result<u64, Insufficient>;
}

/// Not enough money; carries the balance.
#[derive(Debug, PartialEq, serde::Serialize, serde::Deserialize, courier::Schema)]
pub struct Insufficient(u64);

#[derive(Default)]
struct Bank(std::sync::Mutex<u64>);

impl Account for Bank {
    async fn deposit(&self, amount: u64) -> u64 {
        let mut balance = self.0.lock().unwrap();
        *balance += amount;
        *balance
    }
    async fn withdraw(&self, amount: u64) -> Result<u64, Insufficient> {
        let mut balance = self.0.lock().unwrap();
        if *balance < amount {
            return Err(Insufficient(*balance));
        }
        *balance -= amount;
        Ok(*balance)
    }
}

/// Runs `body` against a fresh server over an in-memory pipe and checks that
/// both ends shut down cleanly.
fn with_account<F, Fut>(server: ServerBuilder, body: F)
where
    F: FnOnce(AccountClient) -> Fut,
    Fut: std::future::Future<Output = ()>,
{
    let (client_io, server_io) = courier_mem::pair(64 * 1024);
    let server = server.build(server_io, AccountServer::new(Bank::default()));
    let (client, driver) = ClientBuilder::new().build(client_io);
    let calls = body(AccountClient::new(client));
    futures::executor::block_on(async {
        let ((), driver, server) = futures::join!(calls, driver, server);
        driver.expect("client driver ends cleanly");
        server.expect("server ends cleanly");
    });
}

fn main() {
    // Values and application errors.
    with_account(ServerBuilder::new(), |account| async move {
        assert_eq!(account.deposit(100).await, Ok(100));
        assert_eq!(account.withdraw(30).await, Ok(Ok(70)));
        assert_eq!(account.withdraw(500).await, Ok(Err(Insufficient(70))));
    });
    println!("deposit / withdraw: ok");

    // Concurrent calls on one connection.
    with_account(ServerBuilder::new(), |account| async move {
        let deposits = (0..50).map(|_| account.deposit(2));
        let balances = futures::future::join_all(deposits).await;
        assert_eq!(balances.into_iter().map(Result::unwrap).max(), Some(100));
    });
    println!("50 concurrent deposits: ok");

    // Typed errors: a call whose deadline has already passed is refused by
    // the server without running the handler.
    with_account(ServerBuilder::new(), |account| async move {
        let expired = account.with_timeout(Duration::ZERO);
        assert_eq!(
            expired.deposit(1).await,
            Err(CallError::Remote(RemoteError::DeadlineExceeded))
        );
        assert_eq!(account.deposit(0).await, Ok(0), "the deposit never ran");
    });
    println!("expired deadline refused: ok");
    println!("all checks passed");
}
