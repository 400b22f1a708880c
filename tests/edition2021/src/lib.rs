//! Empty: the test in `tests/` is what matters. It proves that
//! `#[async_context_manager]` fns that borrow their arguments compile in an
//! edition-2021 crate, where `impl Trait` in return position does not
//! capture lifetimes by itself (the attribute gives its `impl` token the
//! macro crate's edition).
