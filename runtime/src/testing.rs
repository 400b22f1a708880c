//! Manager doubles for users' own tests: [`Recorder`] records every enter
//! and exit, and the outcome each exit saw. [`Recorder::manager`] lends an
//! id; [`Recorder::lending`] lends `&mut T` to a value the test chooses (a
//! fake connection) and can be told to fail or panic at enter or exit
//! ([`Fake`]), so a service's cleanup paths can be tested without a real
//! resource.
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
use std::fmt;
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

    fn next_id(&self) -> usize {
        let mut record = self.record();
        let id = record.made;
        record.made += 1;
        id
    }

    fn push(&self, event: Event) {
        self.record().events.push(event);
    }

    /// A new manager recording into this recorder. It lends the block its id.
    #[must_use]
    pub fn manager(&self) -> Recording {
        Recording {
            id: self.next_id(),
            recorder: self.clone(),
            panic_at: None,
        }
    }

    /// A new manager recording into this recorder that lends the block
    /// `&mut value`: the fake connection or session a service under test
    /// is handed. Its error type is [`Injected`]; it fails or panics only
    /// when told to ([`Fake::fail_enter`] and its siblings).
    ///
    /// ```
    /// use async_contextlib::testing::{Injected, Recorder};
    /// use async_contextlib::{with_scope, Outcome};
    ///
    /// # futures::executor::block_on(async {
    /// let recorder = Recorder::new("db");
    /// let r: Result<usize, Injected> = with_scope!(recorder.lending(vec![1, 2]) as conn => {
    ///     conn.push(3);
    ///     Ok(conn.len())
    /// });
    /// assert_eq!(r.unwrap(), 3);
    ///
    /// // Told to fail at exit: the scope fails with the injected error.
    /// let r: Result<(), Injected> = with_scope!(recorder.lending(()).fail_exit() => { Ok(()) });
    /// assert_eq!(r.unwrap_err().to_string(), "db: injected exit failure");
    /// assert!(matches!(recorder.outcomes()[..], [Outcome::Success, Outcome::Success]));
    /// # });
    /// ```
    #[must_use]
    pub fn lending<T>(&self, value: T) -> Fake<T> {
        Fake {
            id: self.next_id(),
            recorder: self.clone(),
            value,
            fault: None,
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

/// Where a double misbehaves.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Stage {
    /// In its enter, after recording it.
    Enter,
    /// In its exit, after recording it.
    Exit,
}

impl Stage {
    fn label(self) -> &'static str {
        match self {
            Stage::Enter => "enter",
            Stage::Exit => "exit",
        }
    }
}

/// What a double does at the [`Stage`] it was told to misbehave at.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum Fault {
    Fail(Stage),
    Panic(Stage),
}

fn panic_injected(name: &str, stage: Stage) -> ! {
    panic!("{name}: injected {} panic", stage.label())
}

/// A manager made by [`Recorder::manager`]. It lends the block its id.
#[derive(Debug)]
pub struct Recording {
    id: usize,
    recorder: Recorder,
    panic_at: Option<Stage>,
}

impl Recording {
    /// Panics in its enter (after recording it): what a manager whose
    /// setup panics does to the scope around it.
    #[must_use]
    pub fn panic_enter(mut self) -> Recording {
        self.panic_at = Some(Stage::Enter);
        self
    }

    /// Panics in its exit (after recording it, with the outcome it saw).
    #[must_use]
    pub fn panic_exit(mut self) -> Recording {
        self.panic_at = Some(Stage::Exit);
        self
    }
}

impl AsyncContextManager for Recording {
    type Value<'a> = usize;
    type Error = Infallible;

    async fn enter(&mut self) -> Result<usize, Infallible> {
        self.recorder.push(Event::Enter { id: self.id });
        if self.panic_at == Some(Stage::Enter) {
            panic_injected(self.recorder.name, Stage::Enter);
        }
        Ok(self.id)
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        self.recorder.push(Event::Exit {
            id: self.id,
            outcome,
        });
        if self.panic_at == Some(Stage::Exit) {
            panic_injected(self.recorder.name, Stage::Exit);
        }
        Ok(())
    }

    fn name(&self) -> &'static str {
        self.recorder.name
    }
}

impl OwnedManager for Recording {}

crate::send_manager!(Recording);

/// A manager made by [`Recorder::lending`]: lends `&mut T`, records into its
/// recorder, and fails or panics where it was told to.
#[derive(Debug)]
pub struct Fake<T> {
    id: usize,
    recorder: Recorder,
    value: T,
    fault: Option<Fault>,
}

impl<T> Fake<T> {
    /// The lent value, as the block left it: enter `&mut fake` in the
    /// scope to keep the fake and read it afterwards.
    #[must_use]
    pub fn value(&self) -> &T {
        &self.value
    }

    /// The lent value, taken back.
    #[must_use]
    pub fn into_value(self) -> T {
        self.value
    }

    /// Fails its enter with [`Injected`] (after recording it): the block
    /// does not run, and no exit is recorded.
    #[must_use]
    pub fn fail_enter(self) -> Fake<T> {
        self.with_fault(Fault::Fail(Stage::Enter))
    }

    /// Fails its exit with [`Injected`] (after recording it).
    #[must_use]
    pub fn fail_exit(self) -> Fake<T> {
        self.with_fault(Fault::Fail(Stage::Exit))
    }

    /// Panics in its enter (after recording it).
    #[must_use]
    pub fn panic_enter(self) -> Fake<T> {
        self.with_fault(Fault::Panic(Stage::Enter))
    }

    /// Panics in its exit (after recording it).
    #[must_use]
    pub fn panic_exit(self) -> Fake<T> {
        self.with_fault(Fault::Panic(Stage::Exit))
    }

    fn with_fault(mut self, fault: Fault) -> Fake<T> {
        self.fault = Some(fault);
        self
    }

    fn misbehave(&self, stage: Stage) -> Result<(), Injected> {
        match self.fault {
            Some(Fault::Fail(at)) if at == stage => Err(Injected {
                name: self.recorder.name,
                stage,
            }),
            Some(Fault::Panic(at)) if at == stage => panic_injected(self.recorder.name, stage),
            _ => Ok(()),
        }
    }
}

impl<T> AsyncContextManager for Fake<T> {
    type Value<'a>
        = &'a mut T
    where
        T: 'a;
    type Error = Injected;

    async fn enter(&mut self) -> Result<&mut T, Injected> {
        self.recorder.push(Event::Enter { id: self.id });
        self.misbehave(Stage::Enter)?;
        Ok(&mut self.value)
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), Injected> {
        self.recorder.push(Event::Exit {
            id: self.id,
            outcome,
        });
        self.misbehave(Stage::Exit)
    }

    fn name(&self) -> &'static str {
        self.recorder.name
    }
}

impl<T: 'static> OwnedManager for Fake<T> {}

impl<T: Send> crate::SendManager for Fake<T> {
    async fn exit_owned(mut self, outcome: Outcome) -> Result<(), Injected> {
        self.exit(outcome).await
    }
}

/// The error a [`Fake`] told to fail returns: names the recorder and the
/// stage.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Injected {
    name: &'static str,
    stage: Stage,
}

impl Injected {
    /// Where it was injected.
    #[must_use]
    pub fn stage(&self) -> Stage {
        self.stage
    }
}

impl fmt::Display for Injected {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}: injected {} failure", self.name, self.stage.label())
    }
}

impl std::error::Error for Injected {}
