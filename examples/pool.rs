//! A connection pool over real loopback TCP connections, to an echo server
//! the example starts: `cargo run --example pool`.
//!
//! * warm-up: the pool opens its connections before the first borrower;
//! * a bounded size: borrowers wait for a free connection;
//! * every connection comes back, on every path — a borrower that
//!   finishes, fails, panics, or is cancelled by `select!`, `timeout` or
//!   `abort()` — on both runtime flavours. A connection given back after
//!   anything but success may hold half a request, so it is replaced by a
//!   fresh one (as Python pools discard connections on error);
//! * `stats()` at the end: every manager entered has exited, nothing is
//!   lost or abandoned.

use std::io;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering::Relaxed};
use std::time::Duration;

use async_contextlib::{async_context_manager, drain_timeout, stats, with_scope, yield_};
use tokio::io::{AsyncBufReadExt, AsyncWriteExt, BufReader};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::{Mutex, Semaphore};

/// Echoes every line back, on each connection, until the client closes.
async fn echo_server() -> io::Result<std::net::SocketAddr> {
    let listener = TcpListener::bind("127.0.0.1:0").await?;
    let addr = listener.local_addr()?;
    tokio::spawn(async move {
        while let Ok((socket, _)) = listener.accept().await {
            tokio::spawn(async move {
                let (read, mut write) = socket.into_split();
                let mut lines = BufReader::new(read).lines();
                while let Ok(Some(line)) = lines.next_line().await {
                    if write
                        .write_all(format!("{line}\n").as_bytes())
                        .await
                        .is_err()
                    {
                        break;
                    }
                }
            });
        }
    });
    Ok(addr)
}

/// A connection and its read buffer.
struct Conn {
    stream: BufReader<TcpStream>,
}

impl Conn {
    async fn open(addr: std::net::SocketAddr) -> io::Result<Conn> {
        Ok(Conn {
            stream: BufReader::new(TcpStream::connect(addr).await?),
        })
    }

    /// One request: a line out, its echo back.
    async fn echo(&mut self, msg: &str) -> io::Result<String> {
        self.stream
            .get_mut()
            .write_all(format!("{msg}\n").as_bytes())
            .await?;
        let mut line = String::new();
        self.stream.read_line(&mut line).await?;
        Ok(line.trim_end().to_owned())
    }
}

struct Pool {
    addr: std::net::SocketAddr,
    size: usize,
    idle: Mutex<Vec<Conn>>,
    permits: Arc<Semaphore>,
    /// Connections opened after warm-up, to replace ones given back dirty.
    replaced: AtomicUsize,
}

impl Pool {
    /// Opens all `size` connections up front.
    async fn warm_up(addr: std::net::SocketAddr, size: usize) -> io::Result<Arc<Pool>> {
        let mut idle = Vec::with_capacity(size);
        for _ in 0..size {
            idle.push(Conn::open(addr).await?);
        }
        Ok(Arc::new(Pool {
            addr,
            size,
            idle: Mutex::new(idle),
            permits: Arc::new(Semaphore::new(size)),
            replaced: AtomicUsize::new(0),
        }))
    }
}

/// Borrows a connection: waits for a free one (the pool is bounded), lends
/// it to the block, and gives it back — a fresh one in its place unless
/// the block succeeded. Owned (it borrows nothing), so on cancellation its
/// exit runs detached, on the runtime, to its end.
#[async_context_manager]
async fn connection(pool: Arc<Pool>) -> Result<&mut Conn, io::Error> {
    let permit = pool
        .permits
        .clone()
        .acquire_owned()
        .await
        .map_err(io::Error::other)?;
    let mut conn = pool
        .idle
        .lock()
        .await
        .pop()
        .expect("a permit means an idle connection");
    let outcome = yield_!(&mut conn);
    if !outcome.is_success() {
        pool.replaced.fetch_add(1, Relaxed);
        conn = match Conn::open(pool.addr).await {
            Ok(fresh) => fresh,
            // The server is gone: keep the old one rather than shrink.
            Err(_) => conn,
        };
    }
    pool.idle.lock().await.push(conn);
    drop(permit);
}

/// One borrower's request.
async fn request(pool: Arc<Pool>, n: usize) -> io::Result<String> {
    with_scope!(connection(pool) as conn => {
        let reply = conn.echo(&format!("request {n}")).await?;
        assert_eq!(reply, format!("request {n}"));
        Ok(reply)
    })
}

/// A borrower that never finishes its request in time.
async fn stuck(pool: Arc<Pool>) -> io::Result<()> {
    with_scope!(connection(pool) as conn => {
        conn.echo("about to hang").await?;
        std::future::pending::<()>().await;
        Ok(())
    })
}

async fn demo(flavour: &str) -> io::Result<()> {
    let addr = echo_server().await?;
    let pool = Pool::warm_up(addr, 4).await?;
    println!("[{flavour}] warmed up {} connections", pool.size);

    // Load: 32 borrowers over 4 connections.
    let tasks: Vec<_> = (0..32)
        .map(|n| tokio::spawn(request(pool.clone(), n)))
        .collect();
    for t in tasks {
        t.await.expect("a borrower task")?;
    }
    println!("[{flavour}] 32 requests served by 4 connections");

    // Cancelled by `select!`: the other branch wins.
    tokio::select! {
        r = stuck(pool.clone()) => unreachable!("it never finishes: {r:?}"),
        () = tokio::time::sleep(Duration::from_millis(20)) => {}
    }
    // Cancelled by `timeout`.
    let cut = tokio::time::timeout(Duration::from_millis(20), stuck(pool.clone())).await;
    assert!(cut.is_err());
    // Cancelled by `abort()`.
    let task = tokio::spawn(stuck(pool.clone()));
    tokio::time::sleep(Duration::from_millis(20)).await;
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // A borrower that fails, and one that panics.
    let failed: io::Result<()> = with_scope!(connection(pool.clone()) as conn => {
        conn.echo("then fail").await?;
        Err(io::Error::other("the request failed"))
    });
    assert!(failed.is_err());
    let panicked = tokio::spawn({
        let pool = pool.clone();
        async move {
            let _: io::Result<()> = with_scope!(connection(pool) as _conn => {
                panic!("the borrower panicked");
            });
        }
    });
    assert!(panicked.await.unwrap_err().is_panic());

    // Cancelled exits run detached: wait for them.
    drain_timeout(Duration::from_secs(5))
        .await
        .map_err(io::Error::other)?;
    let idle = pool.idle.lock().await.len();
    println!(
        "[{flavour}] after 3 cancelled, 1 failed and 1 panicked borrower: {idle}/{} connections idle, {} replaced, {} permits free",
        pool.size,
        pool.replaced.load(Relaxed),
        pool.permits.available_permits(),
    );
    assert_eq!(idle, pool.size);
    assert_eq!(pool.permits.available_permits(), pool.size);
    assert_eq!(pool.replaced.load(Relaxed), 5);
    // And the pool still serves.
    assert_eq!(request(pool.clone(), 99).await?, "request 99");
    Ok(())
}

fn main() -> io::Result<()> {
    // The borrower that panics on purpose: one line, not a backtrace.
    std::panic::set_hook(Box::new(|info| eprintln!("(expected) panic: {info}")));
    let current = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    current.block_on(demo("current-thread"))?;
    drop(current);
    let multi = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(2)
        .enable_all()
        .build()?;
    multi.block_on(demo("multi-thread"))?;
    drop(multi);

    let s = stats();
    println!("stats(): {s:?}");
    assert_eq!(
        s.entered, s.exited,
        "every connection borrowed was given back"
    );
    assert_eq!((s.active, s.pending, s.abandoned, s.lost), (0, 0, 0, 0));
    Ok(())
}
