//! A loopback TCP relay that a test can close or freeze: cuts a client off
//! its server without stopping the server.

use std::sync::{Arc, Mutex};

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::tcp::{OwnedReadHalf, OwnedWriteHalf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::AbortHandle;

/// Relays connections from its own port to `127.0.0.1:<target>`.
pub struct Gate {
    port: u16,
    state: Arc<Mutex<GateState>>,
    frozen: watch::Sender<bool>,
    accept: AbortHandle,
}

struct GateState {
    open: bool,
    relays: Vec<AbortHandle>,
}

impl Gate {
    /// A gate to `127.0.0.1:<target>`, open.
    pub async fn start(target: u16) -> Gate {
        let listener = TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind the gate");
        let port = listener.local_addr().expect("gate address").port();
        let state = Arc::new(Mutex::new(GateState {
            open: true,
            relays: Vec::new(),
        }));
        let (frozen, thawed) = watch::channel(false);
        let accept =
            tokio::spawn(accept_loop(listener, target, state.clone(), thawed)).abort_handle();
        Gate {
            port,
            state,
            frozen,
            accept,
        }
    }

    /// The gate's own port: connect here instead of the target.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every relayed connection and refuses new ones until
    /// [`restore`](Gate::restore): a partition the client notices at once.
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.open = false;
        for relay in state.relays.drain(..) {
            relay.abort();
        }
    }

    /// Stops relaying bytes, in both directions, on every connection (new
    /// ones included) but closes nothing until [`restore`](Gate::restore):
    /// a silent partition, which only a timeout or keep-alive notices.
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Relays again: new connections are accepted, frozen ones go on.
    pub fn restore(&self) {
        self.state.lock().unwrap().open = true;
        self.frozen.send_replace(false);
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

async fn accept_loop(
    listener: TcpListener,
    target: u16,
    state: Arc<Mutex<GateState>>,
    frozen: watch::Receiver<bool>,
) {
    while let Ok((inbound, _)) = listener.accept().await {
        if !state.lock().unwrap().open {
            drop(inbound);
            continue;
        }
        let relay = tokio::spawn(relay(inbound, target, frozen.clone())).abort_handle();
        let mut state = state.lock().unwrap();
        if state.open {
            state.relays.retain(|r| !r.is_finished());
            state.relays.push(relay);
        } else {
            relay.abort();
        }
    }
}

async fn relay(inbound: TcpStream, target: u16, frozen: watch::Receiver<bool>) {
    let Ok(outbound) = TcpStream::connect(("127.0.0.1", target)).await else {
        return;
    };
    let (in_read, in_write) = inbound.into_split();
    let (out_read, out_write) = outbound.into_split();
    // Either direction ending ends the relay (dropping both sockets).
    tokio::select! {
        _ = pump(in_read, out_write, frozen.clone()) => {}
        _ = pump(out_read, in_write, frozen) => {}
    }
}

/// Copies `from` to `to`, holding what it read while the gate is frozen.
async fn pump(mut from: OwnedReadHalf, mut to: OwnedWriteHalf, mut frozen: watch::Receiver<bool>) {
    let mut buf = vec![0u8; 16 * 1024];
    loop {
        let n = match from.read(&mut buf).await {
            Ok(0) | Err(_) => return,
            Ok(n) => n,
        };
        if frozen.wait_for(|frozen| !*frozen).await.is_err() {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
