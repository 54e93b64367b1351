//! A loopback TCP relay that a test can close: cuts a client off its server
//! without stopping the server.

use std::sync::{Arc, Mutex};

use tokio::net::{TcpListener, TcpStream};
use tokio::task::AbortHandle;

/// Relays connections from its own port to `127.0.0.1:<target>` while open.
pub struct Gate {
    port: u16,
    state: Arc<Mutex<GateState>>,
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
        let accept = tokio::spawn(accept_loop(listener, target, state.clone())).abort_handle();
        Gate {
            port,
            state,
            accept,
        }
    }

    /// The gate's own port: connect here instead of the target.
    pub fn port(&self) -> u16 {
        self.port
    }

    /// Closes every relayed connection and refuses new ones until
    /// [`restore`](Gate::restore).
    pub fn cut(&self) {
        let mut state = self.state.lock().unwrap();
        state.open = false;
        for relay in state.relays.drain(..) {
            relay.abort();
        }
    }

    /// Relays new connections again.
    pub fn restore(&self) {
        self.state.lock().unwrap().open = true;
    }
}

impl Drop for Gate {
    fn drop(&mut self) {
        self.cut();
        self.accept.abort();
    }
}

async fn accept_loop(listener: TcpListener, target: u16, state: Arc<Mutex<GateState>>) {
    while let Ok((inbound, _)) = listener.accept().await {
        if !state.lock().unwrap().open {
            drop(inbound);
            continue;
        }
        let relay = tokio::spawn(relay(inbound, target)).abort_handle();
        let mut state = state.lock().unwrap();
        if state.open {
            state.relays.retain(|r| !r.is_finished());
            state.relays.push(relay);
        } else {
            relay.abort();
        }
    }
}

async fn relay(mut inbound: TcpStream, target: u16) {
    if let Ok(mut outbound) = TcpStream::connect(("127.0.0.1", target)).await {
        let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
    }
}
