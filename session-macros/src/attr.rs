//! Parsing of `#[session(...)]` field attributes.

use syn::{Attribute, Expr, ExprLit, Lit, LitStr, Path, meta::ParseNestedMeta};

use crate::ctxt::Ctxt;

/// The keys a field attribute accepts, for error messages.
pub const FIELD_KEYS: &str = "`key`, `initial`, `prefix`, `codec`, `ttl`, `migrations`";

/// One attribute value.
pub struct Attr<T> {
    pub value: T,
}

/// How the initial value is given.
pub enum Initial {
    /// A function path or a closure: called for every fresh value.
    Function(Expr),
    /// Any other expression: evaluated for every fresh value.
    Value(Expr),
}

/// How the time to live is given.
pub enum Ttl {
    /// A literal like `"30m"`, checked and converted at compile time.
    Millis(u64),
    /// An expression of type `std::time::Duration`.
    Expr(Expr),
}

/// What `#[session(...)]` says about a field.
#[derive(Default)]
pub struct FieldAttrs {
    pub key: Option<Attr<Expr>>,
    pub initial: Option<Attr<Initial>>,
    pub prefix: Option<Attr<LitStr>>,
    pub codec: Option<Attr<Path>>,
    pub ttl: Option<Attr<Ttl>>,
    pub migrations: Option<Attr<Vec<Expr>>>,
}

/// Parses `"90s"`, `"30m"`, `"1h30m"`, `"2d"`, `"500ms"` into milliseconds.
pub fn parse_duration(text: &str) -> Result<u64, String> {
    let text = text.trim();
    if text.is_empty() {
        return Err("an empty duration".to_owned());
    }
    let mut total: u64 = 0;
    let mut rest = text;
    while !rest.is_empty() {
        let digits = rest.len() - rest.trim_start_matches(|c: char| c.is_ascii_digit()).len();
        if digits == 0 {
            return Err(format!("expected a number at `{rest}`"));
        }
        let number: u64 = rest[..digits]
            .parse()
            .map_err(|_| format!("`{}` is too large", &rest[..digits]))?;
        rest = &rest[digits..];
        let unit_len = rest.len()
            - rest
                .trim_start_matches(|c: char| c.is_ascii_alphabetic())
                .len();
        let unit = &rest[..unit_len];
        if unit.is_empty() && rest.starts_with(char::is_whitespace) {
            return Err(format!(
                "no space between a number and its unit: `{number}m`, not `{number} m`"
            ));
        }
        rest = &rest[unit_len..];
        let scale: u64 = match unit {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            "" => return Err(format!("`{number}` needs a unit: ms, s, m, h or d")),
            other => return Err(format!("unknown unit `{other}`: use ms, s, m, h or d")),
        };
        total = number
            .checked_mul(scale)
            .and_then(|ms| total.checked_add(ms))
            .ok_or_else(|| "the duration is too large".to_owned())?;
    }
    if total == 0 {
        return Err("a TTL of zero would expire every value at once".to_owned());
    }
    Ok(total)
}

fn set_once<T>(cx: &mut Ctxt, slot: &mut Option<Attr<T>>, name: &Path, value: T) {
    if slot.is_some() {
        cx.error_spanned_by(
            name,
            format!(
                "duplicate session attribute `{}`",
                name.get_ident()
                    .map_or_else(String::new, ToString::to_string)
            ),
        );
    } else {
        *slot = Some(Attr { value });
    }
}

/// Parses every `#[session(...)]` on a field, collecting errors and going on.
pub fn field_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("session")) {
        if let syn::Meta::Path(path) = &attr.meta {
            cx.error_spanned_by(
                path,
                format!("expected `#[session(...)]` with at least one of {FIELD_KEYS}"),
            );
            continue;
        }
        let result = attr.parse_nested_meta(|meta| {
            parse_field_key(cx, &mut out, &meta)?;
            Ok(())
        });
        if let Err(error) = result {
            cx.syn_error(error);
        }
    }
    out
}

fn parse_field_key(
    cx: &mut Ctxt,
    out: &mut FieldAttrs,
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<()> {
    let name = meta.path.clone();
    if name.is_ident("key") {
        let expr: Expr = meta.value()?.parse()?;
        if let Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) = &expr
        {
            cx.error_spanned_by(
                lit,
                format!(
                    "`key` takes a key function, not a string: try `key = multisession::keys::{}` or a path to your own `fn(&dyn SessionContext) -> Option<String>`",
                    match lit.value().as_str() {
                        "user" | "user_in_chat" | "chat_thread" => lit.value(),
                        _ => "chat".to_owned(),
                    }
                ),
            );
            return Ok(());
        }
        set_once(cx, &mut out.key, &name, expr);
    } else if name.is_ident("initial") {
        let expr: Expr = meta.value()?.parse()?;
        let initial = match expr {
            Expr::Path(_) | Expr::Closure(_) => Initial::Function(expr),
            other => Initial::Value(other),
        };
        set_once(cx, &mut out.initial, &name, initial);
    } else if name.is_ident("prefix") {
        let lit: Lit = meta.value()?.parse()?;
        match lit {
            Lit::Str(lit) => set_once(cx, &mut out.prefix, &name, lit),
            other => cx.error_spanned_by(
                &other,
                "`prefix` takes a string literal, like `prefix = \"legacy-\"`",
            ),
        }
    } else if name.is_ident("ttl") {
        let expr: Expr = meta.value()?.parse()?;
        match &expr {
            Expr::Lit(ExprLit { lit: Lit::Str(lit), .. }) => match parse_duration(&lit.value()) {
                Ok(ms) => set_once(cx, &mut out.ttl, &name, Ttl::Millis(ms)),
                Err(problem) => cx.error_spanned_by(
                    lit,
                    format!("invalid `ttl` {:?}: {problem}; write it like \"30m\", \"1h30m\", \"90s\" or \"7d\"", lit.value()),
                ),
            },
            Expr::Lit(ExprLit { lit, .. }) => cx.error_spanned_by(
                lit,
                "`ttl` takes a duration string like \"30m\" or a `std::time::Duration` expression",
            ),
            _ => set_once(cx, &mut out.ttl, &name, Ttl::Expr(expr)),
        }
    } else if name.is_ident("migrations") {
        let expr: Expr = meta.value()?.parse()?;
        match expr {
            Expr::Array(array) if array.elems.is_empty() => cx.error_spanned_by(
                &array,
                "`migrations` needs at least one step: `migrations = [v0_to_v1]`",
            ),
            Expr::Array(array) => set_once(cx, &mut out.migrations, &name, array.elems.into_iter().collect()),
            other => cx.error_spanned_by(
                &other,
                "`migrations` takes a list of functions, oldest first: `migrations = [v0_to_v1, v1_to_v2]`",
            ),
        }
    } else if name.is_ident("codec") {
        let path: Path = meta.value()?.parse()?;
        set_once(cx, &mut out.codec, &name, path);
    } else {
        let shown = name
            .get_ident()
            .map_or_else(|| quote::quote!(#name).to_string(), ToString::to_string);
        cx.error_spanned_by(
            &name,
            format!("unknown session attribute `{shown}`; expected one of {FIELD_KEYS}"),
        );
        // Skip the value so the keys after this one are still checked.
        if meta.input.peek(syn::Token![=]) {
            let _: Expr = meta.value()?.parse()?;
        } else if meta.input.peek(syn::token::Paren) {
            let _ = meta.parse_nested_meta(|inner| {
                if inner.input.peek(syn::Token![=]) {
                    let _: Expr = inner.value()?.parse()?;
                }
                Ok(())
            });
        }
    }
    Ok(())
}

/// Rejects `#[session(...)]` on the struct itself: every option is per field.
pub fn container_attrs(cx: &mut Ctxt, attrs: &[Attribute]) {
    for attr in attrs.iter().filter(|a| a.path().is_ident("session")) {
        cx.error_spanned_by(
            attr,
            "`#[session(...)]` goes on fields, not on the struct: each field is a fragment with its own options",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::parse_duration;

    #[test]
    fn durations_parse_and_add_up() {
        assert_eq!(parse_duration("500ms"), Ok(500));
        assert_eq!(parse_duration("90s"), Ok(90_000));
        assert_eq!(parse_duration("1h30m"), Ok(5_400_000));
        assert_eq!(parse_duration("2d"), Ok(172_800_000));
        assert_eq!(parse_duration(" 30m "), Ok(1_800_000));
    }

    #[test]
    fn bad_durations_say_why() {
        assert!(parse_duration("").unwrap_err().contains("empty"));
        assert!(parse_duration("30").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("30 m").unwrap_err().contains("no space"));
        assert!(
            parse_duration("2weeks")
                .unwrap_err()
                .contains("unknown unit")
        );
        assert!(
            parse_duration("m30")
                .unwrap_err()
                .contains("expected a number")
        );
        assert!(parse_duration("0s").unwrap_err().contains("zero"));
        assert!(
            parse_duration("99999999999999999999d")
                .unwrap_err()
                .contains("too large")
        );
        assert!(
            parse_duration("9999999999999999d")
                .unwrap_err()
                .contains("too large")
        );
    }
}
