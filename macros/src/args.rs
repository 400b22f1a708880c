//! Arguments of `#[async_context_manager(...)]`.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{LitStr, Path, Token};

use crate::error::bail;

const VALID: &str = "`crate = \"path\"`";

/// The parsed arguments, each with the span it was written at.
pub(crate) struct Args {
    /// `crate = "path"`: where the facade is, for crates that re-export it.
    pub(crate) krate: Option<(Path, Span)>,
}

struct Arg {
    key: syn::Ident,
    value: LitStr,
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = if input.peek(Token![crate]) {
            let kw: Token![crate] = input.parse()?;
            syn::Ident::new("crate", kw.span)
        } else {
            syn::Ident::parse_any_ident(input)?
        };
        if key != "crate" {
            bail!(
                key,
                "unknown #[async_context_manager] argument `{}`; valid arguments: {}",
                key,
                VALID
            );
        }
        let _: Token![=] = input.parse().map_err(|e| {
            syn::Error::new(e.span(), format!("expected `=` after `{key}`: {VALID}"))
        })?;
        let value: LitStr = input.parse().map_err(|e| {
            syn::Error::new(e.span(), format!("expected a string literal path: {VALID}"))
        })?;
        Ok(Arg { key, value })
    }
}

trait ParseAnyIdent {
    fn parse_any_ident(input: ParseStream<'_>) -> syn::Result<syn::Ident>;
}

impl ParseAnyIdent for syn::Ident {
    fn parse_any_ident(input: ParseStream<'_>) -> syn::Result<syn::Ident> {
        use syn::ext::IdentExt;
        syn::Ident::parse_any(input).map_err(|e| {
            syn::Error::new(
                e.span(),
                format!("expected #[async_context_manager] arguments: {VALID}"),
            )
        })
    }
}

impl Args {
    pub(crate) fn parse(tokens: TokenStream) -> syn::Result<Args> {
        let parsed = Punctuated::<Arg, Token![,]>::parse_terminated.parse2(tokens)?;
        let mut args = Args { krate: None };
        for arg in parsed {
            // Only `crate` gets past `Arg::parse`.
            if args.krate.is_some() {
                bail!(
                    arg.key,
                    "duplicate #[async_context_manager] argument `crate`"
                );
            }
            let path: Path = arg
                .value
                .parse()
                .ok()
                // Plain segments only: the path is spliced into `unsafe`
                // blocks (expand.rs), which must hold no type or macro.
                .filter(|p: &Path| p.segments.iter().all(|s| s.arguments.is_none()))
                .ok_or_else(|| {
                    syn::Error::new(
                        arg.value.span(),
                        "expected a plain path such as \"my_crate::contextlib\" in `crate = \"...\"`",
                    )
                })?;
            args.krate = Some((path, arg.value.span()));
        }
        Ok(args)
    }
}
