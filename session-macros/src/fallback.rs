//! What the derive emits when the input has errors (after thiserror's `fallback.rs`): the
//! `compile_error!`s, plus a stub of the API it would have generated — `builder()` and the
//! builder's methods, the lazy view and its accessors, the `MultiSession` impl — so that
//! the user's code that calls them (`Session::builder().default_store(..).build()`,
//! `Sessions<Session>`, `s.field().await?`) type-checks, and the only errors are the
//! derive's own. The stub's bodies never run: the crate does not compile.

use std::collections::HashSet;

use proc_macro2::TokenStream;
use quote::{format_ident, quote, quote_spanned};
use syn::{DeriveInput, GenericParam, Generics, parse_quote, spanned::Spanned};

use crate::{
    ast::{Field, Input},
    attr::{Initial, Ttl},
    valid::{self, Clash},
};

/// `error` as `compile_error!`s (none if rustc reports the problem itself), and the stub.
pub fn expand(
    input: &DeriveInput,
    parsed: Option<&Input<'_>>,
    error: Option<&syn::Error>,
) -> TokenStream {
    let errors = error.map(syn::Error::to_compile_error);
    let ident = &input.ident;
    let vis = &input.vis;
    let lazy_ty = format_ident!("{}Lazy", ident);
    let builder = format_ident!("{}Builder", ident);
    let generics = &input.generics;
    let (_, ty_generics, where_clause) = generics.split_for_impl();
    let bounded = bounded(generics, quote!(#ident #ty_generics));
    let (impl_generics, _, bounded_where) = bounded.split_for_impl();

    // One accessor and one setter per field name (rustc reports duplicate fields itself).
    let mut seen = HashSet::new();
    let fields: Vec<&Field<'_>> = parsed
        .map(|parsed| parsed.fields.iter())
        .into_iter()
        .flatten()
        .filter(|field| seen.insert(field.name.as_str()))
        .collect();
    let accessors = fields.iter().map(|field| {
        let (name, ty) = (field.ident, field.ty);
        quote! {
            #vis fn #name(&self) -> ::multisession::Fragment<'_, #ty> {
                ::core::unimplemented!()
            }
        }
    });
    // A field named like a builder method has no setter (it is an error of its own).
    let setters = fields
        .iter()
        .filter(|field| !matches!(valid::clash(&field.name), Some((Clash::Builder, _))))
        .map(|field| {
            let name = field.ident;
            quote! {
                #vis fn #name(
                    self,
                    _: impl ::core::convert::Into<::multisession::store::StoreRef>,
                ) -> Self {
                    self
                }
            }
        });
    // A field named `config` is an error of its own; then `.config(store)` is accepted too.
    let config = if fields.iter().any(|field| field.name == "config") {
        quote!(#vis fn config<__MsAny>(self, _: __MsAny) -> Self { self })
    } else {
        quote!(#vis fn config(self, _: ::multisession::Config) -> Self { self })
    };
    let names = fields.iter().map(|field| field.name.as_str());
    let uses = fields.iter().map(|field| uses(field));

    quote! {
        #errors

        #[doc(hidden)]
        #[allow(unused, missing_docs)]
        #vis struct #lazy_ty #generics #where_clause {
            __ms_marker: ::core::marker::PhantomData<fn() -> #ident #ty_generics>,
        }

        #[doc(hidden)]
        #[allow(unused, missing_docs)]
        #vis struct #builder #generics #where_clause {
            __ms_marker: ::core::marker::PhantomData<fn() -> #ident #ty_generics>,
        }

        const _: () = {
            #[automatically_derived]
            #[allow(unused, missing_docs, private_interfaces)]
            impl #impl_generics #lazy_ty #ty_generics #bounded_where {
                #( #accessors )*
            }

            #[automatically_derived]
            #[allow(unused, missing_docs, private_interfaces)]
            impl #impl_generics #builder #ty_generics #bounded_where {
                #( #setters )*

                #vis fn default_store(
                    self,
                    _: impl ::core::convert::Into<::multisession::store::StoreRef>,
                ) -> Self {
                    self
                }

                #config


                #vis fn build(self) -> ::multisession::Sessions<#ident #ty_generics> {
                    ::core::unimplemented!()
                }
            }

            #[automatically_derived]
            #[allow(unused, missing_docs, private_interfaces)]
            impl #impl_generics #ident #ty_generics #bounded_where {
                #vis fn builder() -> #builder #ty_generics {
                    ::core::unimplemented!()
                }
            }

            #[automatically_derived]
            #[allow(unused)]
            impl #impl_generics ::multisession::MultiSession for #ident #ty_generics #bounded_where {
                type Lazy = #lazy_ty #ty_generics;
                type Shared = ();
                type Bound<'__ms_a> = ();

                const FRAGMENTS: &'static [&'static str] = &[ #( #names ),* ];

                fn __open(_: ::multisession::__private::Core<Self>) -> Self::Lazy {
                    ::core::unimplemented!()
                }

                fn __core(_: &Self::Lazy) -> &::multisession::__private::Core<Self> {
                    ::core::unimplemented!()
                }

                fn __bind(_: &Self::Lazy) {
                    ::core::unimplemented!()
                }

                fn __any_loaded(_: &Self::Lazy) -> bool {
                    ::core::unimplemented!()
                }

                fn __take(_: &Self::Lazy) -> Self {
                    ::core::unimplemented!()
                }

                fn __put(self, _: &Self::Lazy) {
                    ::core::unimplemented!()
                }
            }

            #[automatically_derived]
            #[allow(unused)]
            impl #impl_generics ::multisession::__private::KeysView for #lazy_ty #ty_generics #bounded_where {
                fn key_of(
                    &self,
                    _: usize,
                ) -> ::core::option::Option<::multisession::__private::CellKey> {
                    ::core::unimplemented!()
                }
            }

            // The user's expressions of the options that parsed, typed as in the real
            // expansion: their imports stay used, and no error is made up for them.
            #[allow(unused, clippy::all)]
            fn __ms_uses #impl_generics () #bounded_where {
                #( #uses )*
            }
        };
    }
}

/// `generics` with what the `MultiSession` impl needs of its parameters (a generic struct
/// is an error already; this keeps its stub from adding errors of its own).
fn bounded(generics: &Generics, self_ty: TokenStream) -> Generics {
    let mut bounded = generics.clone();
    if generics.params.is_empty() {
        return bounded;
    }
    let where_clause = bounded.make_where_clause();
    for param in &generics.params {
        match param {
            GenericParam::Lifetime(param) => {
                let lifetime = &param.lifetime;
                where_clause
                    .predicates
                    .push(parse_quote!(#lifetime: 'static));
            }
            GenericParam::Type(param) => {
                let ident = &param.ident;
                where_clause.predicates.push(parse_quote!(
                    #ident: ::core::marker::Send + ::core::marker::Sync + 'static
                ));
            }
            GenericParam::Const(_) => {}
        }
    }
    where_clause
        .predicates
        .push(parse_quote!(#self_ty: ::core::marker::Send));
    bounded
}

/// The user's expressions in the options of `field`, each where the real expansion puts
/// it (so a closure gets the same expected type), without the rest of the expansion.
fn uses(field: &Field<'_>) -> TokenStream {
    let ty = field.ty;
    let attrs = &field.attrs;
    let key = attrs.key.as_ref().map(|key| {
        let expr = &key.value;
        quote_spanned!(expr.span()=> let _ = ::multisession::__private::key_fn(#expr);)
    });
    let initial = attrs.initial.as_ref().map(|initial| match &initial.value {
        Initial::Function(expr) => quote_spanned!(expr.span()=>
            let _ = ::multisession::__private::initial_fn::<#ty, _>(#expr);
        ),
        Initial::Value(expr) => quote_spanned!(expr.span()=>
            let _ = ::multisession::__private::initial_fn::<#ty, _>(|| #expr);
        ),
    });
    let ttl = attrs.ttl.as_ref().and_then(|ttl| match &ttl.value {
        Ttl::Millis(_) => None,
        Ttl::Expr(expr) => Some(quote_spanned!(expr.span()=>
            let _ = ::multisession::__private::ttl_value(#expr);
        )),
    });
    let codec = attrs.codec.as_ref().map(|codec| {
        let path = &codec.value;
        quote_spanned!(path.span()=>
            let _: ::core::marker::PhantomData<#path> = ::core::marker::PhantomData;
        )
    });
    let steps = attrs
        .migrations
        .iter()
        .flat_map(|migrations| &migrations.value)
        .map(|step| quote_spanned!(step.span()=> let _ = #step;));
    quote! {
        #key
        #initial
        #ttl
        #codec
        #( #steps )*
    }
}
