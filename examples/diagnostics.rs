//! The run-time hooks of `async_contextlib::diagnostics`, each firing on a
//! small load: `cargo run --example diagnostics`.
//!
//! A toy service handles requests, each in a scope of three managers: a
//! connection from a pool, a transaction, and an audit log whose exit
//! writes with blocking file I/O (the mistake the blocking-poll warning
//! exists for). One request leaves its transaction open too long (the
//! held-scope warning). At the end the per-manager table is printed, as a
//! service would export it to its metrics system.

use std::convert::Infallible;
use std::io::Write as _;
use std::sync::Arc;
use std::time::Duration;

use async_contextlib::diagnostics;
use async_contextlib::{
    AsyncContextManager, Outcome, OwnedManager, async_context_manager, with_scope, yield_,
};
use tokio::sync::Semaphore;

/// A pool of `size` connections (ids), handed out and returned.
struct Pool {
    free: tokio::sync::Mutex<Vec<u32>>,
    permits: Semaphore,
}

impl Pool {
    fn new(size: u32) -> Arc<Pool> {
        Arc::new(Pool {
            free: tokio::sync::Mutex::new((0..size).collect()),
            permits: Semaphore::new(size as usize),
        })
    }
}

/// A connection from the pool, returned on every path.
#[async_context_manager]
async fn connection(pool: Arc<Pool>) -> u32 {
    let permit = pool
        .permits
        .acquire()
        .await
        .expect("the pool is never closed");
    let id = pool
        .free
        .lock()
        .await
        .pop()
        .expect("a permit means a connection");
    let _ = yield_!(id);
    pool.free.lock().await.push(id);
    drop(permit);
}

/// A transaction: commits on success, rolls back otherwise.
#[async_context_manager]
async fn transaction(conn: u32) {
    tokio::time::sleep(Duration::from_millis(1)).await;
    let outcome = yield_!(());
    let _ = (conn, outcome.is_success());
    tokio::time::sleep(Duration::from_millis(1)).await;
}

/// An audit log whose exit appends a line with blocking `std::fs` I/O and
/// a `sync_all` — the kind of call that stalls an executor thread.
struct Audit {
    file: std::path::PathBuf,
}

impl AsyncContextManager for Audit {
    type Value<'a> = ();
    type Error = Infallible;

    async fn enter(&mut self) -> Result<(), Infallible> {
        Ok(())
    }

    async fn exit(&mut self, outcome: Outcome) -> Result<(), Infallible> {
        let mut f = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.file)
            .expect("the audit file opens");
        writeln!(f, "request ended: {}", outcome.label()).expect("the audit line is written");
        f.sync_all().expect("the audit file syncs");
        // Make the stall visible even on a fast disk.
        std::thread::sleep(Duration::from_millis(15));
        Ok(())
    }

    fn name(&self) -> &'static str {
        "audit"
    }
}

impl OwnedManager for Audit {}

async fn request(pool: Arc<Pool>, audit: std::path::PathBuf, work: Duration) {
    with_scope!(connection(pool) as conn, transaction(conn), Audit { file: audit } => {
        tokio::time::sleep(work).await;
    });
}

#[tokio::main]
async fn main() {
    tracing_subscriber::fmt()
        .with_target(false)
        .with_max_level(tracing::Level::WARN)
        .with_ansi(false)
        .init();
    // The slow-exit warning (on by default) would repeat the blocking one.
    diagnostics::set_slow_exit_limit(Duration::from_millis(100));

    diagnostics::set_blocking_limit(Some(Duration::from_millis(10)));
    diagnostics::set_held_limit(Some(Duration::from_millis(200)));
    diagnostics::set_per_manager_stats(true);

    let dir = std::env::temp_dir().join(format!("acl-diagnostics-{}", std::process::id()));
    std::fs::create_dir_all(&dir).expect("a temporary directory");
    let audit = dir.join("audit.log");
    let pool = Pool::new(4);

    println!("-- 8 requests, one of them slow; the warnings come from the hooks");
    let mut tasks = Vec::new();
    for i in 0..8 {
        let work = if i == 3 {
            Duration::from_millis(400)
        } else {
            Duration::from_millis(5)
        };
        tasks.push(tokio::spawn(request(pool.clone(), audit.clone(), work)));
        if i == 4 {
            // The snapshot while the slow request still holds its scope.
            tokio::time::sleep(Duration::from_millis(100)).await;
            println!("-- scopes held now (name, phase, age):");
            for s in diagnostics::scopes() {
                println!("   {:<28} {:?} {:?}", s.name, s.phase, s.age);
            }
        }
    }
    for t in tasks {
        t.await.expect("a request task");
    }
    println!("-- 2 requests cut by a timeout mid-body: their managers exit too");
    for _ in 0..2 {
        let cut = tokio::time::timeout(
            Duration::from_millis(50),
            request(pool.clone(), audit.clone(), Duration::from_secs(10)),
        )
        .await;
        assert!(cut.is_err());
    }
    async_contextlib::drain_timeout(Duration::from_secs(5))
        .await
        .expect("every exit finished");

    println!("-- per manager (what a service exports to its metrics system):");
    println!(
        "   {:<28} {:>7} {:>7} {:>8} {:>9} {:>4} {:>9} {:>9}",
        "manager", "entered", "exited", "failures", "abandoned", "lost", "p50", "p99"
    );
    for m in diagnostics::manager_stats() {
        println!(
            "   {:<28} {:>7} {:>7} {:>8} {:>9} {:>4} {:>9.1?} {:>9.1?}",
            m.name,
            m.entered,
            m.exited,
            m.exit_failures,
            m.abandoned,
            m.lost,
            m.exit_latency.p50,
            m.exit_latency.p99
        );
        assert_eq!(m.entered, m.exited, "{m:?}");
    }
    let s = async_contextlib::stats();
    println!("-- stats(): {s:?}");
    assert_eq!((s.active, s.abandoned, s.lost), (0, 0, 0));
    assert_eq!(pool.permits.available_permits(), 4);
    let _ = std::fs::remove_dir_all(&dir);
}
