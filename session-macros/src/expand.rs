//! Code generation. Everything refers to the runtime through `::multisession::__private`.
//!
//! Generated locals are hygienic (`Span::mixed_site()`, `__ms_` prefix): a user's
//! `fn config()` named in `#[session(initial = config())]` is not shadowed by a local of the
//! same name, and a user's `const config` does not turn a binding into a pattern.

use proc_macro2::{Span, TokenStream};
use quote::{format_ident, quote, quote_spanned};
use syn::{DeriveInput, Ident, Index, spanned::Spanned};

use crate::{
    ast::{Field, Input},
    attr::{Initial, Ttl},
    ctxt::Ctxt,
    fallback, valid,
};

/// Parse → validate → expand; on any error, the errors plus a stub of the generated API
/// (see `fallback`), so the user's code that uses it shows no errors of its own.
pub fn derive(input: &DeriveInput) -> TokenStream {
    let mut cx = Ctxt::default();
    let parsed = Input::from_syn(&mut cx, input);
    if let Some(parsed) = &parsed {
        valid::check(&mut cx, parsed);
    }
    match (cx.check(), parsed) {
        // Duplicate field names: rustc reports them; the expansion would add more errors.
        (Ok(()), Some(parsed)) if parsed.has_duplicate_fields() => {
            fallback::expand(input, Some(&parsed), None)
        }
        (Ok(()), Some(parsed)) => expand(&parsed),
        (Err(error), parsed) => fallback::expand(input, parsed.as_ref(), Some(&error)),
        // `from_syn` records an error whenever it returns `None`; just in case it did not:
        (Ok(()), None) => fallback::expand(
            input,
            None,
            Some(&syn::Error::new_spanned(
                &input.ident,
                "MultiSession can only be derived for structs with named fields",
            )),
        ),
    }
}

/// A generated local variable or parameter: invisible to the user's expressions
/// (`mixed_site`), and `__ms_`-prefixed so that no user constant of the same name in scope
/// turns the binding into a constant pattern.
fn local(name: &str) -> Ident {
    Ident::new(&format!("__ms_{name}"), Span::mixed_site())
}

fn expand(input: &Input<'_>) -> TokenStream {
    let ident = input.ident;
    let vis = input.vis;
    let lazy_ty = format_ident!("{}Lazy", ident);
    let builder = format_ident!("{}Builder", ident);
    let count = input.fields.len();

    let fields: Vec<_> = input.fields.iter().map(|f| f.ident).collect();
    let tys: Vec<_> = input.fields.iter().map(|f| f.ty).collect();
    let names: Vec<_> = input.fields.iter().map(|f| f.name.as_str()).collect();
    let indices: Vec<_> = (0..count).map(Index::from).collect();
    // The lazy view is a tuple: the core first, then one cell per field (no field name
    // of the user's can collide with the core's).
    let cells: Vec<_> = (1..=count).map(Index::from).collect();
    let specs: Vec<_> = input.fields.iter().map(spec).collect();
    // The builder's typestate: one parameter per fragment, `NoStore` until its store is set.
    let states: Vec<_> = (0..count)
        .map(|i| format_ident!("__MsStore{}", i))
        .collect();
    let setter_types: Vec<TokenStream> = (0..count)
        .map(|i| {
            let args = states.iter().enumerate().map(|(j, state)| {
                if i == j {
                    quote!(::multisession::__private::HasStore)
                } else {
                    quote!(#state)
                }
            });
            quote!(#builder<#( #args, )* __MsDefault>)
        })
        .collect();

    let lazy_doc = format!(
        "The lazy per-update view of [`{ident}`]: one accessor per fragment.\n\n\
         [`multisession::Session<{ident}>`](::multisession::Session) derefs to it."
    );
    let builder_doc = format!(
        "Builds the [`Sessions`](::multisession::Sessions) of [`{ident}`]: one store per fragment."
    );
    let accessor_docs = input.fields.iter().map(|f| {
        format!(
            "The `{}` fragment (keys under `{}`). `.await` it to read or change the value; \
             `.set(v)` and `.delete()` do not read.",
            f.name,
            f.prefix()
        )
    });
    let setter_docs = input
        .fields
        .iter()
        .map(|f| format!("The store of the `{}` fragment.", f.name));
    let shared_ty = format_ident!("__MsShared");
    let bound_ty = format_ident!("__MsBound");
    let (store, config, stores, shared, lazy, core, bound, cx) = (
        local("store"),
        local("config"),
        local("stores"),
        local("shared"),
        local("lazy"),
        local("core"),
        local("bound"),
        local("cx"),
    );

    quote! {
        #[doc = #lazy_doc]
        #vis struct #lazy_ty(
            ::multisession::__private::Core<#ident>,
            #( ::multisession::__private::Cell<#tys>, )*
        );

        #[doc = #builder_doc]
        #[must_use = "call `.build()` to get the sessions"]
        #vis struct #builder<
            #( #states = ::multisession::__private::NoStore, )*
            __MsDefault = ::multisession::__private::NoStore,
        > {
            core: ::multisession::__private::BuilderCore,
            state: ::core::marker::PhantomData<fn() -> (#( #states, )* __MsDefault,)>,
        }

        const _: () = {
            // The fragments with their stores. Public, but only nameable here: the
            // `MultiSession` impl may name it even if a field type is private.
            #[doc(hidden)]
            pub struct #shared_ty {
                #( #fields: ::multisession::__private::Arc<::multisession::__private::FragmentShared<#tys>>, )*
            }

            // The cells of one update with their fragments, as the runtime goes through
            // them.
            #[doc(hidden)]
            pub struct #bound_ty<'__ms_a>(
                #( ::multisession::__private::Bound<'__ms_a, #tys>, )*
            );

            #[automatically_derived]
            impl ::multisession::__private::BoundCells for #bound_ty<'_> {
                fn cell(
                    &self,
                    index: usize,
                ) -> ::core::option::Option<&dyn ::multisession::__private::ErasedCell> {
                    match index {
                        #( #indices => ::core::option::Option::Some(&self.#indices), )*
                        _ => ::core::option::Option::None,
                    }
                }
            }

            #[automatically_derived]
            impl ::multisession::__private::KeysView for #lazy_ty {
                fn key_of(
                    &self,
                    index: usize,
                ) -> ::core::option::Option<::multisession::__private::CellKey> {
                    ::multisession::__private::key_of::<#ident>(self, index)
                }
            }

            #[automatically_derived]
            impl #lazy_ty {
                #(
                    #[doc = #accessor_docs]
                    #vis fn #fields(&self) -> ::multisession::Fragment<'_, #tys> {
                        ::multisession::Fragment::new(::multisession::__private::Bound::new(
                            &self.#cells,
                            &*self.0.shared().#fields,
                            self.0.cx(self),
                        ))
                    }
                )*
            }

            #[automatically_derived]
            impl<#( #states, )* __MsDefault> #builder<#( #states, )* __MsDefault> {
                #(
                    #[doc = #setter_docs]
                    #vis fn #fields(
                        mut self,
                        #store: impl ::core::convert::Into<::multisession::store::StoreRef>,
                    ) -> #setter_types {
                        self.core.set_store(#indices, ::core::convert::Into::into(#store));
                        #builder { core: self.core, state: ::core::marker::PhantomData }
                    }
                )*

                /// The store of every fragment not given its own.
                #vis fn default_store(
                    mut self,
                    #store: impl ::core::convert::Into<::multisession::store::StoreRef>,
                ) -> #builder<#( #states, )* ::multisession::__private::HasStore> {
                    self.core.set_default_store(::core::convert::Into::into(#store));
                    #builder { core: self.core, state: ::core::marker::PhantomData }
                }

                /// The runtime options.
                #vis fn config(mut self, #config: ::multisession::Config) -> Self {
                    self.core.set_config(#config);
                    self
                }

                /// The sessions, ready to run updates. Compiles once every fragment has a
                /// store, or a default store was named for the rest.
                #vis fn build(self) -> ::multisession::Sessions<#ident>
                where
                    #( #states: ::multisession::__private::StoreFor<__MsDefault>, )*
                {
                    let (#stores, #config) = self.core.finish();
                    let mut #stores = ::core::iter::IntoIterator::into_iter(#stores);
                    let #shared = #shared_ty {
                        #(
                            #fields: ::multisession::__private::shared(
                                #specs,
                                ::multisession::__private::next_store(&mut #stores),
                            ),
                        )*
                    };
                    ::multisession::Sessions::__new(#shared, #config)
                }
            }

            #[automatically_derived]
            impl #ident {
                /// A builder of the sessions: one store per fragment.
                #vis fn builder() -> #builder {
                    #builder {
                        core: ::multisession::__private::BuilderCore::new(#count),
                        state: ::core::marker::PhantomData,
                    }
                }
            }

            #[automatically_derived]
            impl ::multisession::MultiSession for #ident {
                type Lazy = #lazy_ty;
                type Shared = #shared_ty;
                type Bound<'__ms_a> = #bound_ty<'__ms_a>;

                const FRAGMENTS: &'static [&'static str] = &[ #( #names ),* ];

                fn __open(#core: ::multisession::__private::Core<Self>) -> Self::Lazy {
                    #lazy_ty(#core, #( ::multisession::__private::Cell::new(#indices), )*)
                }

                fn __core(#lazy: &Self::Lazy) -> &::multisession::__private::Core<Self> {
                    &#lazy.0
                }

                fn __bind(#lazy: &Self::Lazy) -> #bound_ty<'_> {
                    let #cx = #lazy.0.cx(#lazy);
                    let #shared = #lazy.0.shared();
                    #bound_ty(
                        #( ::multisession::__private::Bound::new(&#lazy.#cells, &*#shared.#fields, #cx), )*
                    )
                }

                fn __any_loaded(#lazy: &Self::Lazy) -> bool {
                    false #( || #lazy.#cells.is_loaded() )*
                }

                fn __take(#lazy: &Self::Lazy) -> Self {
                    let #bound = Self::__bind(#lazy);
                    Self { #( #fields: #bound.#indices.take_value(), )* }
                }

                fn __put(self, #lazy: &Self::Lazy) {
                    let #bound = Self::__bind(#lazy);
                    #( #bound.#indices.put_value(self.#fields); )*
                }
            }
        };
    }
}

/// The `FragmentSpec` of one field. User-supplied expressions keep their spans, so type
/// errors land on them; checks of the field type land on the type.
fn spec(field: &Field<'_>) -> TokenStream {
    let ty = field.ty;
    let name = &field.name;
    let prefix = field.prefix();
    let key = match &field.attrs.key {
        Some(key) => {
            let expr = &key.value;
            quote_spanned!(expr.span()=> ::multisession::__private::key_fn(#expr))
        }
        None => quote!(::multisession::__private::key_fn(
            ::multisession::keys::chat
        )),
    };
    let initial = match field.attrs.initial.as_ref().map(|i| &i.value) {
        Some(Initial::Function(expr)) => {
            quote_spanned!(expr.span()=> ::multisession::__private::initial_fn::<#ty, _>(#expr))
        }
        Some(Initial::Value(expr)) => {
            quote_spanned!(expr.span()=> ::multisession::__private::initial_fn::<#ty, _>(|| #expr))
        }
        None => quote_spanned!(ty.span()=>
            ::multisession::__private::initial_fn::<#ty, _>(<#ty as ::core::default::Default>::default)
        ),
    };
    let codec = match &field.attrs.codec {
        Some(codec) => {
            let path = &codec.value;
            quote_spanned!(path.span()=> #path)
        }
        None => quote!(::multisession::codec::Json),
    };
    // One bound for `Serialize + Deserialize`, so a type with neither gets one error.
    let encoder = quote_spanned!(ty.span()=>
        <#ty as ::multisession::__private::FragmentData<_>>::encoder::<#codec>()
    );
    let decoder = quote_spanned!(ty.span()=>
        <#ty as ::multisession::__private::FragmentData<_>>::decoder::<#codec>()
    );
    let none_deletes = field
        .option_inner
        .is_some()
        .then(|| quote!(.none_deletes(::core::option::Option::is_none)));
    let ttl = field.attrs.ttl.as_ref().map(|ttl| match &ttl.value {
        Ttl::Millis(ms) => quote!(.ttl(::core::time::Duration::from_millis(#ms))),
        Ttl::Expr(expr) => {
            quote_spanned!(expr.span()=> .ttl(::multisession::__private::ttl_value(#expr)))
        }
    });
    let migrations = field
        .attrs
        .migrations
        .as_ref()
        .map(|m| migrations(field, &codec, &m.value));
    quote! {
        ::multisession::__private::FragmentSpec::<#ty>::new(
            #name,
            #prefix,
            #key,
            #initial,
            #encoder,
            #decoder,
        )
        .equality({
            #[allow(unused_imports)]
            use ::multisession::__private::{NoPartialEq as _, ViaPartialEq as _};
            (&&&::multisession::__private::EqProbe::<#ty>::new()).eq_fn()
        })
        #none_deletes
        #ttl
        #migrations
    }
}

/// The versioned decoder of a fragment with migrations `steps` (oldest first): a value
/// stored at version `v` goes through steps `v..`; the last step yields the field type
/// (for `Option<T>` fields, `T`).
fn migrations(field: &Field<'_>, codec: &TokenStream, steps: &[syn::Expr]) -> TokenStream {
    let ty = field.ty;
    let target = field.option_inner.unwrap_or(ty);
    let wrap = if field.option_inner.is_some() {
        quote!(::core::option::Option::Some)
    } else {
        quote!()
    };
    let (bytes, version, payload, found) = (
        local("bytes"),
        local("version"),
        local("payload"),
        local("found"),
    );
    let current = steps.len() as u32;
    let arms = (0..steps.len()).map(|from| {
        let version = from as u32;
        let names: Vec<_> = (from..steps.len())
            .map(|i| local(&format!("step_{i}")))
            .collect();
        let bindings = steps[from..]
            .iter()
            .zip(&names)
            .map(|(step, name)| quote_spanned!(step.span()=> let #name = #step;));
        // The value between steps. No user expression is in its scope (the steps are
        // bound before it), so it can have the steps' spans and hygiene: a step whose
        // argument does not fit is reported on that step, as user code.
        let value = |span| Ident::new("__ms_value", span);
        let calls = steps[from..].iter().zip(&names).map(|(step, name)| {
            let value = value(step.span());
            quote_spanned!(step.span()=> let #value = #name(#value);)
        });
        let first = &names[0];
        // A last step that yields the wrong type is reported on that step.
        let last = steps.last().map_or_else(Span::call_site, Spanned::span);
        let result = {
            let value = value(last);
            quote_spanned!(last=> let #value: #target = #value;)
        };
        let value = value(Span::call_site());
        quote! {
            #version => {
                #( #bindings )*
                let #value = ::multisession::__private::decode_input::<#codec, _, _>(#first, #payload)?;
                #( #calls )*
                #result
                ::core::result::Result::Ok((#wrap(#value), true))
            }
        }
    });
    let decode_current = quote_spanned!(ty.span()=>
        <#ty as ::multisession::__private::FragmentData<_>>::decode_current::<#codec>(#payload)
    );
    quote! {
        .migrations(#current, |#bytes: &[u8]| -> ::core::result::Result<(#ty, bool), ::multisession::__private::DecodeFailure> {
            let (#version, #payload) = ::multisession::__private::split_version(#bytes);
            match #version {
                #( #arms )*
                #current => ::core::result::Result::Ok((#decode_current?, false)),
                #found => ::core::result::Result::Err(::multisession::__private::DecodeFailure::TooNew {
                    found: #found,
                    supported: #current,
                }),
            }
        })
    }
}
