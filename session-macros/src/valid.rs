//! Checks that span several fields, or that need the whole struct.

use crate::{ast::Input, ctxt::Ctxt};

pub fn check(cx: &mut Ctxt, input: &Input<'_>) {
    if input.fields.is_empty() {
        cx.error_spanned_by(
            input.ident,
            "MultiSession needs at least one field: each field is a session fragment",
        );
    }
    check_names(cx, input);
    check_prefixes(cx, input);
}

/// What a reserved field name would clash with.
#[derive(Clone, Copy, PartialEq, Eq)]
pub enum Clash {
    /// A method of the generated builder, which has one store setter per field.
    Builder,
    /// A method that `s.field()` on a `Session<S>` reaches before the generated accessor
    /// (`Session<S>` derefs to the lazy view).
    Session,
}

/// The field names that are taken, and by what: the builder's own methods; and every
/// method that a call on a `Session<S>` finds before the lazy view's accessors: its
/// inherent methods, those of the traits it implements, and those of the std blanket impls
/// that cover it. (Its private methods do not count: the user's crate cannot call them,
/// so method resolution skips them.)
pub const RESERVED: &[(&str, Clash, &str)] = &[
    ("build", Clash::Builder, "the builder's own `build` method"),
    (
        "config",
        Clash::Builder,
        "the builder's own `config` method",
    ),
    (
        "default_store",
        Clash::Builder,
        "the builder's own `default_store` method",
    ),
    // `Session<S>`'s inherent methods.
    ("commit", Clash::Session, "`Session::commit`"),
    ("update_id", Clash::Session, "`Session::update_id`"),
    ("delete_all", Clash::Session, "`Session::delete_all`"),
    // The traits `Session<S>` implements.
    (
        "clone",
        Clash::Session,
        "`Clone::clone` (`Session` is `Clone`)",
    ),
    (
        "clone_from",
        Clash::Session,
        "`Clone::clone_from` (`Session` is `Clone`)",
    ),
    (
        "deref",
        Clash::Session,
        "`Deref::deref` (`Session` derefs to the lazy view)",
    ),
    ("fmt", Clash::Session, "`Debug::fmt` (`Session` is `Debug`)"),
    // Blanket impls of std that cover `Session<S>`.
    (
        "to_owned",
        Clash::Session,
        "`ToOwned::to_owned` (`Session` is `Clone`)",
    ),
    (
        "clone_into",
        Clash::Session,
        "`ToOwned::clone_into` (`Session` is `Clone`)",
    ),
    ("into", Clash::Session, "`Into::into`"),
    ("try_into", Clash::Session, "`TryInto::try_into`"),
    ("borrow", Clash::Session, "`Borrow::borrow`"),
    ("borrow_mut", Clash::Session, "`BorrowMut::borrow_mut`"),
    ("type_id", Clash::Session, "`Any::type_id`"),
];

/// What the field name `name` clashes with, if it is reserved.
pub fn clash(name: &str) -> Option<(Clash, &'static str)> {
    RESERVED
        .iter()
        .find(|(reserved, ..)| *reserved == name)
        .map(|&(_, clash, owner)| (clash, owner))
}

/// A field named like a method that is reached first would have an accessor (or store
/// setter) that cannot be called.
fn check_names(cx: &mut Ctxt, input: &Input<'_>) {
    for field in &input.fields {
        let Some((clash, owner)) = clash(&field.name) else {
            continue;
        };
        let name = &field.name;
        let call = match clash {
            Clash::Builder => format!(
                "`{}::builder().{name}(..)` would call {owner}, not this fragment's store setter",
                input.ident
            ),
            Clash::Session => format!(
                "`s.{name}()` on a `Session<{}>` would call {owner}, not this fragment's accessor",
                input.ident
            ),
        };
        cx.error_spanned_by(
            field.ident,
            format!(
                "a fragment cannot be named `{name}`: {call}; rename the field, and keep its stored keys with `#[session(prefix = \"{name}:\")]`"
            ),
        );
    }
}

/// Rule S2: no key of one fragment may land in another's namespace, so no prefix may be
/// the start of another (fragments may share a store). Each field is reported once, at
/// its first overlap.
fn check_prefixes(cx: &mut Ctxt, input: &Input<'_>) {
    for (i, later) in input.fields.iter().enumerate() {
        let later_prefix = later.prefix();
        // A field declared twice is rustc's error to report.
        let overlap = input.fields[..i].iter().find(|earlier| {
            if earlier.name == later.name {
                return false;
            }
            let earlier_prefix = earlier.prefix();
            later_prefix.starts_with(&earlier_prefix) || earlier_prefix.starts_with(&later_prefix)
        });
        if let Some(earlier) = overlap {
            let earlier_prefix = earlier.prefix();
            let how = if later_prefix == earlier_prefix {
                "is the same as".to_owned()
            } else {
                "overlaps".to_owned()
            };
            cx.error_spanned_by(
                later.prefix_span_token(),
                format!(
                    "prefix {later_prefix:?} of fragment `{}` {how} prefix {earlier_prefix:?} of fragment `{}`: on a shared store one fragment could read the other's keys; make neither prefix the start of the other",
                    later.name, earlier.name
                ),
            );
        }
    }
}
