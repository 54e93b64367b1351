//! The tokio runtime's spawner for [`ServeBuilder`](crate::ServeBuilder);
//! feature `tokio`.

use ::tokio::runtime::{Handle, RuntimeFlavor};

use crate::SpawnEach;

/// Spawns each connection on the tokio runtime this is called in, if it is
/// a multi-thread runtime, so that connections spread over its worker
/// threads. Outside a runtime, and on a current-thread runtime (one thread:
/// spawning would only add a task hand-off per connection), connections
/// run inside the [`Serve`](crate::Serve) future instead.
pub fn runtime_spawner() -> SpawnEach {
    match Handle::try_current() {
        Ok(handle) if handle.runtime_flavor() == RuntimeFlavor::MultiThread => {
            SpawnEach::new(move |task| {
                // The task ends with its connection; the `Serve` future
                // keeps an abort handle, not the join handle.
                drop(handle.spawn(task));
            })
        }
        _ => SpawnEach::none(),
    }
}
