//! Locks and semaphores as managers (#11): the lock is held for the block
//! and released on every path — success, error, panic, cancellation (drop,
//! `tokio::time::timeout`, abort) — on both runtime flavours, in
//! `with_scope!` and in an `ExitStack`.

use std::panic::AssertUnwindSafe;
use std::sync::Arc;
use std::time::Duration;

use async_contextlib::{
    BoxError, ExitStack, SemaphoreClosed, acquired, acquired_owned, locked, locked_owned,
    read_locked, with_scope, write_locked,
};
use futures::FutureExt;
use tokio::sync::{Mutex, RwLock, Semaphore};

#[path = "../../tests/driver_util/mod.rs"]
mod driver_util;

driver_util::both_flavours! {
    mutex_success,
    mutex_error,
    mutex_panic,
    mutex_dropped_mid_body,
    mutex_timed_out,
    mutex_aborted,
    mutex_owned_aborted,
    mutex_waits_for_holder,
    rwlock_paths,
    semaphore_paths,
    semaphore_closed,
    semaphore_closed_while_waiting,
    stack_of_locks,
    stack_of_locks_cancelled,
}

async fn mutex_success() {
    let m = Mutex::new(0_u32);
    let seen = with_scope!(locked(&m) as n => {
        assert!(m.try_lock().is_err(), "held during the block");
        *n += 5;
        *n
    });
    assert_eq!(seen, 5);
    assert_eq!(*m.try_lock().unwrap(), 5);
}

async fn mutex_error() {
    let m = Mutex::new(0_u32);
    let r: Result<(), &str> = with_scope!(locked(&m) as n => {
        *n = 1;
        Err("body failed")
    });
    assert_eq!(r, Err("body failed"));
    assert_eq!(*m.try_lock().unwrap(), 1);
}

async fn mutex_panic() {
    let m = Mutex::new(0_u32);
    let r = AssertUnwindSafe(async {
        let _: () = with_scope!(locked(&m) as n => {
            *n = 2;
            panic!("boom")
        });
    })
    .catch_unwind()
    .await;
    assert!(r.is_err());
    assert_eq!(*m.try_lock().unwrap(), 2);
}

async fn mutex_dropped_mid_body() {
    let m = Mutex::new(0_u32);
    {
        let mut fut = Box::pin(async {
            with_scope!(locked(&m) as n => {
                *n = 3;
                std::future::pending::<()>().await;
            })
        });
        assert!(futures::poll!(fut.as_mut()).is_pending());
        assert!(m.try_lock().is_err(), "held while the block waits");
    }
    assert_eq!(*m.try_lock().unwrap(), 3);
}

async fn mutex_timed_out() {
    let m = Mutex::new(0_u32);
    let r = tokio::time::timeout(Duration::from_millis(5), async {
        with_scope!(locked(&m) as n => {
            *n = 4;
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
    })
    .await;
    assert!(r.is_err());
    assert_eq!(*m.try_lock().unwrap(), 4);
}

async fn mutex_aborted() {
    static M: Mutex<u32> = Mutex::const_new(0);
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn(async move {
        with_scope!(locked(&M) as n => {
            *n = 5;
            tx.send(()).unwrap();
            std::future::pending::<()>().await;
        });
    });
    rx.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    assert_eq!(*M.try_lock().unwrap(), 5);
}

async fn mutex_owned_aborted() {
    let m = Arc::new(Mutex::new(0_u32));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn({
        let m = m.clone();
        async move {
            with_scope!(locked_owned(m) as n => {
                *n = 6;
                tx.send(()).unwrap();
                std::future::pending::<()>().await;
            });
        }
    });
    rx.await.unwrap();
    task.abort();
    assert!(task.await.unwrap_err().is_cancelled());
    // The detached exit may still be on its way.
    async_contextlib::drain().await;
    assert_eq!(*m.try_lock().unwrap(), 6);
    assert_eq!(Arc::strong_count(&m), 1, "the manager's Arc is gone");
}

async fn mutex_waits_for_holder() {
    let m = Arc::new(Mutex::new(Vec::new()));
    let mut tasks = Vec::new();
    for i in 0..4 {
        let m = m.clone();
        tasks.push(tokio::spawn(async move {
            with_scope!(locked_owned(m) as v => {
                v.push(i);
                let len = v.len();
                tokio::task::yield_now().await;
                // Nobody else got in meanwhile.
                assert_eq!(v.len(), len);
            });
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(m.try_lock().unwrap().len(), 4);
}

async fn rwlock_paths() {
    let rw = RwLock::new(String::from("a"));
    let total = with_scope!(read_locked(&rw) as a, read_locked(&rw) as b => {
        assert!(rw.try_write().is_err());
        a.len() + b.len()
    });
    assert_eq!(total, 2);
    with_scope!(write_locked(&rw) as s => {
        assert!(rw.try_read().is_err());
        s.push('b');
    });
    assert_eq!(*rw.try_read().unwrap(), "ab");
    // Cancelled reader and writer release.
    let r = tokio::time::timeout(Duration::from_millis(5), async {
        with_scope!(read_locked(&rw) as _r => {
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
    })
    .await;
    assert!(r.is_err());
    let r = tokio::time::timeout(Duration::from_millis(5), async {
        with_scope!(write_locked(&rw) as w => {
            w.push('c');
            tokio::time::sleep(Duration::from_secs(60)).await;
        })
    })
    .await;
    assert!(r.is_err());
    assert_eq!(*rw.try_write().unwrap(), "abc");
    // A panicking writer releases too.
    let r = AssertUnwindSafe(async {
        let _: () = with_scope!(write_locked(&rw) as _w => { panic!("boom") });
    })
    .catch_unwind()
    .await;
    assert!(r.is_err());
    assert!(rw.try_write().is_ok());
}

async fn semaphore_paths() {
    let sem = Semaphore::new(3);
    let r: Result<u32, SemaphoreClosed> = with_scope!(acquired(&sem, 2) as n => {
        assert_eq!(sem.available_permits(), 1);
        Ok(n)
    });
    assert_eq!(r, Ok(2));
    assert_eq!(sem.available_permits(), 3);
    // Error, panic, cancellation.
    #[derive(Debug, PartialEq)]
    enum E {
        Closed,
        Body,
    }
    impl From<SemaphoreClosed> for E {
        fn from(_: SemaphoreClosed) -> E {
            E::Closed
        }
    }
    let r: Result<(), E> = with_scope!(acquired(&sem, 3) => { Err(E::Body) });
    assert_eq!(r, Err(E::Body));
    assert_eq!(sem.available_permits(), 3);
    let r = AssertUnwindSafe(async {
        let _: Result<(), SemaphoreClosed> = with_scope!(acquired(&sem, 1) => { panic!("boom") });
    })
    .catch_unwind()
    .await;
    assert!(r.is_err());
    assert_eq!(sem.available_permits(), 3);
    let r = tokio::time::timeout(Duration::from_millis(5), async {
        let _: Result<(), SemaphoreClosed> = with_scope!(acquired(&sem, 2) => {
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        });
    })
    .await;
    assert!(r.is_err());
    assert_eq!(sem.available_permits(), 3);
    // Owned, aborted.
    let sem = Arc::new(Semaphore::new(1));
    let (tx, rx) = tokio::sync::oneshot::channel();
    let task = tokio::spawn({
        let sem = sem.clone();
        async move {
            let _: Result<(), SemaphoreClosed> = with_scope!(acquired_owned(sem, 1) => {
                tx.send(()).unwrap();
                std::future::pending::<()>().await;
                Ok(())
            });
        }
    });
    rx.await.unwrap();
    assert_eq!(sem.available_permits(), 0);
    task.abort();
    let _ = task.await;
    async_contextlib::drain().await;
    assert_eq!(sem.available_permits(), 1);
}

async fn semaphore_closed() {
    let sem = Semaphore::new(1);
    sem.close();
    let mut ran = false;
    let r: Result<(), SemaphoreClosed> = with_scope!(acquired(&sem, 1) => {
        ran = true;
        Ok(())
    });
    assert_eq!(r, Err(SemaphoreClosed));
    assert!(!ran);
    assert_eq!(
        SemaphoreClosed.to_string(),
        "semaphore closed: no permits can be acquired"
    );
}

async fn semaphore_closed_while_waiting() {
    let sem = Arc::new(Semaphore::new(0));
    let waiter = tokio::spawn({
        let sem = sem.clone();
        async move {
            let r: Result<(), SemaphoreClosed> = with_scope!(acquired_owned(sem, 1) => { unreachable!("entered a closed semaphore") });
            r
        }
    });
    tokio::task::yield_now().await;
    sem.close();
    assert_eq!(waiter.await.unwrap(), Err(SemaphoreClosed));
}

async fn stack_of_locks() {
    let mutexes: Vec<Mutex<u32>> = (0..5).map(Mutex::new).collect();
    let r: Result<u32, BoxError> = with_scope!(ExitStack::new() as stack => {
        let mut sum = 0;
        for m in &mutexes {
            let v = stack.enter(locked(m)).await?;
            *v += 10;
            sum += *v;
        }
        assert!(mutexes.iter().all(|m| m.try_lock().is_err()), "all held");
        Ok(sum)
    });
    assert_eq!(r.unwrap(), 60);
    for (i, m) in mutexes.iter().enumerate() {
        assert_eq!(*m.try_lock().unwrap(), i as u32 + 10);
    }
}

async fn stack_of_locks_cancelled() {
    let mutexes: Vec<Mutex<u32>> = (0..5).map(Mutex::new).collect();
    let sem = Semaphore::new(2);
    let r = tokio::time::timeout(Duration::from_millis(5), async {
        let _: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
            for m in &mutexes {
                stack.enter(locked(m)).await?;
            }
            stack.enter(acquired(&sem, 2)).await?;
            tokio::time::sleep(Duration::from_secs(60)).await;
            Ok(())
        });
    })
    .await;
    assert!(r.is_err());
    assert!(mutexes.iter().all(|m| m.try_lock().is_ok()), "all released");
    assert_eq!(sem.available_permits(), 2);
    // A closed semaphore fails the stack's enter; what it held is released.
    sem.close();
    let r: Result<(), BoxError> = with_scope!(ExitStack::new() as stack => {
        stack.enter(locked(&mutexes[0])).await?;
        stack.enter(acquired(&sem, 1)).await?;
        unreachable!("the semaphore is closed")
    });
    assert_eq!(r.unwrap_err().to_string(), SemaphoreClosed.to_string());
    assert!(mutexes[0].try_lock().is_ok());
}

/// A scope over a borrowed lock is `Send` (spawnable) when `T: Send`.
#[tokio::test]
async fn borrowed_scope_is_send() {
    let m = Arc::new(Mutex::new(0_u32));
    let rw = Arc::new(RwLock::new(0_u32));
    let sem = Arc::new(Semaphore::new(1));
    let task = tokio::spawn({
        let (m, rw, sem) = (m.clone(), rw.clone(), sem.clone());
        async move {
            let r: Result<(), SemaphoreClosed> = with_scope!(
                locked(&m) as a, read_locked(&rw) as b, acquired(&sem, 1) as _c => {
                    tokio::task::yield_now().await;
                    *a += *b + 1;
                    Ok(())
                }
            );
            r.unwrap();
            with_scope!(write_locked(&rw) as w => {
                tokio::task::yield_now().await;
                *w = 7;
            });
        }
    });
    task.await.unwrap();
    assert_eq!(*m.try_lock().unwrap(), 1);
    assert_eq!(*rw.try_read().unwrap(), 7);
}
