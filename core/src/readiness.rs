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
#[cfg(not(all(test, shuttle)))]
use core::sync::atomic::{AtomicBool, Ordering};
use core::task::{Context, Poll, Waker};
// Under `--cfg shuttle` the flag is shuttle's, so the model below explores
// every interleaving of the flag protocol with a transport on another
// thread.
#[cfg(all(test, shuttle))]
use shuttle::sync::atomic::{AtomicBool, Ordering};

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

/// Model check of the flag protocol with `shuttle` (exhaustive search of
/// thread interleavings): a transport that becomes readable on another
/// thread while the driver polls (twice) is either read, or has woken the
/// driver's task and is read by the next poll — a wake is never lost
/// between the flag swap and the transport's registration. Run with
/// `RUSTFLAGS="--cfg shuttle" cargo test -p courier --lib readiness`.
///
/// (loom 0.7.3 was tried first: on this toolchain it loses a plain store
/// that a later swap must see, so its verdicts cannot be trusted.)
#[cfg(all(test, shuttle))]
mod model {
    extern crate std;

    use super::*;
    use shuttle::sync::Mutex;
    use std::format;
    use std::string::String;
    use std::vec::Vec;

    /// A one-byte pipe whose reader registers before it re-checks, as a
    /// correct transport does.
    struct Pipe {
        data: AtomicBool,
        waker: Mutex<Option<Waker>>,
    }

    struct PipeEnd(Arc<Pipe>);

    impl Transport for PipeEnd {
        type Error = core::convert::Infallible;
        fn poll_read(
            &mut self,
            cx: &mut Context<'_>,
            buf: &mut [u8],
        ) -> Poll<Result<usize, Self::Error>> {
            if self.0.data.swap(false, Ordering::AcqRel) {
                buf[0] = 1;
                return Poll::Ready(Ok(1));
            }
            let previous = self.0.waker.lock().unwrap().replace(cx.waker().clone());
            drop(previous);
            if self.0.data.swap(false, Ordering::AcqRel) {
                buf[0] = 1;
                return Poll::Ready(Ok(1));
            }
            Poll::Pending
        }
        fn poll_write(
            &mut self,
            _: &mut Context<'_>,
            b: &[u8],
        ) -> Poll<Result<usize, Self::Error>> {
            Poll::Ready(Ok(b.len()))
        }
        fn poll_flush(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
        fn poll_close(&mut self, _: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
            Poll::Ready(Ok(()))
        }
    }

    /// The driver's task: records that it was woken.
    struct Task(AtomicBool);

    impl Wake for Task {
        fn wake(self: Arc<Self>) {
            self.0.store(true, Ordering::Release);
        }
    }

    /// One run: the driver polls `polls` times while the producer writes
    /// its byte and fires the transport's waker.
    fn run(polls: usize) {
        let pipe = Arc::new(Pipe {
            data: AtomicBool::new(false),
            waker: Mutex::new(None),
        });
        let producer = {
            let pipe = pipe.clone();
            shuttle::thread::spawn(move || {
                pipe.data.store(true, Ordering::Release);
                let waker = pipe.waker.lock().unwrap().take();
                if let Some(waker) = waker {
                    waker.wake();
                }
            })
        };
        let readiness = ReadReadiness::new();
        let task = Arc::new(Task(AtomicBool::new(false)));
        let waker = Waker::from(task.clone());
        let mut reader = FrameReader::new(64);
        let mut io = PipeEnd(pipe.clone());
        let mut seen: Vec<String> = Vec::new();
        let mut read = false;
        for _ in 0..polls {
            let poll = readiness.poll_fill(&mut reader, &mut io, &waker);
            seen.push(format!("{poll:?}"));
            if matches!(poll, Poll::Ready(Ok(1))) {
                read = true;
                break;
            }
        }
        producer.join().unwrap();
        if read {
            return;
        }
        assert!(
            task.0.load(Ordering::Acquire),
            "after {seen:?} the byte arrived, nothing read it and the task was not woken"
        );
        let again = readiness.poll_fill(&mut reader, &mut io, &waker);
        assert!(
            matches!(again, Poll::Ready(Ok(1))),
            "woken after {seen:?}, the next poll gave {again:?}"
        );
    }

    #[test]
    fn a_transport_wake_is_never_lost() {
        for polls in 1..=3 {
            shuttle::check_dfs(move || run(polls), None);
        }
    }

    /// The check can fail: a reader that skips the read whenever the flag
    /// is down, without ever setting it from the transport's wake, loses
    /// the byte in some interleaving (shuttle must find it).
    #[test]
    fn the_model_catches_a_lost_wake() {
        let found = std::panic::catch_unwind(|| {
            shuttle::check_dfs(
                || {
                    let flag = Arc::new(AtomicBool::new(false));
                    let data = Arc::new(AtomicBool::new(false));
                    let producer = {
                        let data = data.clone();
                        shuttle::thread::spawn(move || data.store(true, Ordering::Release))
                    };
                    // Broken: reads only if the flag is up; nobody raises it.
                    let read = flag.swap(false, Ordering::AcqRel) && data.load(Ordering::Acquire);
                    producer.join().unwrap();
                    assert!(read || !data.load(Ordering::Acquire), "byte lost");
                },
                None,
            )
        });
        assert!(found.is_err());
    }
}
