//! Arguments of `#[async_context_manager(...)]`.

use proc_macro2::{Span, TokenStream};
use syn::parse::{Parse, ParseStream, Parser};
use syn::punctuated::Punctuated;
use syn::{LitStr, Path, Token};

use crate::error::bail;

const VALID: &str = "`crate = \"path\"`, `borrowing`";

/// The parsed arguments, each with the span it was written at.
#[derive(Default)]
pub(crate) struct Args {
    /// `crate = "path"`: where the facade is, for crates that re-export it.
    pub(crate) krate: Option<(Path, Span)>,
    /// `borrowing`: never an `OwnedManager`, even if the signature borrows
    /// nothing (e.g. a method taking `self` on a type with lifetimes, which
    /// would otherwise get `where Self: 'static`).
    pub(crate) borrowing: Option<Span>,
}

struct Arg {
    key: syn::Ident,
    value: Option<LitStr>,
}

impl Parse for Arg {
    fn parse(input: ParseStream<'_>) -> syn::Result<Self> {
        let key = if input.peek(Token![crate]) {
            let kw: Token![crate] = input.parse()?;
            syn::Ident::new("crate", kw.span)
        } else {
            syn::Ident::parse_any_ident(input)?
        };
        if key == "borrowing" {
            return Ok(Arg { key, value: None });
        }
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
        Ok(Arg {
            key,
            value: Some(value),
        })
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
        let mut args = Args::default();
        for arg in parsed {
            let duplicate = if arg.key == "crate" {
                args.krate.is_some()
            } else {
                args.borrowing.is_some()
            };
            if duplicate {
                bail!(
                    arg.key,
                    "duplicate #[async_context_manager] argument `{}`",
                    arg.key
                );
            }
            // Only `crate` and `borrowing` get past `Arg::parse`.
            let Some(value) = arg.value else {
                args.borrowing = Some(arg.key.span());
                continue;
            };
            let path: Path = value
                .parse()
                .ok()
                // Plain segments only: the path is spliced into `unsafe`
                // blocks (expand.rs), which must hold no type or macro.
                .filter(|p: &Path| p.segments.iter().all(|s| s.arguments.is_none()))
                .ok_or_else(|| {
                    syn::Error::new(
                        value.span(),
                        "expected a plain path such as \"my_crate::contextlib\" in `crate = \"...\"`",
                    )
                })?;
            args.krate = Some((path, value.span()));
        }
        Ok(args)
    }
}
