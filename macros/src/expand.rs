//! Code generation for `#[async_context_manager]`.

use proc_macro2::{Ident, Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::visit_mut::VisitMut;
use syn::{FnArg, ItemFn, Pat, PatIdent, ReturnType};

use crate::args::Args;
use crate::parse::{self, ManagerFn, Mode};
use crate::valid;
use crate::yields::YieldRewriter;

/// The attribute's entry: parse → validate → expand.
pub(crate) fn async_context_manager(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let args = Args::parse(args)?;
    let item = parse::item_fn(item)?;
    let krate = match &args.krate {
        Some((path, _)) => quote!(#path),
        None => quote!(::async_contextlib),
    };
    if let Err(error) = valid::asyncness(&item) {
        return Ok(with_stub_body(error, &item));
    }
    let mut manager = match ManagerFn::new(item.clone()) {
        Ok(manager) => manager,
        Err(error) => return Ok(with_stub_body(error, &item)),
    };
    let co = Ident::new("__acm_co", Span::mixed_site());
    let mut rewriter = YieldRewriter::new(co.clone(), yield_method(&manager.mode));
    rewriter.visit_block_mut(&mut manager.item.block);
    if let Err(error) = valid::yields(&item, &rewriter.sites) {
        // Keep the fn's signature (callers type-check against it) with a
        // body that never runs, so one mistake gives one error.
        let mut out = error.into_compile_error();
        out.extend(expand(&manager, &krate, &co, false));
        return Ok(out);
    }
    Ok(expand(&manager, &krate, &co, true))
}

fn yield_method(mode: &Mode) -> &'static str {
    match mode {
        Mode::ByValue(_) => "yield_value",
        Mode::LendMut(_) => "lend_mut",
        Mode::LendRef(_) => "lend_ref",
    }
}

/// The error, next to the original fn with a body that does nothing, so
/// that the fn's uses still resolve.
fn with_stub_body(error: syn::Error, item: &ItemFn) -> TokenStream {
    let ItemFn { attrs, vis, sig, .. } = item;
    let mut out = error.into_compile_error();
    out.extend(quote! {
        #(#attrs)*
        #[allow(unused_variables, clippy::unused_async)]
        #vis #sig { ::core::unimplemented!() }
    });
    out
}

// Input:
//     #[async_context_manager]
//     pub async fn transaction(db: Db) -> Result<&mut Tx, DbError> { BODY }
// Output:
//     pub fn transaction(db: Db) -> ::async_contextlib::generated::Generator<
//         impl Future<Output = Result<(), DbError>>, LendMut<Tx>, Owned>
//     {
//         ::async_contextlib::generated::Generator::<_, LendMut<Tx>, Owned>::new(
//             "module::transaction",
//             move |__acm_co| async move {
//                 let db = db;                       // the frame owns every argument
//                 let () = { BODY' };                // yield_!(x) → (__acm_co.lend_mut(x).await)
//                 ::core::result::Result::Ok::<(), DbError>(())
//             },
//         )
//     }
// `run` is false after a validation error: the body becomes `unreachable!()`.
fn expand(manager: &ManagerFn, krate: &TokenStream, co: &Ident, run: bool) -> TokenStream {
    let ItemFn { attrs, vis, sig, block } = &manager.item;
    let mode_ty = match &manager.mode {
        Mode::ByValue(t) => quote!(#krate::generated::ByValue<#t>),
        Mode::LendMut(t) => quote!(#krate::generated::LendMut<#t>),
        Mode::LendRef(t) => quote!(#krate::generated::LendRef<#t>),
    };
    let output = match &manager.error {
        Some(e) => quote!(::core::result::Result<(), #e>),
        None => quote!(()),
    };
    let owner = if manager.owned {
        quote!(#krate::generated::Owned)
    } else {
        quote!(#krate::generated::Borrowing)
    };

    let mut sig = sig.clone();
    sig.asyncness = None;
    let prelude = take_arguments(&mut sig);
    let ret_span = match &manager.item.sig.output {
        ReturnType::Type(_, ty) => ty.span(),
        ReturnType::Default => sig.ident.span(),
    };
    // A concrete manager type with an opaque future, rather than
    // `impl for<'a> AsyncContextManager<Value<'a> = &'a mut T>`: that
    // higher-ranked binding would require `Self: 'static` (the trait's
    // `where Self: 'a`) and rule out every borrowing manager.
    sig.output = syn::parse_quote_spanned! {ret_span=>
        -> #krate::generated::Generator<impl ::core::future::Future<Output = #output>, #mode_ty, #owner>
    };

    let body = if run {
        let tail = match &manager.error {
            Some(e) => quote_spanned!(block.span()=> ::core::result::Result::Ok::<(), #e>(())),
            None => quote!(),
        };
        quote_spanned! {block.span()=>
            #(#prelude)*
            let () = #block;
            #tail
        }
    } else {
        quote! {
            let _ = #co;
            #(#prelude)*
            let __acm_never: #output = ::core::unreachable!();
            __acm_never
        }
    };
    let name = sig.ident.to_string();
    quote! {
        #(#attrs)*
        #vis #sig {
            #krate::generated::Generator::<_, #mode_ty, #owner>::new(
                ::core::concat!(::core::module_path!(), "::", #name),
                move |#co| async move { #body },
            )
        }
    }
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
