//! Checks that span several fields.

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

/// The generated builder has methods of its own; a field of the same name would clash.
fn check_names(cx: &mut Ctxt, input: &Input<'_>) {
    for field in &input.fields {
        if RESERVED.contains(&field.name.as_str()) {
            cx.error_spanned_by(
                field.ident,
                format!(
                    "a fragment cannot be named `{0}`: the generated builder has a `{0}` method of its own; rename the field and keep its stored keys with `#[session(prefix = \"{0}:\")]`",
                    field.name
                ),
            );
        }
    }
}

const RESERVED: &[&str] = &["build", "config", "default_store"];

/// Rule S2: no key of one fragment may land in another's namespace, so no prefix may be
/// the start of another (fragments may share a store).
fn check_prefixes(cx: &mut Ctxt, input: &Input<'_>) {
    for (i, later) in input.fields.iter().enumerate() {
        let later_prefix = later.prefix();
        for earlier in &input.fields[..i] {
            let earlier_prefix = earlier.prefix();
            if later_prefix.starts_with(&earlier_prefix)
                || earlier_prefix.starts_with(&later_prefix)
            {
                cx.error_spanned_by(
                    later.prefix_span_token(),
                    format!(
                        "prefix {later_prefix:?} of fragment `{}` overlaps prefix {earlier_prefix:?} of fragment `{}`: on a shared store one fragment could read the other's keys; make neither prefix the start of the other",
                        later.name, earlier.name
                    ),
                );
            }
        }
    }
}
