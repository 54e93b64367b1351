//! Per-endpoint numbers a user can read.

use std::time::Duration;

use courier_registry::Address;

/// Where an endpoint's connection stands.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum ConnectionStatus {
    /// Being dialled.
    Connecting,
    /// Connected: calls may go there.
    Ready,
    /// The last dial failed or the connection ended; dialled again at
    /// `retry_at` on the balancer's clock.
    Down {
        /// When the next dial starts.
        retry_at: Duration,
    },
}

/// One endpoint's state and counters, as [`Balanced::endpoints`](crate::Balanced::endpoints) reads them.
#[derive(Clone, Debug, PartialEq)]
pub struct EndpointStats {
    /// The instance's name.
    pub instance: String,
    /// Its address.
    pub address: Address,
    /// Its weight.
    pub weight: u32,
    /// Its connection.
    pub connection: ConnectionStatus,
    /// Unary calls in flight on it now.
    pub in_flight: u32,
    /// Its peak-EWMA round-trip estimate now (see [`load`](crate::load)).
    pub latency: Duration,
    /// Attempts sent to it since it joined.
    pub calls: u64,
    /// Attempts and dials that failed by its fault (see
    /// [`Ejection`](crate::Ejection)).
    pub failures: u64,
    /// Failures since its last success.
    pub consecutive_failures: u32,
    /// Until when it is ejected, if it is.
    pub ejected_until: Option<Duration>,
}

impl EndpointStats {
    /// Whether it is ejected now.
    pub fn is_ejected(&self) -> bool {
        self.ejected_until.is_some()
    }
}
