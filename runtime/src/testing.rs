//! A manager double for users' own tests: [`Recorder`] records every enter
//! and exit, and the outcome each exit saw.
//!
//! ```
//! use async_contextlib::testing::{Event, Recorder};
//! use async_contextlib::with_scope;
//!
//! # futures::executor::block_on(async {
//! let recorder = Recorder::new("db");
//! let r: Result<(), &str> = with_scope!(recorder.manager() => { Err("boom") });
//! assert!(r.is_err());
//! assert_eq!(recorder.enters(), 1);
//! let outcomes = recorder.outcomes();
//! assert_eq!(outcomes.len(), 1);
//! assert_eq!(outcomes[0].failure().unwrap().message(), "boom");
//! assert!(matches!(recorder.events()[0], Event::Enter { .. }));
//! # });
//! ```

use std::convert::Infallible;
use std::sync::{Arc, Mutex, PoisonError};

use crate::{AsyncContextManager, Outcome, OwnedManager};

/// What a [`Recorder`]'s managers did, in order.
#[derive(Clone, Debug)]
pub enum Event {
    /// A manager was entered; `id` counts managers made by this recorder.
    Enter {
        /// Which manager (0 for the first made by [`Recorder::manager`]).
        id: usize,
    },
    /// A manager exited with this outcome.
    Exit {
        /// Which manager.
        id: usize,
        /// What its exit saw.
        outcome: Outcome,
    },
}

/// Makes recording managers and reads what they recorded. Clones share the
/// record.
#[derive(Clone, Debug)]
pub struct Recorder {
    name: &'static str,
    inner: Arc<Mutex<Record>>,
}

#[derive(Debug, Default)]
struct Record {
    events: Vec<Event>,
    made: usize,
}

impl Recorder {
    /// A recorder whose managers report `name` (in `tracing` events).
    #[must_use]
    pub fn new(name: &'static str) -> Recorder {
        Recorder {
            name,
            inner: Arc::default(),
        }
    }

    fn record(&self) -> std::sync::MutexGuard<'_, Record> {
        self.inner.lock().unwrap_or_else(PoisonError::into_inner)
    }

    /// A new manager recording into this recorder. It lends the block its id.
    #[must_use]
    pub fn manager(&self) -> Recording {
        let mut record = self.record();
        let id = record.made;
        record.made += 1;
        Recording {
            id,
            recorder: self.clone(),
        }
    }

    /// Everything recorded so far, in order.
    #[must_use]
    pub fn events(&self) -> Vec<Event> {
        self.record().events.clone()
    }

    /// How many enters were recorded.
    #[must_use]
    pub fn enters(&self) -> usize {
        self.record()
            .events
            .iter()
            .filter(|e| matches!(e, Event::Enter { .. }))
            .count()
    }

    /// The outcomes the exits saw, in the order they exited.
    #[must_use]
    pub fn outcomes(&self) -> Vec<Outcome> {
        self.record()
            .events
            .iter()
            .filter_map(|e| match e {
                Event::Exit { outcome, .. } => Some(outcome.clone()),
                Event::Enter { .. } => None,
            })
            .collect()
    }
}

/// A manager made by [`Recorder::manager`].
#[derive(Debug)]
pub struct Recording {
    id: usize,
    recorder: Recorder,
}

impl AsyncContextManager for Recording {
    type Value<'a> = usize;
    type Error = Infallible;

    async fn enter(&mut self) -> Result<usize, Infallible> {
        self.recorder
            .record()
            .events
            .push(Event::Enter { id: self.id });
        Ok(self.id)
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        self.recorder.record().events.push(Event::Exit {
            id: self.id,
            outcome,
        });
        Ok(())
    }

    fn name(&self) -> &'static str {
        self.recorder.name
    }
}

impl OwnedManager for Recording {}

crate::send_manager!(Recording);
