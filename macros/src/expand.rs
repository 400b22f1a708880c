//! Code generation for `#[async_context_manager]`.

use proc_macro2::{Group, Ident, Span, TokenStream, TokenTree};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{FnArg, ItemFn, Pat, PatIdent, ReturnType};

use crate::args::Args;
use crate::parse::{self, ManagerFn, Mode};
use crate::valid;
use crate::yields::YieldRewriter;

/// The attribute's entry: parse → validate → expand.
#[allow(
    clippy::needless_pass_by_value,
    reason = "the proc-macro entry's signature: it owns its input"
)]
pub(crate) fn async_context_manager(
    args: TokenStream,
    item: TokenStream,
) -> syn::Result<TokenStream> {
    // A bad argument is reported next to the item, which is still expanded
    // (with the default crate path) so that its uses keep resolving.
    let (args, mut errors) = match Args::parse(args) {
        Ok(args) => (args, None),
        Err(error) => (Args::default(), Some(error)),
    };
    let item = parse::item_fn(&item).map_err(|e| combine(errors.take(), e))?;
    let krate = if let Some((path, _)) = &args.krate {
        quote!(#path)
    } else {
        quote!(::async_contextlib)
    };
    // A non-`async` fn is reported and still expanded as if it were one,
    // so that its callers see a manager and its body is checked as usual.
    if let Err(error) = valid::asyncness(&item) {
        errors = Some(combine(errors, error));
    }
    let mut manager = match ManagerFn::new(item.clone(), args.borrowing.is_some()) {
        Ok(manager) => manager,
        Err(error) => return Ok(with_stub_body(combine(errors, error), &item, &krate)),
    };
    let co = Ident::new("__acm_co", Span::mixed_site());
    let mut rewriter = YieldRewriter::new(co.clone(), yield_method(&manager.mode), krate.clone());
    rewriter.visit_block_mut(&mut manager.item.block);
    let uses = yield_uses(&rewriter.sites);
    if let Err(error) = valid::yields(&item, &rewriter.sites) {
        errors = Some(combine(errors, error));
    }
    if let Err(error) = valid::tail(&item) {
        errors = Some(combine(errors, error));
    }
    if let Some(error) = errors {
        // Keep the fn's signature (callers type-check against it) with the
        // body rewritten as a stub that never runs (every `yield_!` a typed
        // placeholder), so one mistake gives one error.
        let mut stub = YieldRewriter::stub(krate.clone());
        manager.item.block.clone_from(&item.block);
        valid::strip_ok_tail(&mut manager.item.block);
        stub.visit_block_mut(&mut manager.item.block);
        let mut out = error.into_compile_error();
        out.extend(expand(&manager, &krate, &co, &uses, true));
        return Ok(out);
    }
    Ok(expand(&manager, &krate, &co, &uses, false))
}

fn combine(first: Option<syn::Error>, then: syn::Error) -> syn::Error {
    match first {
        Some(mut first) => {
            first.combine(then);
            first
        }
        None => then,
    }
}

/// `yield_!(@__acm_unused);` for each `yield_!` the user wrote: the
/// rewritten yields no longer name the user's `yield_` path (the yielder
/// never goes into a macro, see `yields.rs`), and after an error the body
/// is dropped; this keeps their `yield_` import used.
fn yield_uses(sites: &[crate::yields::Site]) -> TokenStream {
    let paths = sites.iter().map(|site| &site.path);
    quote!(#( #paths!(@__acm_unused); )*)
}

fn yield_method(mode: &Mode) -> &'static str {
    match mode {
        Mode::ByValue(_) => "yield_value",
        Mode::LendMut(_) => "lend_mut",
        Mode::LendRef(_) => "lend_ref",
    }
}

/// The error, next to the original fn with a body that does nothing, so
/// that the fn's uses still resolve (its return type could not be read, so
/// there is no manager type to give it). Elided lifetimes in the return
/// type become `'static` there, so the stub adds no error of its own.
fn with_stub_body(error: syn::Error, item: &ItemFn, krate: &TokenStream) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = item;
    let mut sig = sig.clone();
    sig.asyncness = None;
    if let ReturnType::Type(_, ty) = &mut sig.output {
        StaticElided.visit_type_mut(ty);
    }
    let mut block = (**block).clone();
    let mut rewriter = YieldRewriter::stub(krate.clone());
    rewriter.visit_block_mut(&mut block);
    let uses = yield_uses(&rewriter.sites);
    let (outer, inner) = split_attrs(attrs);
    let mut out = error.into_compile_error();
    out.extend(quote! {
        #(#outer)*
        #[allow(unused_variables, unused_mut, unreachable_code, clippy::unused_async)]
        #vis #sig { #(#inner)* #uses ::core::unimplemented!() }
    });
    out
}

/// The fn's attributes before it, and its body's inner ones (`#![allow]`,
/// `//!`, which syn keeps beside them) at the top of the generated body.
fn split_attrs(attrs: &[syn::Attribute]) -> (Vec<&syn::Attribute>, Vec<&syn::Attribute>) {
    attrs
        .iter()
        .partition(|a| matches!(a.style, syn::AttrStyle::Outer))
}

/// `&T` / `'_` → `&'static T` / `'static`.
struct StaticElided;

impl VisitMut for StaticElided {
    fn visit_type_reference_mut(&mut self, r: &mut syn::TypeReference) {
        if r.lifetime.is_none() {
            r.lifetime = Some(syn::Lifetime::new("'static", r.and_token.span));
        }
        syn::visit_mut::visit_type_reference_mut(self, r);
    }
    fn visit_lifetime_mut(&mut self, l: &mut syn::Lifetime) {
        if l.ident == "_" {
            *l = syn::Lifetime::new("'static", l.apostrophe);
        }
    }
}

// Input:
//     #[async_context_manager]
//     pub async fn transaction(db: Db) -> Result<&mut Tx, DbError> { BODY }
// Output:
//     pub fn transaction(db: Db) -> ::async_contextlib::generated::Generator<
//         impl Future<Output = Result<(), DbError>>, LendMut<Tx>, Owned, impl Sized>
//     {
//         struct __AcmBrand;                         // this fn's own: see `Generator::new`
//         let __acm_make = move |__acm_co: Co<LendMut<Tx>, __AcmBrand>| async move {
//             let db = db;                           // the frame owns every argument
//             yield_!(@__acm_unused);                // keeps the user's `yield_` import used
//             let () = { BODY' };                    // yield_!(x) → (__acm_co.lend_mut(x).await)
//             ::core::result::Result::Ok::<(), DbError>(())
//         };
//         let __acm_name = "module::transaction";
//         unsafe { Generator::new(__acm_name, __acm_make) }       // the only `unsafe`: no user tokens
//     }
// With `stub` (after an error) the body was rewritten by the stub rewriter
// (each `yield_!` a typed placeholder): the item type-checks, never runs.
fn expand(
    manager: &ManagerFn,
    krate: &TokenStream,
    co: &Ident,
    uses: &TokenStream,
    stub: bool,
) -> TokenStream {
    let ItemFn {
        attrs,
        vis,
        sig,
        block,
    } = &manager.item;
    let mode_ty = match &manager.mode {
        Mode::ByValue(t) => quote!(#krate::generated::ByValue<#t>),
        Mode::LendMut(t) => quote!(#krate::generated::LendMut<#t>),
        Mode::LendRef(t) => quote!(#krate::generated::LendRef<#t>),
    };
    let output = if let Some(e) = &manager.error {
        quote!(::core::result::Result<(), #e>)
    } else {
        quote!(())
    };
    let owner = if manager.owned {
        quote!(#krate::generated::Owned)
    } else {
        quote!(#krate::generated::Borrowing)
    };

    let mut sig = sig.clone();
    sig.asyncness = None;
    if manager.static_self {
        sig.generics
            .make_where_clause()
            .predicates
            .push(syn::parse_quote!(Self: 'static));
    }
    let prelude = take_arguments(&mut sig);
    let ret_span = match &manager.item.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => sig.ident.span(),
    };
    // A concrete manager type with an opaque future, rather than
    // `impl for<'a> AsyncContextManager<Value<'a> = &'a mut T>`: that
    // higher-ranked binding would require `Self: 'static` (the trait's
    // `where Self: 'a`) and rule out every borrowing manager.
    // The `impl` token carries this crate's edition (2024), whose capture
    // rules let the opaque future capture the fn's elided lifetimes even
    // in an edition-2021 caller (tests/edition2021).
    // The last parameter is the fn's brand (a type local to its body),
    // opaque to callers.
    let impl_kw = syn::Token![impl](Span::mixed_site());
    sig.output = syn::parse_quote_spanned! {ret_span=>
        -> #krate::generated::Generator<
            #impl_kw ::core::future::Future<Output = #output>,
            #mode_ty,
            #owner,
            #impl_kw ::core::marker::Sized,
        >
    };

    let tail = match &manager.error {
        Some(e) => quote_spanned!(block.span()=> ::core::result::Result::Ok::<(), #e>(())),
        None => quote!(),
    };
    // A stub's body never runs and never yields: its yielder is unused.
    let unused_co = stub.then(|| quote!(let _ = #co;));
    let body = quote_spanned! {block.span()=>
        #unused_co
        #(#prelude)*
        #uses
        let _: () = #block;
        #tail
    };
    let name = sig.ident.to_string();
    // After an error the body is gone: its arguments are unused.
    let allow = stub.then(|| quote!(#[allow(unused_variables, unused_mut)]));
    let make = Ident::new("__acm_make", Span::mixed_site());
    let name_local = Ident::new("__acm_name", Span::mixed_site());
    let brand = Ident::new("__AcmBrand", Span::mixed_site());
    // Owned means `'static` (SPEC §5): a lifetime the attribute cannot see
    // (one hidden in an argument's path) fails here, at the argument.
    let owned_checks = if manager.owned && !stub {
        owned_checks(&sig, krate)
    } else {
        Vec::new()
    };
    // The user's body is in the closure and the name is computed before:
    // the `unsafe` block holds one call on two hygienic locals and nothing
    // else — no user tokens (they would get unsafe powers), no macro and
    // no type (a path the user redirected with `crate = "..."` could then
    // expand to code of theirs inside it). Redirected, `Generator::new`
    // can only be a safe fn of the user's own, or fail to type-check; and
    // the yielder's type carries this fn's own brand, so such a fn cannot
    // feed this body a yielder stolen from another fn's expansion.
    let (outer, inner) = split_attrs(attrs);
    quote! {
        #(#outer)*
        #allow
        #vis #sig {
            #(#inner)*
            struct #brand;
            #(#owned_checks)*
            let #make = move |#co: #krate::__private::Co<#mode_ty, #brand>| async move { #body };
            let #name_local: &'static str =
                ::core::concat!(::core::module_path!(), "::", #name);
            // SAFETY: the body uses the yielder only through the one
            // `yield_!` the attribute accepted, in straight-line code, and
            // awaits it in place (yields.rs); see `Generator::new`.
            unsafe { #krate::generated::Generator::new(#name_local, #make) }
        }
    }
}

/// `owned_argument(&arg);` for each argument of an owned manager (after
/// [`take_arguments`], each a plain name), spanned at its type.
fn owned_checks(sig: &syn::Signature, krate: &TokenStream) -> Vec<TokenStream> {
    sig.inputs
        .iter()
        .filter_map(|input| match input {
            FnArg::Typed(arg) => match &*arg.pat {
                Pat::Ident(PatIdent { ident, .. }) => {
                    // The whole call at the type, where the error points.
                    let span = arg.ty.span();
                    let krate = respan(krate.clone(), span);
                    Some(quote_spanned!(span=> #krate::__private::owned_argument(&#ident);))
                }
                _ => None,
            },
            // `Self: 'static` is in the where clause.
            FnArg::Receiver(_) => None,
        })
        .collect()
}

/// Makes the generated future own every argument, as a Python generator's
/// frame does: plain `name` / `mut name` arguments are moved in under their
/// own name; other patterns get a hidden name and are destructured inside;
/// `self` is captured whole. Returns the statements that do the moving.
fn take_arguments(sig: &mut syn::Signature) -> Vec<TokenStream> {
    let mut prelude = Vec::new();
    for (i, input) in sig.inputs.iter_mut().enumerate() {
        match input {
            FnArg::Receiver(receiver) => {
                let this = syn::Ident::new("self", receiver.self_token.span);
                prelude.push(quote!(let _ = &#this;));
            }
            FnArg::Typed(arg) => match &mut *arg.pat {
                Pat::Ident(PatIdent {
                    by_ref: None,
                    mutability,
                    ident,
                    subpat: None,
                    attrs,
                }) if attrs.is_empty() => {
                    let mutability = mutability.take();
                    prelude.push(quote!(let #mutability #ident = #ident;));
                }
                pat => {
                    let hidden = format_ident!("__acm_arg{}", i, span = Span::mixed_site());
                    let original = std::mem::replace(pat, syn::parse_quote!(#hidden));
                    if matches!(original, Pat::Wild(_)) {
                        let keep = format_ident!("__acm_keep{}", i, span = Span::mixed_site());
                        prelude.push(quote!(let #keep = #hidden;));
                    } else {
                        prelude.push(quote!(let #original = #hidden;));
                    }
                }
            },
        }
    }
    prelude
}

/// `tokens` with every span set to `span`.
fn respan(tokens: TokenStream, span: Span) -> TokenStream {
    tokens
        .into_iter()
        .map(|mut tree| {
            if let TokenTree::Group(g) = &tree {
                let mut group = Group::new(g.delimiter(), respan(g.stream(), span));
                group.set_span(span);
                tree = TokenTree::Group(group);
            } else {
                tree.set_span(span);
            }
            tree
        })
        .collect()
}
