//! `#[derive(MultiSession)]`: the derive of [multisession](https://docs.rs/multisession).
//!
//! The pipeline reads top to bottom: `ast` parses the struct and its `#[session(...)]`
//! attributes (with `attr`), `valid` checks what spans several fields, `expand`
//! generates the code. Every error is collected and spanned on the offending token; on
//! errors, `fallback` emits them with a stub of the generated API, so they are the only ones.

mod ast;
mod attr;
mod ctxt;
mod expand;
mod fallback;
mod valid;

use proc_macro::TokenStream;

/// Makes every field of a struct a session fragment with its own store, key, initial value
/// and codec. See the `multisession` crate for the attributes and what is generated.
#[proc_macro_derive(MultiSession, attributes(session))]
pub fn derive_multi_session(input: TokenStream) -> TokenStream {
    let input = syn::parse_macro_input!(input as syn::DeriveInput);
    expand::derive(&input).into()
}
