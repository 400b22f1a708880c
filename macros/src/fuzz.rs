//! The macros never panic, whatever tokens they are given: a proptest
//! harness feeds both entry points hundreds of mutated token streams
//! (deleted, duplicated, swapped and injected tokens, unwrapped groups)
//! derived from valid inputs, and checks that each call returns.

use std::panic::{AssertUnwindSafe, catch_unwind};

use proc_macro2::{Delimiter, Group, TokenStream, TokenTree};
use proptest::prelude::*;

const ITEMS: &[&str] = &[
    "async fn f(db: Db) -> Result<&mut Tx, E> { let mut tx = db.begin().await?; match yield_!(&mut tx) { Outcome::Success => tx.commit().await?, _ => tx.rollback().await? } }",
    "pub async fn g<T: Clone + 'static>(x: T, _: u8, (a, b): (u8, u8)) -> T where T: Send { let o = yield_!(x.clone()); drop(o); }",
    "async fn h(&self) -> &String { let s = String::new(); println!(\"{:?}\", yield_!(&s)); }",
    "async fn no_yield() {}",
    "async fn two() -> u8 { yield_!(1); yield_!(2); }",
    "fn not_async() -> u8 { yield_!(1) }",
    "struct S;",
    "async fn in_loop() -> u8 { loop { yield_!(1); } }",
    "async fn in_closure() -> u8 { let f = || yield_!(1); }",
];

const ARGS: &[&str] = &[
    "",
    "crate = \"::my::path\"",
    "crate = 1",
    "krate = \"x\"",
    "crate",
    "crate = \"a\", crate = \"b\"",
];

const SCOPES: &[&str] = &[
    "($crate) a() as x, b(x) as mut y, c() as _, d() => { y.run(x).await?; Ok(()) }",
    "($crate) Pool::<A, B>::new() as p, <T as Default>::default() => { p }",
    "($crate) m as => {}",
    "($crate) => {}",
    "($crate) m as x {}",
    "($crate) m as x => ",
    "($crate) m as 5 => {}",
    "() ",
];

/// Argument lists of `#[scoped]` (the item comes from `ITEMS`).
const SCOPED: &[&str] = &[
    "a() as x, b(x) as mut y",
    "crate = \"::p\", m() as _",
    "crate = \"p\" m()",
    "m() as",
    "",
    "crate =",
];

const VOCAB: &[&str] = &[
    "yield_", "!", "()", "(x)", "async", "fn", "->", "&", "mut", "Result", "<", ">", ",", "loop",
    "as", "=>", "|", "x", "'a", "self", "Self", "impl", "dyn", "_", ";", "?", ".", "await", "move",
    "crate", "=", "\"s\"", "1", "where", "for", "while", "{}", "[]", "#", "::",
];

fn tokens(s: &str) -> Vec<TokenTree> {
    s.parse::<TokenStream>()
        .expect("corpus parses")
        .into_iter()
        .collect()
}

#[derive(Debug, Clone)]
enum Edit {
    Delete(usize),
    Duplicate(usize),
    Swap(usize, usize),
    Insert(usize, usize),
    Unwrap(usize),
    Recurse(usize, Box<Edit>),
}

fn edit() -> impl Strategy<Value = Edit> {
    let leaf = prop_oneof![
        any::<usize>().prop_map(Edit::Delete),
        any::<usize>().prop_map(Edit::Duplicate),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Swap(a, b)),
        (any::<usize>(), any::<usize>()).prop_map(|(a, b)| Edit::Insert(a, b)),
        any::<usize>().prop_map(Edit::Unwrap),
    ];
    leaf.prop_recursive(3, 8, 1, |inner| {
        (any::<usize>(), inner).prop_map(|(i, e)| Edit::Recurse(i, Box::new(e)))
    })
}

fn apply(mut tts: Vec<TokenTree>, edit: &Edit) -> Vec<TokenTree> {
    if tts.is_empty() {
        return tts;
    }
    let n = tts.len();
    match edit {
        Edit::Delete(i) => {
            tts.remove(i % n);
        }
        Edit::Duplicate(i) => {
            let t = tts[i % n].clone();
            tts.insert(i % n, t);
        }
        Edit::Swap(a, b) => tts.swap(a % n, b % n),
        Edit::Insert(i, w) => {
            let word = tokens(VOCAB[w % VOCAB.len()]);
            let at = i % (n + 1);
            tts.splice(at..at, word);
        }
        Edit::Unwrap(i) => {
            if let TokenTree::Group(g) = &tts[i % n] {
                let inner: Vec<TokenTree> = g.stream().into_iter().collect();
                tts.splice(i % n..=i % n, inner);
            }
        }
        Edit::Recurse(i, e) => {
            // Edit inside the first group at or after `i`.
            if let Some(pos) = (0..n)
                .map(|k| (i + k) % n)
                .find(|&k| matches!(tts[k], TokenTree::Group(_)))
            {
                if let TokenTree::Group(g) = &tts[pos] {
                    let inner = apply(g.stream().into_iter().collect(), e);
                    let mut group = Group::new(g.delimiter(), inner.into_iter().collect());
                    group.set_span(g.span());
                    tts[pos] = TokenTree::Group(group);
                }
            }
        }
    }
    tts
}

fn mutate(seed: &str, edits: &[Edit]) -> TokenStream {
    edits.iter().fold(tokens(seed), apply).into_iter().collect()
}

fn never_panics(name: &str, f: impl FnOnce() -> syn::Result<TokenStream>) {
    let outcome = catch_unwind(AssertUnwindSafe(f));
    assert!(outcome.is_ok(), "{name} panicked");
}

proptest! {
    #![proptest_config(ProptestConfig { cases: 400, ..ProptestConfig::default() })]

    #[test]
    fn attribute_never_panics(
        item in 0..ITEMS.len(),
        args in 0..ARGS.len(),
        item_edits in proptest::collection::vec(edit(), 0..6),
        arg_edits in proptest::collection::vec(edit(), 0..3),
    ) {
        let item = mutate(ITEMS[item], &item_edits);
        let args = mutate(ARGS[args], &arg_edits);
        never_panics("#[async_context_manager]", || crate::expand::async_context_manager(args, item));
    }

    #[test]
    fn scoped_never_panics(
        item in 0..ITEMS.len(),
        args in 0..SCOPED.len(),
        item_edits in proptest::collection::vec(edit(), 0..6),
        arg_edits in proptest::collection::vec(edit(), 0..4),
    ) {
        let item = mutate(ITEMS[item], &item_edits);
        let args = mutate(SCOPED[args], &arg_edits);
        never_panics("#[scoped]", || crate::scoped::scoped(args, item));
    }

    #[test]
    fn with_scope_never_panics(
        input in 0..SCOPES.len(),
        edits in proptest::collection::vec(edit(), 0..6),
    ) {
        let input = mutate(SCOPES[input], &edits);
        never_panics("with_scope!", || crate::scope::with_scope(input));
    }
}

#[test]
fn corpus_without_mutation() {
    for item in ITEMS {
        for args in ARGS {
            let (item, args) = (tokens(item), tokens(args));
            never_panics("#[async_context_manager]", || {
                crate::expand::async_context_manager(
                    args.into_iter().collect(),
                    item.into_iter().collect(),
                )
            });
        }
    }
    for input in SCOPES {
        let input: TokenStream = tokens(input).into_iter().collect();
        never_panics("with_scope!", || crate::scope::with_scope(input));
    }
    // Empty and lone-group inputs.
    never_panics("with_scope!", || {
        crate::scope::with_scope(TokenStream::new())
    });
    let lone = TokenTree::Group(Group::new(Delimiter::Brace, TokenStream::new()));
    never_panics("#[async_context_manager]", || {
        crate::expand::async_context_manager(TokenStream::new(), lone.into())
    });
}
