//! Finds `yield_!` in the fn body and rewrites it into an await on the
//! yielder, recording where each one was and in what context.
//!
//! Soundness rests on this visitor (see the runtime's `generator` docs, the
//! lending invariant): a `yield_!` is rewritten only where the attribute
//! sees its whole context — the fn's own straight-line code — and the
//! `.await` is emitted here, so the yield future is awaited in place.
//! Everywhere else (a loop, closure, `async` block, nested item, another
//! macro's input, `with_scope!` included) it is recorded with that
//! context, and `valid.rs` turns it into an error.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{Expr, Macro, Stmt};

/// Where a `yield_!` stands, if not plainly in the fn's straight-line code.
#[derive(Clone, PartialEq, Eq)]
pub(crate) enum Context {
    Plain,
    Loop,
    Closure,
    AsyncBlock,
    NestedItem,
    /// In the input of another macro, named by its path.
    Macro(String),
    /// In a `with_scope!` (whose block is a future the scope polls).
    WithScope,
    /// Somewhere a macro call is not an expression (a pattern, a type).
    NotExpr,
}

/// One `yield_!` found.
pub(crate) struct Site {
    pub(crate) span: Span,
    pub(crate) context: Context,
    /// Problems with its argument (e.g. empty `yield_!()`).
    pub(crate) error: Option<syn::Error>,
    /// The macro path as the user wrote it (`yield_`, `contextlib::yield_`).
    pub(crate) path: TokenStream,
}

/// Rewrites `yield_!(x)` into `(__acm_co.<method>(x).await)`.
pub(crate) struct YieldRewriter {
    co: Ident,
    method: Ident,
    /// The facade path.
    krate: TokenStream,
    /// After an error: every `yield_!`, wherever it is, becomes a typed
    /// placeholder, so the rest of the body still type-checks (one
    /// mistake, one error) and its imports stay used.
    stub: bool,
    context: Context,
    pub(crate) sites: Vec<Site>,
}

impl YieldRewriter {
    pub(crate) fn new(co: Ident, method: &str, krate: TokenStream) -> Self {
        YieldRewriter {
            co,
            method: Ident::new(method, Span::mixed_site()),
            krate,
            stub: false,
            context: Context::Plain,
            sites: Vec::new(),
        }
    }

    /// The rewriter of a body that will not run (see `stub`).
    pub(crate) fn stub(krate: TokenStream) -> Self {
        YieldRewriter {
            stub: true,
            ..YieldRewriter::new(Ident::new("__acm_co", Span::mixed_site()), "stub", krate)
        }
    }

    /// `KRATE::__private::stub_yield`, spanned at `span`.
    fn stub_path(&self, span: Span) -> TokenStream {
        let krate = &self.krate;
        quote_spanned!(span=> #krate::__private::stub_yield)
    }

    fn within(&mut self, context: Context, f: impl FnOnce(&mut Self)) {
        let outer = self.context.clone();
        // The first non-plain context is the one to report.
        if outer == Context::Plain {
            self.context = context;
        }
        f(self);
        self.context = outer;
    }

    /// The replacement of one `yield_!(args)` in expression position.
    ///
    /// Input: `yield_!(&mut x)`. Output: `__acm_co.lend_mut(&mut x).await`
    /// (in an invisible group, so precedence holds without parentheses),
    /// spanned on the user's `yield_` so type errors point at their tokens.
    /// The yielder never goes into another macro, not even one the user's
    /// `yield_` path might resolve to; that path is kept used by the
    /// `yield_!(@__acm_unused);` that `expand.rs` puts at the top of the body.
    fn rewrite(&mut self, mac: &Macro) -> TokenStream {
        let span = mac
            .path
            .segments
            .last()
            .map_or_else(Span::call_site, |s| s.ident.span());
        let path = mac.path.to_token_stream();
        let Ok(mut value) = syn::parse2::<Expr>(mac.tokens.clone()) else {
            self.sites.push(Site {
                span,
                context: self.context.clone(),
                error: Some(syn::Error::new(
                    span,
                    "`yield_!` takes one expression: the value the scope's body receives",
                )),
                path,
            });
            return quote_spanned!(span=> ::core::unreachable!());
        };
        self.sites.push(Site {
            span,
            context: self.context.clone(),
            error: None,
            path,
        });
        // A `yield_!` inside the argument is a second yield: find it too.
        self.visit_expr_mut(&mut value);
        if self.stub {
            let stub = self.stub_path(span);
            return quote_spanned!(span=> #stub(#value));
        }
        // Hygiene of the attribute, location of the user's tokens.
        let at = |ident: &Ident, span: Span| {
            let mut ident = ident.clone();
            ident.set_span(ident.span().located_at(span));
            ident
        };
        let co = at(&self.co, span);
        let method = at(&self.method, span);
        let value_span = value.span();
        let local = at(&Ident::new("__acm_value", Span::mixed_site()), value_span);
        let krate = &self.krate;
        // The user's expression is evaluated before, outside the `unsafe`
        // block, which holds only the call on two hygienic locals (see
        // `expand.rs` on why nothing else may be in one).
        // The `unsafe` token carries the attribute's hygiene, not the
        // user's: it is the expansion's, so a user's `forbid(unsafe_code)`
        // does not apply to it.
        let unsafe_block = quote_spanned! {Span::mixed_site().located_at(span)=>
            unsafe { #krate::__private::Co::#method(#co, #local) }
        };
        let call = quote_spanned! {span=>
            {
                let #local = #value;
                #unsafe_block
            }.await
        };
        let mut group = Group::new(proc_macro2::Delimiter::None, call);
        group.set_span(span);
        TokenTree::Group(group).into()
    }

    /// Records a `yield_!` where it cannot be awaited in place.
    fn record(&mut self, span: Span, path: TokenStream, context: Context) {
        let context = if self.context == Context::Plain {
            context
        } else {
            self.context.clone()
        };
        self.sites.push(Site {
            span,
            context,
            error: None,
            path,
        });
    }

    /// Finds `yield_ ! (..)` inside another macro's tokens, which syn does
    /// not parse: each is recorded. Returns the tokens as they are, or in a
    /// stub with each `yield_ !` replaced by the placeholder.
    fn scan(&mut self, tokens: &TokenStream, context: &Context) -> TokenStream {
        let tokens: Vec<TokenTree> = tokens.clone().into_iter().collect();
        let mut out = Vec::with_capacity(tokens.len());
        let mut i = 0;
        while i < tokens.len() {
            match (&tokens[i], tokens.get(i + 1)) {
                (TokenTree::Ident(ident), Some(TokenTree::Punct(bang)))
                    if ident == "yield_" && bang.as_char() == '!' =>
                {
                    self.record(
                        ident.span(),
                        TokenTree::Ident(ident.clone()).into(),
                        context.clone(),
                    );
                    if self.stub {
                        out.extend(self.stub_path(ident.span()));
                        i += 2;
                        continue;
                    }
                    out.push(tokens[i].clone());
                }
                (TokenTree::Group(g), _) => {
                    let mut inner = Group::new(g.delimiter(), self.scan(&g.stream(), context));
                    inner.set_span(g.span());
                    out.push(TokenTree::Group(inner));
                }
                (token, _) => out.push(token.clone()),
            }
            i += 1;
        }
        out.into_iter().collect()
    }
}

/// Does a token stream contain `yield_ !` anywhere?
fn contains_yield(tokens: &TokenStream) -> bool {
    let tokens: Vec<TokenTree> = tokens.clone().into_iter().collect();
    tokens
        .iter()
        .enumerate()
        .any(|(i, t)| match (t, tokens.get(i + 1)) {
            (TokenTree::Ident(ident), Some(TokenTree::Punct(bang))) => {
                ident == "yield_" && bang.as_char() == '!'
            }
            (TokenTree::Group(g), _) => contains_yield(&g.stream()),
            _ => false,
        })
}

fn is_named(path: &syn::Path, name: &str) -> bool {
    path.segments.last().is_some_and(|s| s.ident == name)
}

fn is_yield(path: &syn::Path) -> bool {
    is_named(path, "yield_")
}

/// `pin`, `tokio::select`, ... as written.
fn path_name(path: &syn::Path) -> String {
    path.segments
        .iter()
        .map(|s| s.ident.to_string())
        .collect::<Vec<_>>()
        .join("::")
}

/// Does an item carry `#[async_context_manager]` (then its yields are its own)?
fn is_manager_fn(attrs: &[syn::Attribute]) -> bool {
    attrs
        .iter()
        .any(|a| is_named(a.path(), "async_context_manager"))
}

impl VisitMut for YieldRewriter {
    fn visit_expr_mut(&mut self, expr: &mut Expr) {
        if let Expr::Macro(m) = expr {
            if is_yield(&m.mac.path) {
                *expr = Expr::Verbatim(self.rewrite(&m.mac));
                return;
            }
        }
        visit_mut::visit_expr_mut(self, expr);
    }

    fn visit_stmt_mut(&mut self, stmt: &mut Stmt) {
        if let Stmt::Macro(m) = stmt {
            if is_yield(&m.mac.path) {
                let rewritten = self.rewrite(&m.mac);
                *stmt = Stmt::Expr(Expr::Verbatim(rewritten), m.semi_token);
                return;
            }
        }
        visit_mut::visit_stmt_mut(self, stmt);
    }

    fn visit_macro_mut(&mut self, mac: &mut Macro) {
        if is_yield(&mac.path) {
            // Not in expression or statement position (a pattern, a type,
            // an item): `yield_!` there is never awaited in place.
            let span = mac
                .path
                .segments
                .last()
                .map_or_else(Span::call_site, |s| s.ident.span());
            self.record(span, mac.path.to_token_stream(), Context::NotExpr);
        } else if contains_yield(&mac.tokens) {
            // Another macro's input: what it does with the tokens is out of
            // sight, so a `yield_!` there is an error.
            let context = if is_named(&mac.path, "with_scope") {
                Context::WithScope
            } else {
                Context::Macro(path_name(&mac.path))
            };
            mac.tokens = self.scan(&mac.tokens, &context);
        }
    }

    fn visit_expr_closure_mut(&mut self, e: &mut syn::ExprClosure) {
        self.within(Context::Closure, |v| {
            visit_mut::visit_expr_closure_mut(v, e);
        });
    }

    fn visit_expr_async_mut(&mut self, e: &mut syn::ExprAsync) {
        self.within(Context::AsyncBlock, |v| {
            visit_mut::visit_expr_async_mut(v, e);
        });
    }

    fn visit_expr_loop_mut(&mut self, e: &mut syn::ExprLoop) {
        self.within(Context::Loop, |v| visit_mut::visit_expr_loop_mut(v, e));
    }

    fn visit_expr_while_mut(&mut self, e: &mut syn::ExprWhile) {
        self.within(Context::Loop, |v| visit_mut::visit_expr_while_mut(v, e));
    }

    fn visit_expr_for_loop_mut(&mut self, e: &mut syn::ExprForLoop) {
        // The iterator is evaluated once; the body many times.
        self.visit_expr_mut(&mut e.expr);
        self.within(Context::Loop, |v| {
            v.visit_pat_mut(&mut e.pat);
            v.visit_block_mut(&mut e.body);
        });
    }

    fn visit_item_mut(&mut self, item: &mut syn::Item) {
        if let syn::Item::Fn(f) = item {
            if is_manager_fn(&f.attrs) {
                // A nested manager fn: its `yield_!` belong to its own attribute.
                return;
            }
        }
        self.within(Context::NestedItem, |v| visit_mut::visit_item_mut(v, item));
    }
}
