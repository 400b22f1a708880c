//! `?` before and after `yield_!`, and `?` in the scope's block.
use async_contextlib::{async_context_manager, with_scope, yield_};

#[derive(Debug)]
struct DbError;

impl std::fmt::Display for DbError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("db")
    }
}

#[derive(Debug)]
enum AppError {
    Db(DbError),
    Parse(std::num::ParseIntError),
}

impl std::fmt::Display for AppError {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{self:?}")
    }
}

impl From<DbError> for AppError {
    fn from(e: DbError) -> Self {
        AppError::Db(e)
    }
}

impl From<std::num::ParseIntError> for AppError {
    fn from(e: std::num::ParseIntError) -> Self {
        AppError::Parse(e)
    }
}

async fn step(ok: bool) -> Result<(), DbError> {
    if ok { Ok(()) } else { Err(DbError) }
}

#[async_context_manager]
async fn tx(begin_ok: bool) -> Result<&mut u32, DbError> {
    step(begin_ok).await?;
    let mut rows = 0;
    if yield_!(&mut rows).is_success() {
        step(rows < 10).await?;
    }
}

async fn run(text: &str) -> Result<u32, AppError> {
    with_scope!(tx(true) as rows => {
        *rows += text.parse::<u32>()?;
        Ok::<_, AppError>(*rows)
    })
}

fn main() {
    futures::executor::block_on(async {
        assert_eq!(run("3").await.unwrap(), 3);
        assert!(matches!(run("x").await, Err(AppError::Parse(_))));
        assert!(matches!(run("11").await, Err(AppError::Db(DbError))));
        let r: Result<(), AppError> = with_scope!(tx(false) as _rows => { Ok(()) });
        assert!(matches!(r, Err(AppError::Db(DbError))));
    });
}
