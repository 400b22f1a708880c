//! Checks that run before any code is generated.

use syn::{Block, Expr, ItemFn, Stmt};

use crate::error::format_err;
use crate::yields::{Context, Site};

/// The attribute needs an `async fn`.
pub(crate) fn asyncness(item: &ItemFn) -> syn::Result<()> {
    if item.sig.asyncness.is_none() {
        return Err(format_err!(
            item.sig.fn_token,
            "#[async_context_manager] requires an `async fn`: write `async fn {}`",
            item.sig.ident
        ));
    }
    if let Some(variadic) = &item.sig.variadic {
        return Err(format_err!(
            variadic,
            "#[async_context_manager] does not support variadic arguments"
        ));
    }
    Ok(())
}

/// Exactly one `yield_!`, in straight-line code of the fn itself.
pub(crate) fn yields(item: &ItemFn, sites: &[Site]) -> syn::Result<()> {
    let mut errors: Option<syn::Error> = None;
    let mut push = |e: syn::Error| match &mut errors {
        Some(all) => all.combine(e),
        None => errors = Some(e),
    };
    match sites {
        [] => push(format_err!(
            item.sig.ident,
            "#[async_context_manager] fn `{}` has no `yield_!`: it must yield exactly once, \
             the value the scope's body receives",
            item.sig.ident
        )),
        [_] => {}
        [first, .., last] => {
            // One error for the one mistake, spanning the first `yield_!`
            // to the last, so that rustc shows them all.
            let range: proc_macro2::TokenStream = [first.span, last.span]
                .into_iter()
                .map(|span| proc_macro2::TokenTree::Ident(proc_macro2::Ident::new("yield_", span)))
                .collect();
            push(syn::Error::new_spanned(
                range,
                format!(
                    "#[async_context_manager] fn may contain only one `yield_!` (this fn has {}, \
                     from the first to the last marked here): an async context manager enters \
                     once and exits once",
                    sites.len()
                ),
            ));
        }
    }
    for site in sites {
        if let Some(why) = misplaced(&site.context) {
            push(syn::Error::new(
                site.span,
                format!("#[async_context_manager]: `yield_!` cannot be {why}"),
            ));
        }
        if let Some(e) = &site.error {
            push(e.clone());
        }
    }
    errors.map_or(Ok(()), Err)
}

/// Why a `yield_!` in this context cannot be awaited in place, and what to
/// write instead; `None` where it can.
fn misplaced(context: &Context) -> Option<String> {
    Some(match context {
        Context::Plain => return None,
        Context::Loop => "inside a loop: it must be reached at most once".into(),
        Context::Closure => "inside a closure: it must be in the fn's own body".into(),
        Context::AsyncBlock => {
            "inside a nested `async` block: it must be in the fn's own body".into()
        }
        Context::NestedItem => "inside a nested fn or item: it must be in the fn's own body".into(),
        Context::Macro(name) => format!(
            "inside another macro's input (`{name}!`): the attribute cannot see what `{name}!` \
             does with it, and the yield must be awaited in place in the fn's own body; \
             write `let outcome = yield_!(..);` before it and use `outcome` inside"
        ),
        Context::WithScope => "inside a `with_scope!`: its block is a future the scope \
             polls, not the fn's own frame; hold the resource as a local instead — the code \
             after `yield_!` runs on every path, as an exit does: \
             `let mut guard = lock.lock().await; let outcome = yield_!(&mut *guard);`"
            .into(),
        Context::NotExpr => "used as a pattern, type or item: it is an expression".into(),
    })
}

/// The fn's trailing `Ok(..)`, if it has one: the attribute supplies the
/// fn's `Ok(())` itself, so the user's would be a type error about `()`.
fn ok_tail(block: &Block) -> Option<&Expr> {
    let Some(Stmt::Expr(expr, None)) = block.stmts.last() else {
        return None;
    };
    let Expr::Call(call) = expr else { return None };
    let Expr::Path(path) = &*call.func else {
        return None;
    };
    path.path.is_ident("Ok").then_some(expr)
}

/// No trailing `Ok(..)`: the body's cleanup code ends the fn.
pub(crate) fn tail(item: &ItemFn) -> syn::Result<()> {
    match ok_tail(&item.block) {
        Some(expr) => Err(format_err!(
            expr,
            "#[async_context_manager] supplies the fn's `Ok(())` itself: remove this; \
             the code after `yield_!` is the exit, and a `?` in it fails the exit"
        )),
        None => Ok(()),
    }
}

/// Drops a trailing `Ok(..)` (already reported by [`tail`]) from the stub
/// body, so that it adds no type error of its own.
pub(crate) fn strip_ok_tail(block: &mut Block) {
    if ok_tail(block).is_some() {
        block.stmts.pop();
    }
}
