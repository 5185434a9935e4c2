//! The typed model of a `#[derive(MultiSession)]` input.

use syn::{
    Data, DeriveInput, Fields, GenericArgument, Ident, LitStr, PathArguments, Type, Visibility,
    ext::IdentExt,
};

use crate::{
    attr::{self, FieldAttrs},
    ctxt::Ctxt,
};

pub struct Input<'a> {
    pub ident: &'a Ident,
    pub vis: &'a Visibility,
    pub fields: Vec<Field<'a>>,
}

pub struct Field<'a> {
    pub ident: &'a Ident,
    /// The name without `r#`: the fragment name and default prefix.
    pub name: String,
    pub ty: &'a Type,
    pub attrs: FieldAttrs,
    /// `Some(T)` when the field is `Option<T>`: `None` deletes.
    pub option_inner: Option<&'a Type>,
}

impl Field<'_> {
    /// The namespace of this fragment's keys: the `prefix` option, or `name:`.
    pub fn prefix(&self) -> String {
        self.attrs
            .prefix
            .as_ref()
            .map_or_else(|| format!("{}:", self.name), |p| p.value.value())
    }

    /// The token to blame for the prefix: the literal if given, else the field name.
    pub fn prefix_span_token(&self) -> PrefixToken<'_> {
        match &self.attrs.prefix {
            Some(p) => PrefixToken::Lit(&p.value),
            None => PrefixToken::Field(self.ident),
        }
    }
}

pub enum PrefixToken<'a> {
    Lit(&'a LitStr),
    Field(&'a Ident),
}

impl quote::ToTokens for PrefixToken<'_> {
    fn to_tokens(&self, tokens: &mut proc_macro2::TokenStream) {
        match self {
            PrefixToken::Lit(lit) => lit.to_tokens(tokens),
            PrefixToken::Field(ident) => ident.to_tokens(tokens),
        }
    }
}

impl Input<'_> {
    /// Whether two fields have the same name (rustc reports it).
    pub fn has_duplicate_fields(&self) -> bool {
        let mut names = std::collections::HashSet::new();
        !self
            .fields
            .iter()
            .all(|field| names.insert(field.name.as_str()))
    }
}

impl<'a> Input<'a> {
    /// Parses the input, recording every problem in `cx`; `None` if it is not a struct
    /// with named fields at all.
    pub fn from_syn(cx: &mut Ctxt, input: &'a DeriveInput) -> Option<Self> {
        attr::container_attrs(cx, &input.attrs);
        let generics = &input.generics;
        if generics.lifetimes().next().is_some() {
            cx.error_spanned_by(
                generics,
                "MultiSession does not support lifetimes: a session struct owns its values, which are loaded from a store and saved back; use owned types (`String`, not `&'a str`)",
            );
        } else if !generics.params.is_empty() {
            cx.error_spanned_by(
                generics,
                "MultiSession does not support generic structs: a session struct names its fragment types",
            );
        } else if let Some(where_clause) = &generics.where_clause {
            cx.error_spanned_by(
                where_clause,
                "MultiSession does not support `where` clauses: a session struct names its fragment types",
            );
        }
        let fields = match &input.data {
            Data::Struct(data) => match &data.fields {
                Fields::Named(named) => named,
                Fields::Unnamed(unnamed) => {
                    cx.error_spanned_by(
                        unnamed,
                        "MultiSession needs named fields: each field name names a fragment and its key namespace",
                    );
                    return None;
                }
                Fields::Unit => {
                    cx.error_spanned_by(
                        &input.ident,
                        "MultiSession needs a struct with named fields, one per fragment; this unit struct has none",
                    );
                    return None;
                }
            },
            Data::Enum(data) => {
                cx.error_spanned_by(
                    data.enum_token,
                    "MultiSession can only be derived for structs with named fields, not enums; put the enum in a field: `struct Session { state: MyEnum }`",
                );
                return None;
            }
            Data::Union(data) => {
                cx.error_spanned_by(
                    data.union_token,
                    "MultiSession can only be derived for structs with named fields, not unions",
                );
                return None;
            }
        };
        let fields = fields
            .named
            .iter()
            .filter_map(|field| {
                let ident = field.ident.as_ref()?;
                Some(Field {
                    ident,
                    name: ident.unraw().to_string(),
                    ty: &field.ty,
                    attrs: attr::field_attrs(cx, &field.attrs),
                    option_inner: option_inner(&field.ty),
                })
            })
            .collect();
        Some(Input {
            ident: &input.ident,
            vis: &input.vis,
            fields,
        })
    }
}

/// `T` of `Option<T>`, `std::option::Option<T>` or `core::option::Option<T>`.
fn option_inner(ty: &Type) -> Option<&Type> {
    let Type::Path(path) = ty else {
        return None;
    };
    if path.qself.is_some() {
        return None;
    }
    let last = path.path.segments.last()?;
    if last.ident != "Option" {
        return None;
    }
    match &last.arguments {
        PathArguments::AngleBracketed(args) if args.args.len() == 1 => match args.args.first() {
            Some(GenericArgument::Type(inner)) => Some(inner),
            _ => None,
        },
        _ => None,
    }
}
