//! `BoxManager` / `BoxManagerRef`: a manager chosen at run time, returned
//! from a trait method or stored in a struct, entered and exited exactly
//! once on every path, with the owned kind's exits detached when cut.

#[path = "driver_util/mod.rs"]
mod driver_util;

use std::io;
use std::time::Duration;

use async_contextlib::testing::{Injected, Recorder, Stage};
use async_contextlib::{
    AsyncContextManager, BoxManager, BoxManagerRef, Deadline, Outcome, async_context_manager,
    box_manager, with_scope, yield_,
};
use driver_util::{current_thread, forever, multi_thread, on_both, spawn_then_abort};

#[derive(Debug, Default)]
struct Conn {
    queries: Vec<&'static str>,
}

/// A generated manager, boxed beside a `Fake` of another type.
#[async_context_manager]
async fn real_conn(log: Recorder) -> Result<&mut Conn, Injected> {
    let _id = log.manager();
    let mut conn = Conn::default();
    yield_!(&mut conn);
}

fn pick(real: bool, recorder: &Recorder) -> BoxManager<Conn, Injected> {
    if real {
        box_manager!(real_conn(recorder.clone()))
    } else {
        box_manager!(recorder.lending(Conn::default()))
    }
}

#[tokio::test]
async fn managers_of_different_types_chosen_at_run_time_enter_and_exit_once() {
    for real in [false, true] {
        let recorder = Recorder::new("db");
        let r: Result<usize, Injected> = with_scope!(pick(real, &recorder) as conn => {
            conn.queries.push("SELECT 1");
            Ok(conn.queries.len())
        });
        assert_eq!(r.unwrap(), 1);
        if !real {
            assert_eq!(recorder.enters(), 1);
            assert!(matches!(recorder.outcomes()[..], [Outcome::Success]));
        }
    }
}

/// Stored in a struct, several at once, entered in one scope.
struct Services {
    primary: BoxManager<Conn, Injected>,
    replica: BoxManager<Conn, Injected>,
}

#[tokio::test]
async fn stored_managers_keep_the_scopes_order_and_errors() {
    let recorder = Recorder::new("svc");
    let services = Services {
        primary: box_manager!(recorder.lending(Conn::default())),
        replica: box_manager!(recorder.lending(Conn::default()).fail_exit()),
    };
    assert!(format!("{:?}", services.primary).contains("svc"));
    let r: Result<(), Injected> = with_scope!(services.primary as p, services.replica as q => {
        p.queries.push("w");
        q.queries.push("r");
        Ok(())
    });
    assert_eq!(r.unwrap_err().stage(), Stage::Exit);
    assert_eq!(recorder.enters(), 2);
    // The replica exits first and fails; the primary, outside it, sees that.
    match &recorder.outcomes()[..] {
        [Outcome::Success, Outcome::Failed(f)] => {
            assert!(
                f.message().contains("injected exit failure"),
                "{}",
                f.message()
            );
        }
        other => panic!("{other:?}"),
    }
}

trait Database {
    fn session(&mut self) -> BoxManagerRef<'_, Conn, io::Error>;
}

struct Borrowed<'a> {
    conn: &'a mut Conn,
    exits: &'a mut u32,
}

impl AsyncContextManager for Borrowed<'_> {
    type Value<'a>
        = &'a mut Conn
    where
        Self: 'a;
    type Error = io::Error;
    async fn enter(&mut self) -> io::Result<&mut Conn> {
        Ok(self.conn)
    }
    async fn exit(&mut self, _: Outcome) -> io::Result<()> {
        tokio::task::yield_now().await;
        *self.exits += 1;
        Ok(())
    }
}

struct Local {
    conn: Conn,
    exits: u32,
}

impl Database for Local {
    fn session(&mut self) -> BoxManagerRef<'_, Conn, io::Error> {
        box_manager!(Borrowed {
            conn: &mut self.conn,
            exits: &mut self.exits,
        })
    }
}

#[test]
fn a_borrowing_boxed_manager_from_a_trait_object_exits_once_even_when_cut() {
    multi_thread().block_on(async {
        let mut db = Local {
            conn: Conn::default(),
            exits: 0,
        };
        let dyn_db: &mut dyn Database = &mut db;
        let r: io::Result<usize> = with_scope!(dyn_db.session() as c => {
            c.queries.push("q");
            Ok(c.queries.len())
        });
        assert_eq!(r.unwrap(), 1);
        // Cut mid-body: the borrowing exit is finished in place.
        let cut = tokio::time::timeout(Duration::from_millis(5), async {
            let _: io::Result<()> = with_scope!(db.session() => {
                forever().await;
                Ok(())
            });
        })
        .await;
        assert!(cut.is_err());
        assert_eq!(db.exits, 2);
        assert_eq!(db.conn.queries, ["q"]);
    });
}

#[test]
fn an_owned_boxed_manager_cut_by_drop_timeout_or_abort_exits_on_the_driver() {
    on_both(|flavour| async move {
        let recorder = Recorder::new("owned");
        let cut = tokio::time::timeout(Duration::from_millis(5), async {
            let _: Result<(), Injected> = with_scope!(pick(false, &recorder) => {
                forever().await;
                Ok(())
            });
        })
        .await;
        assert!(cut.is_err());
        let r2 = recorder.clone();
        spawn_then_abort(async move {
            // The scope over a boxed manager is `Send`: it can be spawned.
            let _: Result<(), Injected> = with_scope!(pick(false, &r2) => {
                forever().await;
                Ok(())
            });
        })
        .await;
        assert!(
            matches!(
                recorder.outcomes()[..],
                [Outcome::Cancelled, Outcome::Cancelled]
            ),
            "{flavour}: {:?}",
            recorder.outcomes()
        );
    });
}

/// A manager with a deadline: boxing keeps it.
struct Bounded(Conn);

impl AsyncContextManager for Bounded {
    type Value<'a> = &'a mut Conn;
    type Error = &'static str;
    async fn enter(&mut self) -> Result<&mut Conn, &'static str> {
        Ok(&mut self.0)
    }
    async fn exit(&mut self, _: Outcome) -> Result<(), &'static str> {
        Ok(())
    }
    fn deadline(&mut self) -> Option<Deadline<&'static str>> {
        Some(Deadline {
            at: tokio::time::Instant::now() + Duration::from_millis(5),
            error: "bounded",
        })
    }
    fn name(&self) -> &'static str {
        "bounded"
    }
}

#[test]
fn a_boxed_manager_keeps_its_deadline_and_name() {
    current_thread().block_on(async {
        let m: BoxManager<Conn, &'static str> = box_manager!(Bounded(Conn::default()));
        assert_eq!(m.name(), "bounded");
        let r: Result<(), &str> = with_scope!(m => {
            forever().await;
            Ok(())
        });
        assert_eq!(r.unwrap_err(), "bounded");
    });
}

/// A manager cut by a cancellation token (as `cancelled_by` is): boxing
/// keeps the token.
struct CutBy(Conn, tokio_util::sync::CancellationToken);

impl AsyncContextManager for CutBy {
    type Value<'a> = &'a mut Conn;
    type Error = &'static str;
    async fn enter(&mut self) -> Result<&mut Conn, &'static str> {
        Ok(&mut self.0)
    }
    async fn exit(&mut self, _: Outcome) -> Result<(), &'static str> {
        Ok(())
    }
    fn __cut_by(&mut self) -> Option<(tokio_util::sync::CancellationToken, &'static str)> {
        Some((self.1.clone(), "token"))
    }
}

#[test]
fn a_boxed_manager_keeps_its_cancellation_token() {
    on_both(|_| async {
        let token = tokio_util::sync::CancellationToken::new();
        let m: BoxManager<Conn, &'static str> = box_manager!(CutBy(Conn::default(), token.clone()));
        let canceller = tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(5)).await;
            token.cancel();
        });
        let r: Result<(), &str> = with_scope!(m => {
            forever().await;
            Ok(())
        });
        assert_eq!(r.unwrap_err(), "token");
        canceller.await.unwrap();
    });
}
