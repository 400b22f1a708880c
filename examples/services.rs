//! Dependency injection, as in the seeds' "protocol + service" pattern: a
//! service is given a session manager behind a trait, whose method returns
//! a `BoxManager` (a manager type written in one line). In production it is
//! an embedded SQLite database; under test, `testing::Recorder` stands in
//! for it, lends a fake session the test fills, and is told to fail, so the
//! service's error and cleanup paths are checked without a database.
//!
//! Run with `cargo run --example services`.

use std::sync::Arc;
use std::sync::atomic::{AtomicU64, Ordering};

use async_contextlib::testing::{Injected, Recorder};
use async_contextlib::{
    BoxManager, Outcome, async_context_manager, box_manager, with_scope, yield_,
};
use rusqlite::Connection;
use tokio::sync::Mutex;

/// What a session can do, for the service.
trait Session: Send {
    fn run(&mut self, query: &str) -> Result<Vec<String>, DbError>;
}

/// The domain's interface (Python's `ISessionManager(Protocol)`).
trait SessionManager: Send + Sync {
    type Session: Session + 'static;
    fn create_session(&self) -> BoxManager<Self::Session, DbError>;
}

#[derive(Debug)]
#[allow(dead_code, reason = "read through Debug when printed")]
enum DbError {
    Sqlite(rusqlite::Error),
    Injected(Injected),
}

impl From<rusqlite::Error> for DbError {
    fn from(e: rusqlite::Error) -> Self {
        DbError::Sqlite(e)
    }
}

impl From<Injected> for DbError {
    fn from(e: Injected) -> Self {
        DbError::Injected(e)
    }
}

/// The application layer: uses only the interface.
struct CodeSearchService<M> {
    sessions: M,
}

impl<M: SessionManager> CodeSearchService<M> {
    async fn search(&self, pattern: &str) -> Result<Vec<String>, DbError> {
        with_scope!(self.sessions.create_session() as session => {
            let names = session.run(pattern)?;
            tokio::task::yield_now().await;
            Ok(names)
        })
    }
}

// ---- Infrastructure: SQLite ------------------------------------------------

#[derive(Default)]
struct Metrics {
    opened: AtomicU64,
    closed: AtomicU64,
}

struct SqliteSession {
    conn: tokio::sync::OwnedMutexGuard<Connection>,
}

impl Session for SqliteSession {
    fn run(&mut self, pattern: &str) -> Result<Vec<String>, DbError> {
        let mut stmt = self
            .conn
            .prepare("SELECT name FROM entities WHERE name LIKE ?1 ORDER BY name")?;
        let rows = stmt.query_map([pattern], |r| r.get(0))?;
        Ok(rows.collect::<Result<_, _>>()?)
    }
}

/// The seeds' `injected_manager(settings, driver, metrics)`: everything it
/// needs is passed in; the session is closed (here: the connection handed
/// back) on every path, and the metrics see both ends.
#[async_context_manager]
async fn sqlite_session(
    db: Arc<Mutex<Connection>>,
    metrics: Option<Arc<Metrics>>,
) -> Result<&mut SqliteSession, DbError> {
    let mut session = SqliteSession {
        conn: db.lock_owned().await,
    };
    if let Some(m) = &metrics {
        m.opened.fetch_add(1, Ordering::Relaxed);
    }
    yield_!(&mut session);
    if let Some(m) = &metrics {
        m.closed.fetch_add(1, Ordering::Relaxed);
    }
}

struct SqliteSessions {
    db: Arc<Mutex<Connection>>,
    metrics: Arc<Metrics>,
}

impl SessionManager for SqliteSessions {
    type Session = SqliteSession;
    fn create_session(&self) -> BoxManager<SqliteSession, DbError> {
        box_manager!(sqlite_session(self.db.clone(), Some(self.metrics.clone())))
    }
}

// ---- Tests' doubles: Recorder ---------------------------------------------

/// A fake session: answers with the rows the test chose.
struct FakeSession {
    rows: Vec<String>,
}

impl Session for FakeSession {
    fn run(&mut self, _: &str) -> Result<Vec<String>, DbError> {
        Ok(self.rows.clone())
    }
}

struct FakeSessions {
    recorder: Recorder,
    fail_close: bool,
}

impl SessionManager for FakeSessions {
    type Session = FakeSession;
    fn create_session(&self) -> BoxManager<FakeSession, DbError> {
        let fake = self.recorder.lending(FakeSession {
            rows: vec!["fake::row".into()],
        });
        if self.fail_close {
            box_manager!(Converted(fake.fail_exit()))
        } else {
            box_manager!(Converted(fake))
        }
    }
}

/// A `Fake` whose `Injected` error is seen as the service's `DbError`.
struct Converted<M>(M);

impl<M: async_contextlib::AsyncContextManager<Error = Injected> + Send>
    async_contextlib::AsyncContextManager for Converted<M>
{
    type Value<'a>
        = M::Value<'a>
    where
        Self: 'a;
    type Error = DbError;
    async fn enter(&mut self) -> Result<M::Value<'_>, DbError> {
        Ok(self.0.enter().await?)
    }
    async fn exit(&mut self, outcome: Outcome) -> Result<(), DbError> {
        Ok(self.0.exit(outcome).await?)
    }
    fn name(&self) -> &'static str {
        self.0.name()
    }
}

/// Drops `search` after its first poll (a caller that moved on, as
/// `select!` or a timeout does); `true` if it was cut.
async fn cut_after_first_poll<F: std::future::Future>(search: F) -> bool {
    tokio::select! {
        biased;
        _ = search => false,
        () = std::future::ready(()) => true,
    }
}

#[tokio::main]
async fn main() -> Result<(), DbError> {
    // Production wiring.
    let conn = Connection::open_in_memory()?;
    conn.execute_batch(
        "CREATE TABLE entities (name TEXT);
         INSERT INTO entities VALUES ('pool::acquire'), ('pool::release'), ('tx::commit');",
    )?;
    let metrics = Arc::new(Metrics::default());
    let service = CodeSearchService {
        sessions: SqliteSessions {
            db: Arc::new(Mutex::new(conn)),
            metrics: metrics.clone(),
        },
    };
    let found = service.search("pool::%").await?;
    println!("sqlite: {found:?}");
    assert_eq!(found, ["pool::acquire", "pool::release"]);
    // A search cut mid-session still closes it (the exit runs on the driver).
    assert!(cut_after_first_poll(service.search("%")).await);
    async_contextlib::drain().await;
    let (opened, closed) = (
        metrics.opened.load(Ordering::Relaxed),
        metrics.closed.load(Ordering::Relaxed),
    );
    println!("sqlite: sessions opened {opened}, closed {closed}");
    assert_eq!(opened, closed);

    // Under test: the same service over Recorder's fakes.
    let recorder = Recorder::new("fake-db");
    let service = CodeSearchService {
        sessions: FakeSessions {
            recorder: recorder.clone(),
            fail_close: false,
        },
    };
    assert_eq!(service.search("x").await?, ["fake::row"]);

    let failing = CodeSearchService {
        sessions: FakeSessions {
            recorder: recorder.clone(),
            fail_close: true,
        },
    };
    let err = failing.search("x").await.unwrap_err();
    println!("fake: a session that fails to close -> {err:?}");
    assert!(matches!(err, DbError::Injected(_)));

    assert!(cut_after_first_poll(service.search("x")).await);
    async_contextlib::drain().await;
    let outcomes: Vec<_> = recorder.outcomes().iter().map(Outcome::label).collect();
    println!("fake: exits saw {outcomes:?}");
    assert_eq!(outcomes, ["success", "success", "cancelled"]);

    let stats = async_contextlib::stats();
    println!("{stats:?}");
    assert_eq!(stats.active, 0);
    Ok(())
}
