//! The library's own managers: `timeout`/`deadline`/`enter_timeout`,
//! `shield`, and the small adapters from Python's `contextlib`
//! (`nullcontext`, `closing`, `from_sync`), `ExitStack`, and `TaskGroup`
//! (Python's `asyncio.TaskGroup`).

pub(crate) mod adapters;
pub(crate) mod boxed;
pub(crate) mod from_sync;
pub(crate) mod shield;
pub(crate) mod stack;
pub(crate) mod task_group;
pub(crate) mod timeout;
