//! `with_scope!`: parse `M1 as a, M2 as b => { block }` and expand it to
//! straight-line code over the runtime's `Scope` and `Guard`s.

use proc_macro2::{Delimiter, Group, Ident, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::parse::Parser;
use syn::punctuated::Punctuated;
use syn::spanned::Spanned;
use syn::{Expr, Pat, Token};

const SYNTAX: &str = "with_scope!(manager as name, ... => { block })";
const BINDING: &str = "a name, `mut name`, `_` or a pattern such as `(a, b)`";

/// What a manager's value is bound to.
enum Binding {
    /// No `as`: the value is held, unnamed, until the block ends.
    None,
    /// `as _`: the same, written out.
    Wild,
    /// `as name` / `as mut name`.
    Name { mutable: bool, ident: Ident },
    /// Any other irrefutable pattern: `as (conn, tx)`, `as Pair { a, b }`.
    /// `names` are the bindings it introduces, with their `mut`.
    Pattern {
        pat: Box<Pat>,
        names: Vec<(Ident, bool)>,
    },
}

struct Manager {
    expr: Expr,
    binding: Binding,
}

pub(crate) struct Input {
    krate: TokenStream,
    managers: Vec<Manager>,
    block: Group,
}

/// The macro's entry.
pub(crate) fn with_scope(input: TokenStream) -> syn::Result<TokenStream> {
    let input = parse(input)?;
    Ok(expand(&input))
}

fn parse(input: TokenStream) -> syn::Result<Input> {
    let mut tokens = input.into_iter();
    let krate = match tokens.next() {
        Some(TokenTree::Group(g)) if g.delimiter() == Delimiter::Parenthesis => g.stream(),
        _ => {
            return Err(syn::Error::new(
                Span::call_site(),
                "with_scope_inner! is internal: use with_scope!",
            ));
        }
    };
    parse_body(tokens.collect(), krate)
}

/// Parses what the user wrote inside `with_scope!(..)`; `krate` is the
/// facade's path.
pub(crate) fn parse_body(input: TokenStream, krate: TokenStream) -> syn::Result<Input> {
    let tokens: Vec<TokenTree> = input.into_iter().collect();
    let Some(arrow) = find_arrow(&tokens) else {
        let span = tokens.last().map_or_else(Span::call_site, TokenTree::span);
        return Err(syn::Error::new(
            span,
            format!("expected `=>` followed by the scope's block: {SYNTAX}"),
        ));
    };
    let rest = &tokens[arrow + 2..];
    let block = match (rest, rest.first().and_then(brace_block)) {
        ([_], Some(block)) => block,
        ([], _) => {
            return Err(syn::Error::new(
                tokens[arrow + 1].span(),
                format!("expected a `{{ ... }}` block after `=>`: {SYNTAX}"),
            ));
        }
        (rest, _) => {
            let span = rest[0].span();
            return Err(syn::Error::new(
                span,
                format!("expected one `{{ ... }}` block after `=>`: {SYNTAX}"),
            ));
        }
    };
    let managers = parse_managers(&tokens[..arrow], tokens[arrow].span())?;
    Ok(Input {
        krate,
        managers,
        block,
    })
}

/// A `{ ... }` group, also one forwarded by a `macro_rules!` as a `$b:block`
/// fragment (inside an invisible group).
fn brace_block(tree: &TokenTree) -> Option<Group> {
    let TokenTree::Group(g) = tree else {
        return None;
    };
    match g.delimiter() {
        Delimiter::Brace => Some(g.clone()),
        Delimiter::None => {
            let inner: Vec<TokenTree> = g.stream().into_iter().collect();
            match &inner[..] {
                [tree] => brace_block(tree),
                _ => None,
            }
        }
        _ => None,
    }
}

/// The first `=>` outside any group.
fn find_arrow(tokens: &[TokenTree]) -> Option<usize> {
    tokens.windows(2).position(|w| {
        matches!((&w[0], &w[1]),
            (TokenTree::Punct(a), TokenTree::Punct(b))
                if a.as_char() == '=' && b.as_char() == '>' && a.spacing() == proc_macro2::Spacing::Joint)
    })
}

/// Splits `M1 as a, M2, M3 as mut c` into managers. A top-level `as`
/// followed by `_`, `name`, `mut name` or another pattern and then `,` or
/// the end is a binding; any other `as` (e.g. in `<T as Trait>::new()`) is part of the
/// expression. The expressions between bindings are parsed by syn, so
/// commas inside generics (`Pool::<A, B>::new()`) are handled.
fn parse_managers(tokens: &[TokenTree], arrow: Span) -> syn::Result<Vec<Manager>> {
    if tokens.is_empty() {
        return Err(syn::Error::new(
            arrow,
            format!("expected at least one manager before `=>`: {SYNTAX}"),
        ));
    }
    let mut managers = Vec::new();
    let mut start = 0;
    let mut i = 0;
    while i < tokens.len() {
        let TokenTree::Ident(ident) = &tokens[i] else {
            i += 1;
            continue;
        };
        if ident != "as" {
            i += 1;
            continue;
        }
        match binding_after(&tokens[i + 1..], ident.span()) {
            Some(Ok((binding, used))) => {
                let segment = &tokens[start..i];
                let mut exprs = parse_exprs(segment, ident.span())?;
                let Some(expr) = exprs.pop() else {
                    return Err(syn::Error::new(
                        ident.span(),
                        format!("expected a manager expression before `as`: {SYNTAX}"),
                    ));
                };
                managers.extend(exprs.into_iter().map(|expr| Manager {
                    expr,
                    binding: Binding::None,
                }));
                managers.push(Manager { expr, binding });
                i += 1 + used;
                // Skip the `,` after the binding.
                if i < tokens.len() {
                    i += 1;
                }
                start = i;
            }
            Some(Err(error)) => return Err(error),
            None => i += 1,
        }
    }
    if start < tokens.len() {
        let rest = &tokens[start..];
        managers.extend(
            parse_exprs(rest, rest[0].span())?
                .into_iter()
                .map(|expr| Manager {
                    expr,
                    binding: Binding::None,
                }),
        );
    }
    if managers.is_empty() {
        return Err(syn::Error::new(
            arrow,
            format!("expected at least one manager before `=>`: {SYNTAX}"),
        ));
    }
    Ok(managers)
}

/// After an `as`: `Some(Ok((binding, tokens used)))` if a binding follows
/// (and then `,` or the end), `Some(Err)` for an `as` at the end of a
/// manager without a valid binding, `None` if this `as` belongs to the
/// expression.
fn binding_after(tokens: &[TokenTree], as_span: Span) -> Option<syn::Result<(Binding, usize)>> {
    let is_end = |t: Option<&TokenTree>| match t {
        None => true,
        Some(TokenTree::Punct(p)) => p.as_char() == ',',
        _ => false,
    };
    match tokens {
        [TokenTree::Ident(m), TokenTree::Ident(name), ..]
            if m == "mut" && is_end(tokens.get(2)) =>
        {
            Some(check_name(name).map(|()| {
                (
                    Binding::Name {
                        mutable: true,
                        ident: name.clone(),
                    },
                    2,
                )
            }))
        }
        [TokenTree::Ident(name), ..] if is_end(tokens.get(1)) => Some(if name == "_" {
            Ok((Binding::Wild, 1))
        } else {
            check_name(name).map(|()| {
                (
                    Binding::Name {
                        mutable: false,
                        ident: name.clone(),
                    },
                    1,
                )
            })
        }),
        [] => Some(Err(syn::Error::new(
            as_span,
            format!("expected a binding after `as`: {BINDING}: {SYNTAX}"),
        ))),
        [first, ..] if is_end(Some(first)) => Some(Err(syn::Error::new(
            first.span(),
            format!("expected a binding after `as`: {BINDING}: {SYNTAX}"),
        ))),
        [TokenTree::Literal(lit), ..] | [TokenTree::Punct(_), TokenTree::Literal(lit), ..] => {
            Some(Err(syn::Error::new(
                lit.span(),
                format!("expected a binding after `as`: {BINDING}: {SYNTAX}"),
            )))
        }
        _ => pattern_after(tokens),
    }
}

/// `as PATTERN` up to the next `,` or the end, if those tokens are a
/// pattern; otherwise this `as` is a cast or a qualified path inside the
/// expression (`<T as Trait>::new()`), and `None`.
fn pattern_after(tokens: &[TokenTree]) -> Option<syn::Result<(Binding, usize)>> {
    let used = tokens
        .iter()
        .position(|t| matches!(t, TokenTree::Punct(p) if p.as_char() == ','))
        .unwrap_or(tokens.len());
    let stream: TokenStream = tokens[..used].iter().cloned().collect();
    let pat = Pat::parse_single.parse2(stream).ok()?;
    let mut names = Vec::new();
    bound_names(&pat, &mut names);
    Some(Ok((
        Binding::Pattern {
            pat: Box::new(pat),
            names,
        },
        used,
    )))
}

/// The names a pattern binds, with whether each is `mut`.
fn bound_names(pat: &Pat, names: &mut Vec<(Ident, bool)>) {
    match pat {
        Pat::Ident(p) => {
            names.push((p.ident.clone(), p.mutability.is_some()));
            if let Some((_, sub)) = &p.subpat {
                bound_names(sub, names);
            }
        }
        Pat::Tuple(p) => p.elems.iter().for_each(|e| bound_names(e, names)),
        Pat::TupleStruct(p) => p.elems.iter().for_each(|e| bound_names(e, names)),
        Pat::Struct(p) => p.fields.iter().for_each(|f| bound_names(&f.pat, names)),
        Pat::Slice(p) => p.elems.iter().for_each(|e| bound_names(e, names)),
        Pat::Reference(p) => bound_names(&p.pat, names),
        Pat::Paren(p) => bound_names(&p.pat, names),
        Pat::Type(p) => bound_names(&p.pat, names),
        // Every branch of an or-pattern binds the same names.
        Pat::Or(p) => {
            if let Some(first) = p.cases.first() {
                bound_names(first, names);
            }
        }
        _ => {}
    }
}

fn check_name(ident: &Ident) -> syn::Result<()> {
    syn::parse2::<Ident>(quote!(#ident))
        .map(|_| ())
        .map_err(|_| {
            syn::Error::new(
                ident.span(),
                format!("expected a binding name after `as`, found the keyword `{ident}`"),
            )
        })
}

fn parse_exprs(tokens: &[TokenTree], at: Span) -> syn::Result<Vec<Expr>> {
    if tokens.is_empty() {
        return Err(syn::Error::new(
            at,
            format!("expected a manager expression: {SYNTAX}"),
        ));
    }
    let stream: TokenStream = tokens.iter().cloned().collect();
    let exprs = Punctuated::<Expr, Token![,]>::parse_terminated.parse2(stream)?;
    Ok(exprs.into_iter().collect())
}

/// Does `ident` appear anywhere in `tokens`?
fn mentions(tokens: &TokenStream, ident: &Ident) -> bool {
    tokens.clone().into_iter().any(|t| match t {
        TokenTree::Ident(i) => i == *ident,
        TokenTree::Group(g) => mentions(&g.stream(), ident),
        _ => false,
    })
}

// Input:
//     with_scope!(A as a, B(a) as mut b => { BLOCK })
// Output:
//     {
//         use KRATE::__private::{...dispatch traits... as _};
//         let mut __acm_scope = KRATE::__private::Scope::new();
//         let __acm_m0 = A;
//         let __acm_d0 = (&&Probe::new(&__acm_m0, exit_task)).__acm_detach();
//         let mut __acm_g0 = Guard::new(__acm_m0, __acm_d0);
//         let __acm_c0 = __acm_scope.converter(&__acm_g0, |e| (describe(&e), raise(e)));
//         if let Some(__acm_v0) = __acm_scope.enter(&mut __acm_g0, __acm_c0).await {
//             let a = __acm_v0;
//             ... the same for B, binding `b` ...
//                 __acm_scope.body(async { let a = a; let mut b = b; BLOCK }, classify).await;
//             __acm_scope.exit(&mut __acm_g1, __acm_c1).await;
//         }
//         __acm_scope.exit(&mut __acm_g0, __acm_c0).await;
//         __acm_scope.finish()
//     }
// Bindings the block mentions are moved into it (it owns them); the others
// stay in the enclosing frame, where later managers may use them.
pub(crate) fn expand(input: &Input) -> TokenStream {
    let krate = &input.krate;
    let scope = Ident::new("__acm_scope", Span::mixed_site());
    // Named with the user's hygiene (the first manager's span): `Check`'s
    // call, on each manager's tokens, must be in their syntax context for
    // rustc to report a value that is not a manager on them.
    let check = Ident::new(
        "__AcmCheck",
        input
            .managers
            .first()
            .map_or_else(Span::call_site, |m| m.expr.span()),
    );
    let block_tokens = input.block.stream();
    let names = input.managers.iter().flat_map(|m| match &m.binding {
        Binding::Name { mutable, ident } => vec![(ident.clone(), *mutable)],
        Binding::Pattern { names, .. } => names.clone(),
        Binding::None | Binding::Wild => Vec::new(),
    });
    let moves: Vec<_> = names
        .filter(|(ident, _)| mentions(&block_tokens, ident))
        .map(|(ident, mutable)| {
            let mutability = mutable.then(|| quote!(mut));
            quote!(#[allow(unused_mut)] let #mutability #ident = #ident;)
        })
        .collect();
    let block = &input.block;
    let result = Ident::new("__acm_r", Span::mixed_site());
    let outcome = Ident::new("__acm_o", Span::mixed_site());
    let classify = quote_spanned! {block.span()=>
        (&&&&#krate::__private::Classify(&#result)).__acm_outcome()
    };
    // The block's value passes through `Witness::value`, an argument of
    // the scope's type: a coercion site, so that a block of `Box<T>` (or
    // `&String`) can still be a scope of `Box<dyn Trait>` (or `&str`) now
    // that the context's type reaches the scope first.
    let witness = Ident::new("__acm_w", Span::mixed_site());
    // On the macro's call, like the enter's and exit's: outside `async`,
    // rustc then reports the three awaits as one error.
    let body_await = quote!(.await);
    let mut inner = quote_spanned! {block.span()=>
        let #witness = #scope.witness();
        #scope.body(
            async {
                #(#moves)*
                // A block that diverges (panics) makes this call unreachable.
                #[allow(unreachable_code, clippy::diverging_sub_expression)]
                let #result = #witness.value({ #block_tokens });
                #result
            },
            |#result| { let #outcome = #classify; (#result, #outcome) },
        )#body_await;
    };
    for (i, manager) in input.managers.iter().enumerate().rev() {
        inner = expand_manager(krate, &scope, i, manager, &inner);
    }
    quote! {
        {
            #[allow(unused_imports)]
            use #krate::__private::{
                CheckManager as _, ClassifyDebug as _, ClassifyDisplay as _, ClassifyOpaque as _, ClassifyOther as _,
                DescribeDebug as _, DescribeDisplay as _, DescribeOpaque as _,
                PickDetach as _, PickInPlace as _, RaiseFrom as _, RaiseNever as _, RaiseNone as _,
                Check as #check,
            };
            let mut #scope = #krate::__private::Scope::new();
            // Never taken: gives the scope the type its context expects
            // before the block's value is classified (`Scope::expected`).
            if false {
                #scope.expected()
            } else {
                #inner
                #scope.finish()
            }
        }
    }
}

fn expand_manager(
    krate: &TokenStream,
    scope: &Ident,
    i: usize,
    manager: &Manager,
    inner: &TokenStream,
) -> TokenStream {
    let mixed = Span::mixed_site();
    let held = format_ident!("__acm_m{}", i, span = mixed);
    let detach = format_ident!("__acm_d{}", i, span = mixed);
    let guard = format_ident!("__acm_g{}", i, span = mixed);
    let convert = format_ident!("__acm_c{}", i, span = mixed);
    let value = format_ident!("__acm_v{}", i, span = mixed);
    let error = Ident::new("__acm_e", mixed);
    let expr = &manager.expr;
    let span = expr.span();
    // `__private::Check`, imported by `expand` and named here on the
    // manager's tokens: a value that is not a manager is reported there.
    let check = Ident::new("__AcmCheck", span);
    let bind = match &manager.binding {
        Binding::Name { mutable, ident } => {
            let mutability = mutable.then(|| quote!(mut));
            quote!(#[allow(unused_mut)] let #mutability #ident = #value;)
        }
        // Spanned on the pattern: a refutable one is reported there, on
        // the user's tokens.
        Binding::Pattern { pat, .. } => {
            quote_spanned!(pat.span()=> #[allow(unused_mut)] let #pat = #value;)
        }
        Binding::None | Binding::Wild => quote!(),
    };
    let setup = quote_spanned! {span=>
        let #held = #check(#expr).__acm_manager();
        let #detach = (&&#krate::__private::Probe::new(&#held, #krate::__private::exit_task)).__acm_detach();
        let mut #guard = #krate::__private::Guard::new(#held, #detach);
        // The conversion is spelled out on the user's tokens (see `Raise`):
        // clippy must not read it as theirs.
        #[allow(clippy::redundant_closure, clippy::useless_conversion)]
        let #convert = #scope.converter(&#guard, |#error| {
            let __acm_f = (&&&#krate::__private::Describe(&#error)).__acm_failure();
            (__acm_f, #krate::__private::Raise::new(#error).__acm_raise(|__acm_e| <_ as ::core::convert::From<_>>::from(__acm_e)))
        });
    };
    // A lent value kept past the block must be one error, named on the
    // binding. Every borrow of the guard is located there: the enter's
    // (which the value borrows), a shared one once the block is done, and
    // the exit's. The shared one is the error ("cannot borrow as immutable
    // because it is also borrowed as mutable"; two mutable borrows at one
    // span would be called a loop's iterations). rustc reports one error
    // per place and span, so the exit's conflict and the guard's end of
    // life (a "temporary value dropped while borrowed") are not repeated.
    let at = match &manager.binding {
        Binding::Name { ident, .. } => ident.span(),
        Binding::Pattern { pat, .. } => pat.span(),
        Binding::None | Binding::Wild => span,
    };
    let located = Ident::new(&guard.to_string(), mixed.located_at(at));
    let borrow = quote_spanned!(at=> &mut #located);
    let done = quote_spanned!(at=> #krate::__private::touch(&#located););
    quote! {
        #setup
        if let ::core::option::Option::Some(#value) = #scope.enter(#borrow, #convert).await {
            #bind
            #inner
        }
        #done
        #scope.exit(#borrow, #convert).await;
    }
}
