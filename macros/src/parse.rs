//! The input fn as a typed IR: what it yields, whether it can fail, whether
//! it borrows.

use proc_macro2::TokenStream;
use syn::visit::Visit;
use syn::{
    FnArg, GenericArgument, GenericParam, Item, ItemFn, PathArguments, ReturnType, Type,
    TypeParamBound, WherePredicate,
};

use crate::error::{bail, format_err};

/// How the body receives the yielded value (SPEC §1, return types).
pub(crate) enum Mode {
    /// `-> T`: by value.
    ByValue(Type),
    /// `-> &mut T`: a `&mut` to a local, lent for the body.
    LendMut(Type),
    /// `-> &T`: a `&` to a local, lent for the body.
    LendRef(Type),
}

/// A parsed `#[async_context_manager]` fn.
pub(crate) struct ManagerFn {
    pub(crate) item: ItemFn,
    pub(crate) mode: Mode,
    /// `Some(E)` for `-> Result<_, E>`.
    pub(crate) error: Option<Type>,
    /// Its signature borrows nothing: the manager is `OwnedManager`.
    pub(crate) owned: bool,
    /// Owned because `Self` is taken by value (`self`, `self: Arc<Self>`):
    /// the generated fn adds `where Self: 'static` (SPEC §5: owned means
    /// every type parameter, `Self` included, bounded by `'static`).
    pub(crate) static_self: bool,
}

/// Parses the item; anything but a fn is an error.
pub(crate) fn item_fn(item: &TokenStream) -> syn::Result<ItemFn> {
    match syn::parse2::<Item>(item.clone()) {
        Ok(Item::Fn(f)) => Ok(f),
        Ok(other) => Err(format_err!(
            other,
            "#[async_context_manager] applies to an `async fn`, not to {}",
            describe(&other)
        )),
        Err(_) => Err(format_err!(
            item,
            "#[async_context_manager] applies to an `async fn` with a body"
        )),
    }
}

fn describe(item: &Item) -> &'static str {
    match item {
        Item::Struct(_) => "a struct",
        Item::Enum(_) => "an enum",
        Item::Impl(_) => "an impl block",
        Item::Trait(_) => "a trait",
        Item::Mod(_) => "a module",
        Item::Const(_) => "a const",
        Item::Static(_) => "a static",
        Item::Type(_) => "a type alias",
        Item::Use(_) => "a use declaration",
        _ => "this item",
    }
}

impl ManagerFn {
    /// Reads the signature of an `async fn` (asyncness is checked before).
    /// `borrowing`: the user opted out of ownership
    /// (`#[async_context_manager(borrowing)]`).
    pub(crate) fn new(item: ItemFn, borrowing: bool) -> syn::Result<ManagerFn> {
        let (mode, error) = read_return(&item.sig.output)?;
        let ownership = if borrowing {
            Ownership::Borrowing
        } else {
            ownership(&item, &mode, error.as_ref())
        };
        Ok(ManagerFn {
            item,
            mode,
            error,
            owned: ownership != Ownership::Borrowing,
            static_self: ownership == Ownership::OwnedIfSelfStatic,
        })
    }
}

#[derive(PartialEq, Eq)]
enum Ownership {
    Owned,
    /// Owned once `Self: 'static` is added: the only thing the signature
    /// could borrow through is `Self` itself, taken by value (`self`,
    /// `self: Arc<Self>`), as a type without lifetimes is — the common case,
    /// made owned without ceremony.
    OwnedIfSelfStatic,
    Borrowing,
}

fn read_return(output: &ReturnType) -> syn::Result<(Mode, Option<Type>)> {
    let ty = match output {
        ReturnType::Default => return Ok((Mode::ByValue(syn::parse_quote!(())), None)),
        ReturnType::Type(_, ty) => &**ty,
    };
    match as_result(ty)? {
        Some((ok, err)) => Ok((read_value(ok)?, Some(err.clone()))),
        None => Ok((read_value(ty)?, None)),
    }
}

/// `Result<T, E>` (any path ending in `Result` with two type arguments).
fn as_result(ty: &Type) -> syn::Result<Option<(&Type, &Type)>> {
    let Type::Path(path) = ty else {
        return Ok(None);
    };
    let Some(last) = path.path.segments.last() else {
        return Ok(None);
    };
    if path.qself.is_some() || last.ident != "Result" {
        return Ok(None);
    }
    let types: Vec<&Type> = match &last.arguments {
        PathArguments::AngleBracketed(args) => args
            .args
            .iter()
            .filter_map(|a| match a {
                GenericArgument::Type(t) => Some(t),
                _ => None,
            })
            .collect(),
        _ => Vec::new(),
    };
    match types.as_slice() {
        [ok, err] => Ok(Some((ok, err))),
        _ => bail!(
            ty,
            "#[async_context_manager] cannot read the error type of this `Result`: \
             write both arguments, as in `Result<&mut T, MyError>`"
        ),
    }
}

fn read_value(ty: &Type) -> syn::Result<Mode> {
    match ty {
        Type::Paren(p) => read_value(&p.elem),
        Type::Group(g) => read_value(&g.elem),
        // `&'static T` borrows nothing from the fn's frame: yielded by value.
        Type::Reference(r) if r.lifetime.as_ref().is_some_and(|l| l.ident == "static") => {
            Ok(Mode::ByValue(ty.clone()))
        }
        Type::Reference(r) => {
            if let Some(lifetime) = &r.lifetime {
                if lifetime.ident != "_" {
                    bail!(
                        lifetime,
                        "#[async_context_manager]: the lent reference lives as long as the scope's \
                         body; write `&mut T` / `&T` without a lifetime (or `&'static T` to yield \
                         a static reference by value)"
                    );
                }
            }
            let mut finder = ElidedLifetimes(None);
            finder.visit_type(&r.elem);
            if let Some(span) = finder.0 {
                return Err(syn::Error::new(
                    span,
                    "#[async_context_manager]: a lent type cannot contain elided lifetimes; \
                     name the lifetime (a generic parameter of the fn)",
                ));
            }
            let elem = (*r.elem).clone();
            Ok(if r.mutability.is_some() {
                Mode::LendMut(elem)
            } else {
                Mode::LendRef(elem)
            })
        }
        Type::ImplTrait(_)
        | Type::Infer(_)
        | Type::Macro(_)
        | Type::Verbatim(_)
        | Type::Never(_) => {
            bail!(
                ty,
                "#[async_context_manager] cannot read this return type: expected `T`, `&mut T`, \
                 `&T`, or `Result` of one of those"
            )
        }
        _ => Ok(Mode::ByValue(ty.clone())),
    }
}

/// Finds `'_` or a `&` without a lifetime.
struct ElidedLifetimes(Option<proc_macro2::Span>);

impl<'ast> Visit<'ast> for ElidedLifetimes {
    fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
        if l.ident == "_" && self.0.is_none() {
            self.0 = Some(l.span());
        }
    }
    fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
        if r.lifetime.is_none() && self.0.is_none() {
            self.0 = Some(r.and_token.span);
        }
        syn::visit::visit_type_reference(self, r);
    }
}

/// SPEC §5: owned when the signature holds no borrow — no reference or
/// lifetime other than `'static`, every generic type parameter (and `Self`,
/// and `impl Trait`) bounded by `'static`. The lent reference of the return
/// type is the scope's own and does not count.
fn ownership(item: &ItemFn, mode: &Mode, error: Option<&Type>) -> Ownership {
    let sig = &item.sig;
    let static_bound = |bounds: &syn::punctuated::Punctuated<TypeParamBound, syn::Token![+]>| {
        bounds
            .iter()
            .any(|b| matches!(b, TypeParamBound::Lifetime(l) if l.ident == "static"))
    };
    let where_static = |name: &str| {
        sig.generics.where_clause.iter().flat_map(|w| &w.predicates).any(|p| match p {
            WherePredicate::Type(t) => {
                matches!(&t.bounded_ty, Type::Path(p) if p.qself.is_none() && p.path.is_ident(name))
                    && static_bound(&t.bounds)
            }
            _ => false,
        })
    };
    for param in &sig.generics.params {
        match param {
            GenericParam::Lifetime(_) => return Ownership::Borrowing,
            GenericParam::Type(t) => {
                if !static_bound(&t.bounds) && !where_static(&t.ident.to_string()) {
                    return Ownership::Borrowing;
                }
            }
            GenericParam::Const(_) => {}
        }
    }
    let mut self_by_value = false;
    let mut check = Borrows {
        found: false,
        uses_self: false,
        higher_ranked: 0,
    };
    for input in &sig.inputs {
        match input {
            FnArg::Receiver(r) => {
                if r.reference.is_some() {
                    return Ownership::Borrowing;
                }
                self_by_value = true;
                check.uses_self = true;
                check.visit_type(&r.ty);
            }
            FnArg::Typed(t) => check.visit_type(&t.ty),
        }
    }
    match mode {
        Mode::ByValue(t) | Mode::LendMut(t) | Mode::LendRef(t) => check.visit_type(t),
    }
    if let Some(error) = error {
        check.visit_type(error);
    }
    if check.found {
        Ownership::Borrowing
    } else if !check.uses_self || where_static("Self") {
        Ownership::Owned
    } else if self_by_value {
        Ownership::OwnedIfSelfStatic
    } else {
        Ownership::Borrowing
    }
}

struct Borrows {
    /// A borrow was found.
    found: bool,
    uses_self: bool,
    /// Inside a fn pointer type or an `Fn(..)` bound's arguments.
    higher_ranked: u32,
}

impl<'ast> Visit<'ast> for Borrows {
    fn visit_type_reference(&mut self, r: &'ast syn::TypeReference) {
        if self.higher_ranked == 0 && !matches!(&r.lifetime, Some(l) if l.ident == "static") {
            self.found = true;
        }
        syn::visit::visit_type_reference(self, r);
    }
    fn visit_lifetime(&mut self, l: &'ast syn::Lifetime) {
        if self.higher_ranked == 0 && l.ident != "static" {
            self.found = true;
        }
    }
    // A fn pointer's or an `Fn(..)` bound's own references and lifetimes
    // (`fn(&str) -> usize`, `Box<dyn Fn(&str) + Send>`, `for<'a> ..`) are
    // higher-ranked: they borrow nothing from the caller. A lifetime of
    // the caller's could only be a named parameter of the fn, which makes
    // it borrowing already; `Self` and `impl Trait` inside still count.
    fn visit_type_bare_fn(&mut self, f: &'ast syn::TypeBareFn) {
        self.higher_ranked += 1;
        syn::visit::visit_type_bare_fn(self, f);
        self.higher_ranked -= 1;
    }
    fn visit_parenthesized_generic_arguments(
        &mut self,
        args: &'ast syn::ParenthesizedGenericArguments,
    ) {
        self.higher_ranked += 1;
        syn::visit::visit_parenthesized_generic_arguments(self, args);
        self.higher_ranked -= 1;
    }
    fn visit_bound_lifetimes(&mut self, b: &'ast syn::BoundLifetimes) {
        self.higher_ranked += 1;
        syn::visit::visit_bound_lifetimes(self, b);
        self.higher_ranked -= 1;
    }
    fn visit_type_impl_trait(&mut self, t: &'ast syn::TypeImplTrait) {
        let is_static = t
            .bounds
            .iter()
            .any(|b| matches!(b, TypeParamBound::Lifetime(l) if l.ident == "static"));
        if !is_static {
            self.found = true;
        }
        syn::visit::visit_type_impl_trait(self, t);
    }
    fn visit_type_macro(&mut self, _: &'ast syn::TypeMacro) {
        // Cannot see through a macro: assume the worst.
        self.found = true;
    }
    fn visit_type_path(&mut self, p: &'ast syn::TypePath) {
        if p.qself.is_none() && p.path.segments.first().is_some_and(|s| s.ident == "Self") {
            self.uses_self = true;
        }
        syn::visit::visit_type_path(self, p);
    }
}
