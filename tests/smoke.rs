use std::convert::Infallible;
use std::sync::{Arc, Mutex};

use async_contextlib::{AsyncContextManager, Outcome, async_context_manager, with_scope, yield_};

struct Buf {
    items: Vec<u32>,
    log: Arc<Mutex<Vec<String>>>,
}
impl AsyncContextManager for Buf {
    type Value<'a> = &'a mut Vec<u32>;
    type Error = Infallible;
    async fn enter(&mut self) -> Result<&mut Vec<u32>, Infallible> {
        self.log.lock().unwrap().push("enter".into());
        Ok(&mut self.items)
    }
    async fn exit(&mut self, o: Outcome) -> Result<(), Infallible> {
        self.log
            .lock()
            .unwrap()
            .push(format!("exit {} {:?}", o.label(), self.items));
        Ok(())
    }
}

#[derive(Debug)]
struct DbError(&'static str);
impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(self.0)
    }
}

#[async_context_manager]
async fn tx(log: Arc<Mutex<Vec<String>>>, fail_enter: bool) -> Result<&mut Vec<u32>, DbError> {
    if fail_enter {
        return Err(DbError("enter failed"));
    }
    let mut v = vec![1];
    log.lock().unwrap().push("gen enter".into());
    let o = yield_!(&mut v);
    log.lock()
        .unwrap()
        .push(format!("gen exit {} {:?}", o.label(), v));
}

#[tokio::test]
async fn smoke() {
    let log = Arc::new(Mutex::new(Vec::new()));
    let r: Result<usize, DbError> = with_scope!(Buf { items: vec![], log: log.clone() } as b, tx(log.clone(), false) as t => {
        b.push(5);
        t.push(7);
        Ok(b.len() + t.len())
    });
    assert_eq!(r.unwrap(), 3);
    println!("{:?}", log.lock().unwrap());
    let n = with_scope!(Buf { items: vec![], log: log.clone() } as b => { b.push(1); 42u32 });
    assert_eq!(n, 42);
    let r: Result<(), DbError> = with_scope!(Buf { items: vec![], log: log.clone() }, tx(log.clone(), true) as _t => { Ok(()) });
    assert!(r.is_err());
    println!("{:?}", log.lock().unwrap());
}
