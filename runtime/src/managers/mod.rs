//! The library's own managers: `timeout`/`deadline`/`enter_timeout`,
//! `shield`, and the small adapters from Python's `contextlib`
//! (`nullcontext`, `closing`, `from_sync`), `ExitStack`, `TaskGroup`
//! (Python's `asyncio.TaskGroup`), locks and semaphores (`locked`,
//! `read_locked`, `write_locked`, `acquired`), `move_on_after`/`move_on_at`
//! and `cancelled_by` (cancel scopes), and `BoxManager`.

pub(crate) mod adapters;
pub(crate) mod boxed;
pub(crate) mod cancel;
pub(crate) mod from_sync;
pub(crate) mod shield;
pub(crate) mod stack;
pub(crate) mod sync;
pub(crate) mod task_group;
pub(crate) mod timeout;
