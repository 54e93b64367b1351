//! Skipping reads that would only block again.
//!
//! A driver is woken by its transport and by its own side (a caller queued a
//! request, a handler finished). Polling the transport for bytes after a wake
//! of the second kind costs a read syscall that fails with "would block" (and,
//! on some reactors, a re-registration). So the driver hands the transport a
//! waker of its own that records "the transport has news" before waking the
//! task, and reads only when it has, or when the last read did not block.

use alloc::sync::Arc;
use alloc::task::Wake;
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};

use futures_util::task::AtomicWaker;

use crate::framing::FrameReader;
use crate::io::Transport;

pub(crate) struct ReadReadiness {
    flag: Arc<Flag>,
    /// Given to the transport's `poll_read`.
    waker: Waker,
}

struct Flag {
    /// The last read did not return `Pending`, or the transport woke us
    /// since it did.
    ready: AtomicBool,
    task: AtomicWaker,
}

impl Wake for Flag {
    fn wake(self: Arc<Self>) {
        self.wake_by_ref();
    }

    fn wake_by_ref(self: &Arc<Self>) {
        self.ready.store(true, Ordering::Release);
        self.task.wake();
    }
}

impl ReadReadiness {
    pub(crate) fn new() -> Self {
        let flag = Arc::new(Flag {
            ready: AtomicBool::new(true),
            task: AtomicWaker::new(),
        });
        let waker = Waker::from(flag.clone());
        ReadReadiness { flag, waker }
    }

    /// [`FrameReader::poll_fill`], or `Pending` at once when the transport has
    /// not signalled anything since its last `Pending` (its registration from
    /// that read still stands, and wakes `task` through the flag).
    pub(crate) fn poll_fill<T: Transport + ?Sized>(
        &self,
        reader: &mut FrameReader,
        io: &mut T,
        task: &Waker,
    ) -> Poll<Result<usize, T::Error>> {
        self.flag.task.register(task);
        if !self.flag.ready.swap(false, Ordering::AcqRel) {
            return Poll::Pending;
        }
        let result = reader.poll_fill(io, &mut Context::from_waker(&self.waker));
        if result.is_ready() {
            self.flag.ready.store(true, Ordering::Release);
        }
        result
    }
}
