//! Handlers run as tasks of a [`Spawn`](super::Spawn)er: the task wrapper
//! and the reply it sends back to the driver.

use alloc::boxed::Box;
use alloc::sync::Arc;
use alloc::vec::Vec;
use core::future::Future;
use core::pin::Pin;

use futures_util::future::AbortHandle;

use super::handlers::WakeQueue;
use super::service::{poll_guarded, Reply, Respond};

/// A spawned handler's encoded reply, for the slot it was launched from.
pub(super) struct RemoteReply {
    pub(super) index: u32,
    pub(super) generation: u32,
    pub(super) frame: Vec<u8>,
}

/// Where a spawned handler's reply goes.
pub(super) struct ReplyTo {
    pub(super) queue: Arc<WakeQueue>,
    pub(super) index: u32,
    pub(super) generation: u32,
}

/// Wraps a handler into a task for a spawner: it encodes its reply into its
/// own buffer and hands it back to the driver through the wake queue.
pub(super) fn remote_task(
    mut handler: Pin<Box<dyn Respond + Send>>,
    reply_to: ReplyTo,
    id: u32,
    max_frame: usize,
) -> (Pin<Box<dyn Future<Output = ()> + Send>>, AbortHandle) {
    let (abort, registration) = AbortHandle::new_pair();
    let task = async move {
        let mut frame = Vec::new();
        let run = core::future::poll_fn(|cx| {
            let mut reply = Reply {
                out: &mut frame,
                id,
                max_frame,
                credit: 0,
                room: true,
                blocked: false,
            };
            poll_guarded(handler.as_mut(), cx, &mut reply)
        });
        if futures_util::future::Abortable::new(run, registration)
            .await
            .is_ok()
        {
            reply_to.queue.push_done(RemoteReply {
                index: reply_to.index,
                generation: reply_to.generation,
                frame,
            });
        }
    };
    (Box::pin(task), abort)
}
