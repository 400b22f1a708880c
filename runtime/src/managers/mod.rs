//! The library's own managers: `timeout`/`deadline`/`enter_timeout`,
//! `shield`, and the small adapters from Python's `contextlib`
//! (`nullcontext`, `closing`, `from_sync`), `ExitStack`, and locks and
//! semaphores (`locked`, `read_locked`, `write_locked`, `acquired`).

pub(crate) mod adapters;
pub(crate) mod from_sync;
pub(crate) mod shield;
pub(crate) mod stack;
pub(crate) mod sync;
pub(crate) mod timeout;
