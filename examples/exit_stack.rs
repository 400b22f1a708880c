//! A number of managers known only at run time, with `ExitStack` (Python's
//! `AsyncExitStack`): one transaction per shard of an embedded SQLite
//! database, all committed together or all rolled back — also when one
//! shard fails half-way, and when the whole operation is cancelled.
//!
//! Run with `cargo run --example exit_stack`.

use std::sync::Arc;
use std::time::Duration;

use async_contextlib::{
    BoxError, ExitStack, Outcome, async_context_manager, drain, stats, with_scope, yield_,
};
use rusqlite::Connection;
use tokio::sync::Mutex;

type Shard = Arc<Mutex<Connection>>;

/// `BEGIN` on enter; `COMMIT` if the block succeeded, else `ROLLBACK`.
#[async_context_manager]
async fn transaction(shard: Shard, name: String) -> Result<&mut Connection, rusqlite::Error> {
    let mut conn = shard.lock_owned().await;
    conn.execute_batch("BEGIN")?;
    match yield_!(&mut *conn) {
        Outcome::Success => conn.execute_batch("COMMIT")?,
        outcome => {
            println!("    {name}: rollback ({})", outcome.label());
            conn.execute_batch("ROLLBACK")?;
        }
    }
}

fn open_shard(rows: i64) -> Result<Shard, rusqlite::Error> {
    let conn = Connection::open_in_memory()?;
    conn.execute_batch("CREATE TABLE counter (n INTEGER NOT NULL)")?;
    conn.execute("INSERT INTO counter (n) VALUES (?1)", [rows])?;
    Ok(Arc::new(Mutex::new(conn)))
}

async fn count(shard: &Shard) -> Result<i64, rusqlite::Error> {
    shard
        .lock()
        .await
        .query_row("SELECT n FROM counter", [], |r| r.get(0))
}

/// Adds `delta` on every shard, in one transaction per shard — as many as
/// there are shards, decided at run time. `fail_at`: a shard whose update
/// fails, to show every transaction rolled back.
async fn add_everywhere(
    shards: &[Shard],
    delta: i64,
    fail_at: Option<usize>,
) -> Result<(), BoxError> {
    with_scope!(ExitStack::new() as stack => {
        // Every shard's connection, borrowed from its transaction's frame,
        // held at once.
        let mut txs = Vec::new();
        for (i, shard) in shards.iter().enumerate() {
            txs.push(stack.enter(transaction(shard.clone(), format!("shard {i}"))).await?);
        }
        for (i, tx) in txs.iter_mut().enumerate() {
            if fail_at == Some(i) {
                tx.execute_batch("UPDATE no_such_table SET n = 0")?;
            }
            tx.execute("UPDATE counter SET n = n + ?1", [delta])?;
        }
        Ok(())
    })
}

async fn totals(shards: &[Shard]) -> Result<Vec<i64>, rusqlite::Error> {
    let mut out = Vec::new();
    for shard in shards {
        out.push(count(shard).await?);
    }
    Ok(out)
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> Result<(), BoxError> {
    let n = std::env::args()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or(4);
    let shards = (0..n)
        .map(|_| open_shard(10))
        .collect::<Result<Vec<_>, _>>()?;
    println!("{n} shards, each at {:?}", totals(&shards).await?);

    println!("add 5 everywhere:");
    add_everywhere(&shards, 5, None).await?;
    println!("  committed: {:?}", totals(&shards).await?);
    assert!(totals(&shards).await?.iter().all(|&t| t == 15));

    println!("add 100 everywhere, shard {} fails:", n / 2);
    let err = add_everywhere(&shards, 100, Some(n / 2)).await.unwrap_err();
    println!(
        "  failed ({err}); all rolled back: {:?}",
        totals(&shards).await?
    );
    assert!(totals(&shards).await?.iter().all(|&t| t == 15));

    println!("add 1000 everywhere, cancelled after the first shards are entered:");
    let slow = async {
        with_scope!(ExitStack::new() as stack => {
            for (i, shard) in shards.iter().enumerate() {
                let tx = stack.enter(transaction(shard.clone(), format!("shard {i}"))).await?;
                tx.execute("UPDATE counter SET n = n + 1000", [])?;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
            Ok::<(), BoxError>(())
        })
    };
    assert!(
        tokio::time::timeout(Duration::from_millis(30), slow)
            .await
            .is_err()
    );
    drain().await;
    println!("  cancelled; all rolled back: {:?}", totals(&shards).await?);
    assert!(totals(&shards).await?.iter().all(|&t| t == 15));

    let s = stats();
    println!(
        "stats: entered {}, exited {}, active {}, abandoned {}, lost {}",
        s.entered, s.exited, s.active, s.abandoned, s.lost
    );
    assert_eq!(s.entered, s.exited);
    assert_eq!((s.active, s.abandoned, s.lost), (0, 0, 0));
    Ok(())
}
