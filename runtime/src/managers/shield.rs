//! `shield`: a future the caller's cancellation cannot cut.

use std::convert::Infallible;
use std::future::Future;
use std::panic::{AssertUnwindSafe, catch_unwind, resume_unwind};
use std::pin::Pin;
use std::task::{Context, Poll};

use crate::driver::{Job, JobKind, cascade};

/// Runs `fut` so that the caller's cancellation cannot cut it (Python's
/// `asyncio.shield`): awaited, it is polled in place; dropped before it
/// finishes, the exit driver finishes it, and [`drain`](crate::drain) waits
/// for it. Its output is then discarded.
///
/// Why only a `'static + Send` future, not a shielded *block* (trio's
/// `CancelScope(shield=True)` over borrowed locals): a block that borrows
/// the caller's frame cannot be finished after the caller's future is
/// dropped — the borrows end with the drop, so the driver would be running
/// code over freed locals. The only sound alternative, finishing the block
/// before the drop returns, is what the library already does for a
/// borrowing manager's exit (in place, bounded, abandoned where it cannot
/// block), and exits are shielded already: put cleanup that must not be
/// cut in an exit, or move what the work needs into the future given here.
/// The cancel scopes [`move_on_after`](crate::move_on_after),
/// [`timeout`](crate::timeout) and [`cancelled_by`](crate::cancelled_by)
/// do not reach into a shielded future either: it goes on after their cut.
///
/// ```
/// # #[tokio::main(flavor = "current_thread")] async fn main() {
/// use std::sync::atomic::{AtomicBool, Ordering};
/// use std::sync::Arc;
/// use std::time::Duration;
///
/// let flushed = Arc::new(AtomicBool::new(false));
/// let f = flushed.clone();
/// let work = async_contextlib::shield(async move {
///     tokio::time::sleep(Duration::from_millis(5)).await;
///     f.store(true, Ordering::SeqCst);
/// });
/// // Cut after 1 ms: the shielded work goes on without us.
/// let _ = tokio::time::timeout(Duration::from_millis(1), work).await;
/// async_contextlib::drain().await;
/// assert!(flushed.load(Ordering::SeqCst));
/// # }
/// ```
pub fn shield<F>(fut: F) -> Shield<F>
where
    F: Future + Send + 'static,
{
    Shield {
        fut: Some(Box::pin(fut)),
    }
}

/// The future returned by [`shield`].
#[must_use = "a shielded future does nothing until awaited or dropped"]
#[derive(Debug)]
pub struct Shield<F: Future + Send + 'static> {
    fut: Option<Pin<Box<F>>>,
}

impl<F: Future + Send + 'static> Future for Shield<F> {
    type Output = F::Output;

    fn poll(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<F::Output> {
        let fut = self
            .fut
            .as_mut()
            .expect("async-contextlib: shield polled after it finished");
        match catch_unwind(AssertUnwindSafe(|| fut.as_mut().poll(cx))) {
            Ok(Poll::Pending) => Poll::Pending,
            Ok(Poll::Ready(out)) => {
                self.fut = None;
                Poll::Ready(out)
            }
            // It panicked where it was awaited: the panic goes to the
            // awaiting task, and the spent future must not be handed to
            // the driver as unfinished work (polled again, it would run
            // its side effects twice).
            Err(payload) => {
                self.fut = None;
                resume_unwind(payload)
            }
        }
    }
}

impl<F: Future + Send + 'static> Drop for Shield<F> {
    fn drop(&mut self) {
        if let Some(fut) = self.fut.take() {
            // Beside whatever is being dropped now (a scope it is in), or at once.
            let job = Job::new("async_contextlib::shield", JobKind::Shield, async move {
                fut.await;
                Ok::<(), Infallible>(())
            });
            cascade::push_child(job.into_node());
        }
    }
}
