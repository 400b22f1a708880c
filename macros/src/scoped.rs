//! `#[scoped(..)]`: Python's `AsyncContextDecorator` — an async fn whose
//! whole body runs inside a `with_scope!` over the managers the attribute
//! lists.

use proc_macro2::{Delimiter, Group, Span, TokenStream, TokenTree};
use quote::{ToTokens, quote, quote_spanned};
use syn::spanned::Spanned;
use syn::{ItemFn, ReturnType, Type};

use crate::scope;

const SYNTAX: &str = "#[scoped(manager as name, ...)] async fn ...";

// Input:
//     #[scoped(transaction(&self.db) as tx, timeout(d))]
//     async fn transfer(&self, amount: i64) -> Result<(), AppError> { BODY }
// Output:
//     async fn transfer(&self, amount: i64) -> Result<(), AppError> {
//         <the with_scope! expansion of>
//             transaction(&self.db) as tx, timeout(d) => {
//                 let __acm_ret: Result<(), AppError> = { BODY };
//                 __acm_ret
//             }
//     }
// The annotation gives the block the fn's return type, so `?` in it
// converts into the fn's error type as it does in the fn.
pub(crate) fn scoped(args: TokenStream, item: TokenStream) -> syn::Result<TokenStream> {
    let spanned = item.clone();
    let mut item: ItemFn = syn::parse2(item).map_err(|_| {
        syn::Error::new_spanned(spanned, "#[scoped] applies to an `async fn` with a body")
    })?;
    let (krate, managers) = split_crate(args)?;
    let mut errors = None;
    if item.sig.asyncness.is_none() {
        errors = Some(syn::Error::new_spanned(
            item.sig.fn_token,
            format!(
                "#[scoped] requires an `async fn`: its body runs inside a scope, which awaits; \
                 write `async fn {}`",
                item.sig.ident
            ),
        ));
        // Expanded as the `async fn` it must be, so that one mistake gives
        // one error.
        item.sig.asyncness = Some(syn::Token![async](item.sig.fn_token.span));
    }
    if managers.is_empty() {
        let error = syn::Error::new(
            Span::call_site(),
            format!("#[scoped] needs at least one manager: {SYNTAX}"),
        );
        let mut out = combine(errors, error).into_compile_error();
        out.extend(item.into_token_stream());
        return Ok(out);
    }
    let block = &item.block;
    let ret = Span::mixed_site();
    let ret = proc_macro2::Ident::new("__acm_ret", ret);
    // Annotated with the return type, so that the block's `?` and
    // literals know it; an `impl Trait` anywhere in it cannot be written
    // in a `let` (E0562), and the fn's own return checks it then.
    let body = match &item.sig.output {
        ReturnType::Type(_, ty) if !has_impl_trait(ty) => {
            quote_spanned! {block.span()=> let #ret: #ty = #block; #ret }
        }
        _ => quote!(#block),
    };
    let mut tokens = managers;
    tokens.extend(quote!(=>));
    let mut group = Group::new(Delimiter::Brace, body);
    group.set_span(block.span());
    tokens.extend([TokenTree::Group(group)]);
    let input = match scope::parse_body(tokens, krate) {
        Ok(input) => input,
        Err(error) => {
            // Keep the fn as written, so that its callers still resolve.
            let mut out = combine(errors, error).into_compile_error();
            out.extend(item.into_token_stream());
            return Ok(out);
        }
    };
    let expansion = scope::expand(&input);
    item.block = syn::parse2(quote_spanned!(block.span()=> { #expansion }))?;
    let mut out = errors
        .map(syn::Error::into_compile_error)
        .unwrap_or_default();
    out.extend(item.into_token_stream());
    Ok(out)
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

/// `crate = "path", rest` → (the path, rest); without it, the facade's
/// default path.
fn split_crate(args: TokenStream) -> syn::Result<(TokenStream, TokenStream)> {
    let tokens: Vec<TokenTree> = args.into_iter().collect();
    let is_crate = matches!(tokens.first(), Some(TokenTree::Ident(i)) if i == "crate")
        && matches!(tokens.get(1), Some(TokenTree::Punct(p)) if p.as_char() == '=');
    if !is_crate {
        return Ok((quote!(::async_contextlib), tokens.into_iter().collect()));
    }
    let Some(TokenTree::Literal(lit)) = tokens.get(2) else {
        return Err(syn::Error::new(
            tokens[1].span(),
            "expected a string literal path after `crate =`, as in `crate = \"my_crate::contextlib\"`",
        ));
    };
    let path: syn::LitStr = syn::parse2(lit.to_token_stream())?;
    let path: syn::Path = path
        .parse()
        .ok()
        .filter(|p: &syn::Path| p.segments.iter().all(|s| s.arguments.is_none()))
        .ok_or_else(|| {
            syn::Error::new(
                lit.span(),
                "expected a plain path such as \"my_crate::contextlib\" in `crate = \"...\"`",
            )
        })?;
    let rest = match tokens.get(3) {
        None => TokenStream::new(),
        Some(TokenTree::Punct(p)) if p.as_char() == ',' => tokens[4..].iter().cloned().collect(),
        Some(other) => {
            return Err(syn::Error::new(
                other.span(),
                format!("expected `,` after `crate = \"...\"`: {SYNTAX}"),
            ));
        }
    };
    Ok((quote!(#path), rest))
}

/// Whether `ty` holds an `impl Trait`, at any depth.
fn has_impl_trait(ty: &Type) -> bool {
    struct Finds(bool);
    impl<'ast> syn::visit::Visit<'ast> for Finds {
        fn visit_type_impl_trait(&mut self, _: &'ast syn::TypeImplTrait) {
            self.0 = true;
        }
    }
    let mut finds = Finds(false);
    syn::visit::Visit::visit_type(&mut finds, ty);
    finds.0
}
