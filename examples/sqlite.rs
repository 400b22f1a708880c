//! Transactions on a real embedded SQLite database, with the commit or
//! rollback guaranteed on every path: success, error, timeout and
//! cancellation (the future dropped mid-transaction).
//!
//! Run with `cargo run --example sqlite`.

use std::sync::Arc;
use std::time::Duration;

use async_contextlib::{Elapsed, Outcome, async_context_manager, timeout, with_scope, yield_};
use rusqlite::Connection;
use tokio::sync::Mutex;

/// The application's error: what a scope's block returns.
#[derive(Debug)]
enum AppError {
    Db(rusqlite::Error),
    InsufficientFunds { balance: i64, wanted: i64 },
    TimedOut(Elapsed),
}

impl From<rusqlite::Error> for AppError {
    fn from(e: rusqlite::Error) -> Self {
        AppError::Db(e)
    }
}

impl From<Elapsed> for AppError {
    fn from(e: Elapsed) -> Self {
        AppError::TimedOut(e)
    }
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            AppError::Db(e) => write!(f, "database error: {e}"),
            AppError::InsufficientFunds { balance, wanted } => {
                write!(f, "insufficient funds: balance {balance}, wanted {wanted}")
            }
            AppError::TimedOut(e) => write!(f, "{e}"),
        }
    }
}

type Db = Arc<Mutex<Connection>>;

/// A transaction: `BEGIN` on enter, `COMMIT` if the block succeeded,
/// `ROLLBACK` otherwise — including when the future running the block is
/// dropped. The signature borrows nothing, so on cancellation the exit is
/// handed to the exit driver and runs after the drop.
#[async_context_manager]
async fn transaction(db: Db) -> Result<&mut Connection, rusqlite::Error> {
    let mut conn = db.lock_owned().await;
    conn.execute_batch("BEGIN")?;
    match yield_!(&mut *conn) {
        Outcome::Success => conn.execute_batch("COMMIT")?,
        outcome => {
            println!("    rollback ({})", outcome.label());
            conn.execute_batch("ROLLBACK")?;
        }
    }
}

fn balance(conn: &Connection, who: &str) -> Result<i64, rusqlite::Error> {
    conn.query_row("SELECT balance FROM accounts WHERE name = ?1", [who], |r| {
        r.get(0)
    })
}

/// Moves `amount` from alice to bob, pausing `pause` halfway (to let a
/// timeout or a drop land mid-transaction).
async fn transfer(db: &Db, amount: i64, pause: Duration) -> Result<i64, AppError> {
    with_scope!(transaction(db.clone()) as tx => {
        let from = balance(tx, "alice")?;
        tx.execute("UPDATE accounts SET balance = balance - ?1 WHERE name = 'alice'", [amount])?;
        tokio::time::sleep(pause).await;
        if from < amount {
            return Err(AppError::InsufficientFunds { balance: from, wanted: amount });
        }
        tx.execute("UPDATE accounts SET balance = balance + ?1 WHERE name = 'bob'", [amount])?;
        Ok(from - amount)
    })
}

async fn report(db: &Db, step: &str) -> Result<(), AppError> {
    let conn = db.lock().await;
    println!(
        "  {step:<44} alice = {:>3}, bob = {:>3}",
        balance(&conn, "alice")?,
        balance(&conn, "bob")?
    );
    Ok(())
}

#[tokio::main]
async fn main() -> Result<(), AppError> {
    let conn = Connection::open_in_memory()?;
    conn.execute_batch(
        "CREATE TABLE accounts (name TEXT PRIMARY KEY, balance INTEGER NOT NULL);
         INSERT INTO accounts VALUES ('alice', 100), ('bob', 0);",
    )?;
    let db: Db = Arc::new(Mutex::new(conn));
    println!("async-contextlib on SQLite {}", rusqlite::version());
    report(&db, "start").await?;

    // 1. Success: committed.
    transfer(&db, 30, Duration::ZERO).await?;
    report(&db, "1. transfer 30: committed").await?;

    // 2. The block returns Err: rolled back, the error comes back.
    let err = transfer(&db, 500, Duration::ZERO).await.unwrap_err();
    println!("    error returned: {err}");
    report(&db, "2. transfer 500: rolled back").await?;

    // 3. Cancelled: the future is dropped mid-transaction by an outer
    //    tokio timeout. Rust cannot await in a destructor; the exit is
    //    handed to the exit driver, which rolls back after the drop.
    let cut = tokio::time::timeout(
        Duration::from_millis(20),
        transfer(&db, 10, Duration::from_secs(60)),
    )
    .await;
    assert!(cut.is_err(), "the transfer should have been cut");
    async_contextlib::drain().await;
    report(&db, "3. transfer dropped mid-way: rolled back").await?;

    // 4. A scope-level timeout (Python's `asyncio.timeout`): the block is cut,
    //    the transaction exits with `Cancelled`, the scope fails with Elapsed.
    let r: Result<(), AppError> = with_scope!(
        timeout(Duration::from_millis(20)),
        transaction(db.clone()) as tx => {
            tx.execute("UPDATE accounts SET balance = 0 WHERE name = 'alice'", [])?;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        }
    );
    println!("    error returned: {}", r.unwrap_err());
    report(&db, "4. slow transaction timed out: rolled back").await?;

    let s = async_contextlib::stats();
    println!(
        "stats: entered {}, exited {}, active {}, pending {}, exit failures {}, abandoned {}, lost {}",
        s.entered, s.exited, s.active, s.pending, s.exit_failures, s.abandoned, s.lost
    );
    assert_eq!(s.entered, s.exited, "every transaction exited exactly once");
    Ok(())
}
