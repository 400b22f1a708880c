//! Finds `yield_!` in the fn body and rewrites its input into an await on
//! the yielder, recording where each one was and in what context.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::quote_spanned;
use syn::visit_mut::{self, VisitMut};
use syn::{Expr, Macro};

/// Where a `yield_!` stands, if not plainly in the fn's straight-line code.
#[derive(Clone, Copy, PartialEq, Eq)]
pub(crate) enum Context {
    Plain,
    Loop,
    Closure,
    AsyncBlock,
    NestedItem,
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

/// Rewrites `yield_!(x)` into `__acm_co.<method>(x).await`.
pub(crate) struct YieldRewriter {
    co: Ident,
    method: Ident,
    context: Context,
    pub(crate) sites: Vec<Site>,
}

impl YieldRewriter {
    pub(crate) fn new(co: Ident, method: &str) -> Self {
        YieldRewriter {
            co,
            method: Ident::new(method, Span::mixed_site()),
            context: Context::Plain,
            sites: Vec::new(),
        }
    }

    fn within(&mut self, context: Context, f: impl FnOnce(&mut Self)) {
        let outer = self.context;
        // The first non-plain context is the one to report.
        if outer == Context::Plain {
            self.context = context;
        }
        f(self);
        self.context = outer;
    }

    /// The new input of one `yield_!` invocation: the facade's `yield_!`
    /// has an internal arm that turns `@__acm_yield co.method(value)` into
    /// `co.method(value).await`. Keeping the user's macro path keeps their
    /// `use async_contextlib::yield_` import meaningful.
    fn rewrite(&mut self, path: TokenStream, span: Span, args: &TokenStream) -> TokenStream {
        let error = match syn::parse2::<Expr>(args.clone()) {
            Ok(_) => None,
            Err(_) => Some(syn::Error::new(
                span,
                "`yield_!` takes one expression: the value the scope's body receives",
            )),
        };
        self.sites.push(Site {
            span,
            context: self.context,
            error,
            path,
        });
        let co = &self.co;
        let method = &self.method;
        quote_spanned!(span=> @__acm_yield #co.#method(#args))
    }

    /// Rewrites a `yield_!` invocation in place, or scans another macro's tokens.
    fn visit_macro_tokens(&mut self, mac: &mut Macro) {
        if is_yield(&mac.path) {
            let span = mac
                .path
                .segments
                .last()
                .map_or_else(Span::call_site, |s| s.ident.span());
            let path = quote::ToTokens::to_token_stream(&mac.path);
            mac.tokens = self.rewrite(path, span, &mac.tokens);
        } else {
            mac.tokens = self.scan(mac.tokens.clone());
        }
    }

    /// Rewrites `yield_ ! (..)` inside an arbitrary token stream (another
    /// macro's input), which syn does not parse.
    fn scan(&mut self, tokens: TokenStream) -> TokenStream {
        let mut tokens: Vec<TokenTree> = tokens.into_iter().collect();
        let mut i = 0;
        while i < tokens.len() {
            if let (
                TokenTree::Ident(ident),
                Some(TokenTree::Punct(bang)),
                Some(TokenTree::Group(args)),
            ) = (&tokens[i], tokens.get(i + 1), tokens.get(i + 2))
            {
                if ident == "yield_" && bang.as_char() == '!' {
                    let mut group = Group::new(
                        args.delimiter(),
                        self.rewrite(
                            TokenTree::Ident(ident.clone()).into(),
                            ident.span(),
                            &args.stream(),
                        ),
                    );
                    group.set_span(args.span());
                    tokens[i + 2] = TokenTree::Group(group);
                    i += 3;
                    continue;
                }
            }
            if let TokenTree::Group(g) = &tokens[i] {
                let mut inner = Group::new(g.delimiter(), self.scan(g.stream()));
                inner.set_span(g.span());
                tokens[i] = TokenTree::Group(inner);
            }
            i += 1;
        }
        tokens.into_iter().collect()
    }
}

fn is_yield(path: &syn::Path) -> bool {
    path.segments.last().is_some_and(|s| s.ident == "yield_")
}

/// Does an item carry `#[async_context_manager]` (then its yields are its own)?
fn is_manager_fn(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path()
            .segments
            .last()
            .is_some_and(|s| s.ident == "async_context_manager")
    })
}

impl VisitMut for YieldRewriter {
    fn visit_macro_mut(&mut self, mac: &mut Macro) {
        // Every macro invocation (expression, statement, pattern, type, item).
        self.visit_macro_tokens(mac);
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
