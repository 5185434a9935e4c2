//! Parsing of `#[session(...)]` field attributes.

use proc_macro2::{TokenStream, TokenTree};
use quote::{ToTokens, quote};
use syn::{
    Attribute, Expr, ExprClosure, ExprLit, Lit, LitStr, Meta, Pat, Path, Token,
    meta::ParseNestedMeta,
    parse::{ParseStream, discouraged::Speculative},
};

use crate::ctxt::Ctxt;

/// The options a field attribute accepts, in the order the docs list them.
pub const OPTIONS: &[&str] = &["key", "initial", "prefix", "codec", "ttl", "migrations"];

/// The options as a list for error messages: `` `key`, `initial`, ... ``.
pub fn options_list() -> String {
    OPTIONS
        .iter()
        .map(|option| format!("`{option}`"))
        .collect::<Vec<_>>()
        .join(", ")
}

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

/// Parses every `#[session(...)]` on a field, collecting errors and going on.
pub fn field_attrs(cx: &mut Ctxt, attrs: &[Attribute]) -> FieldAttrs {
    let mut out = FieldAttrs::default();
    for attr in attrs.iter().filter(|a| a.path().is_ident("session")) {
        match &attr.meta {
            Meta::Path(path) => {
                cx.error_spanned_by(
                    path,
                    format!(
                        "expected `#[session(...)]` with at least one of {}",
                        options_list()
                    ),
                );
                continue;
            }
            Meta::NameValue(name_value) => {
                cx.error_spanned_by(
                    name_value,
                    format!(
                        "expected `#[session(option = value, ...)]`, with options {}",
                        options_list()
                    ),
                );
                continue;
            }
            Meta::List(list) if list.tokens.is_empty() => {
                cx.error_spanned_by(
                    list,
                    format!(
                        "empty `#[session()]`: give at least one of {}, or remove it",
                        options_list()
                    ),
                );
                continue;
            }
            Meta::List(_) => {}
        }
        if let Err(error) = attr.parse_nested_meta(|meta| parse_option(cx, &mut out, &meta)) {
            cx.syn_error(error);
        }
    }
    out
}

/// Parses one `option = value` of a field attribute. Problems with the value are recorded
/// in `cx` and the value is skipped, so the options after it are still checked; only
/// tokens that are not an option at all end the attribute (as an `Err`).
fn parse_option(
    cx: &mut Ctxt,
    out: &mut FieldAttrs,
    meta: &ParseNestedMeta<'_>,
) -> syn::Result<()> {
    let name = &meta.path;
    let Some(option) = name
        .get_ident()
        .map(ToString::to_string)
        .filter(|option| OPTIONS.contains(&option.as_str()))
    else {
        unknown_option(cx, name);
        return skip_value(meta);
    };
    if !meta.input.peek(Token![=]) {
        cx.error_spanned_by(
            name,
            format!("`{option}` needs a value: `{}`", example(&option)),
        );
        return skip_value(meta);
    }
    let value = meta.value()?;
    if value.is_empty() || value.peek(Token![,]) {
        cx.error_spanned_by(
            name,
            format!("`{option}` needs a value after `=`: `{}`", example(&option)),
        );
        return Ok(());
    }
    match option.as_str() {
        "key" => parse_key(cx, out, name, value),
        "initial" => parse_initial(cx, out, name, value),
        "prefix" => parse_prefix(cx, out, name, value),
        "codec" => parse_codec(cx, out, name, value),
        "ttl" => parse_ttl(cx, out, name, value),
        _ => parse_migrations(cx, out, name, value),
    }
}

/// How an option is written, for "needs a value" errors.
fn example(option: &str) -> &'static str {
    match option {
        "key" => "key = multisession::keys::user",
        "initial" => "initial = Settings::english",
        "prefix" => "prefix = \"legacy-\"",
        "codec" => "codec = multisession::codec::Json",
        "ttl" => "ttl = \"30m\"",
        _ => "migrations = [v0_to_v1, v1_to_v2]",
    }
}

fn parse_key(
    cx: &mut Ctxt,
    out: &mut FieldAttrs,
    name: &Path,
    value: ParseStream<'_>,
) -> syn::Result<()> {
    let expr: Expr = value.parse()?;
    match &expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => cx.error_spanned_by(
            lit,
            format!(
                "`key` takes a key function, not a string: try `key = multisession::keys::{}` or a path to your own `fn(&dyn SessionContext) -> Option<String>`",
                match lit.value().as_str() {
                    known @ ("user" | "user_in_chat" | "chat_thread") => known.to_owned(),
                    _ => "chat".to_owned(),
                }
            ),
        ),
        Expr::Lit(ExprLit { lit, .. }) => cx.error_spanned_by(
            lit,
            "`key` takes a key function, not a literal: `key = multisession::keys::user`, or a path to your own `fn(&dyn SessionContext) -> Option<String>`",
        ),
        _ => set_once(cx, &mut out.key, name, expr),
    }
    Ok(())
}

fn parse_initial(
    cx: &mut Ctxt,
    out: &mut FieldAttrs,
    name: &Path,
    value: ParseStream<'_>,
) -> syn::Result<()> {
    let expr: Expr = value.parse()?;
    let initial = match expr {
        Expr::Closure(closure) if !closure.inputs.is_empty() => {
            cx.error_spanned_by(
                closure_head(&closure),
                "an `initial` closure takes no arguments: it is called for every fresh value, like `initial = || Settings::new(\"en\")`",
            );
            return Ok(());
        }
        Expr::Path(_) | Expr::Closure(_) => Initial::Function(expr),
        other => Initial::Value(other),
    };
    set_once(cx, &mut out.initial, name, initial);
    Ok(())
}

fn parse_prefix(
    cx: &mut Ctxt,
    out: &mut FieldAttrs,
    name: &Path,
    value: ParseStream<'_>,
) -> syn::Result<()> {
    let expr: Expr = value.parse()?;
    match expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => set_once(cx, &mut out.prefix, name, lit),
        other => cx.error_spanned_by(
            &other,
            "`prefix` takes a string literal, like `prefix = \"legacy-\"`: the derive checks at compile time that no two fragments' prefixes overlap",
        ),
    }
    Ok(())
}

fn parse_codec(
    cx: &mut Ctxt,
    out: &mut FieldAttrs,
    name: &Path,
    value: ParseStream<'_>,
) -> syn::Result<()> {
    // A type path, which may have generic arguments (`MyCodec<V1>`): not always an expression.
    let fork = value.fork();
    match fork.parse::<Expr>() {
        Ok(Expr::Path(path)) if path.qself.is_none() && path.attrs.is_empty() => {
            value.advance_to(&fork);
            set_once(cx, &mut out.codec, name, path.path);
        }
        Ok(other) => {
            value.advance_to(&fork);
            let what = match other {
                Expr::Lit(ExprLit {
                    lit: Lit::Str(_), ..
                }) => "not a string",
                Expr::Lit(_) => "not a literal",
                _ => "not an expression",
            };
            cx.error_spanned_by(
                &other,
                format!(
                    "`codec` takes a codec type, {what}: `codec = multisession::codec::Json`, or a type of yours that implements `multisession::codec::Codec`"
                ),
            );
        }
        Err(_) => {
            let path: Path = value.parse()?;
            set_once(cx, &mut out.codec, name, path);
        }
    }
    Ok(())
}

fn parse_ttl(
    cx: &mut Ctxt,
    out: &mut FieldAttrs,
    name: &Path,
    value: ParseStream<'_>,
) -> syn::Result<()> {
    const SHAPE: &str = "write it like \"30m\", \"1h30m\", \"90s\" or \"7d\"";
    let expr: Expr = value.parse()?;
    match &expr {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => match parse_duration(&lit.value()) {
            Ok(ms) => set_once(cx, &mut out.ttl, name, Ttl::Millis(ms)),
            Err(problem) => cx.error_spanned_by(
                lit,
                format!("invalid `ttl` {:?}: {problem}; {SHAPE}", lit.value()),
            ),
        },
        // `ttl = 30m` lexes as the integer 30 with the suffix `m`.
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) if !int.suffix().is_empty() => cx.error_spanned_by(
            int,
            format!(
                "`ttl` takes a duration string like \"30m\" or a `std::time::Duration` expression, not a number with a suffix: `ttl = \"{int}\"`"
            ),
        ),
        Expr::Lit(ExprLit {
            lit: Lit::Int(int), ..
        }) => cx.error_spanned_by(
            int,
            format!(
                "`ttl` takes a duration string like \"30m\" or a `std::time::Duration` expression, not a bare number: `ttl = \"{0}s\"` for {0} seconds",
                int.base10_digits()
            ),
        ),
        Expr::Lit(ExprLit { lit, .. }) => cx.error_spanned_by(
            lit,
            format!(
                "`ttl` takes a duration string or a `std::time::Duration` expression; {SHAPE}"
            ),
        ),
        _ => set_once(cx, &mut out.ttl, name, Ttl::Expr(expr)),
    }
    Ok(())
}

fn parse_migrations(
    cx: &mut Ctxt,
    out: &mut FieldAttrs,
    name: &Path,
    value: ParseStream<'_>,
) -> syn::Result<()> {
    let expr: Expr = value.parse()?;
    match expr {
        Expr::Array(array) if array.elems.is_empty() => cx.error_spanned_by(
            &array,
            "`migrations` needs at least one step: `migrations = [v0_to_v1]`",
        ),
        Expr::Array(array) => {
            let steps: Vec<Expr> = array
                .elems
                .into_iter()
                .filter(|step| check_step(cx, step))
                .collect();
            // Without the bad steps (reported), for the fallback to keep the rest used.
            if !steps.is_empty() {
                set_once(cx, &mut out.migrations, name, steps);
            }
        }
        other => cx.error_spanned_by(
            &other,
            "`migrations` takes a list of functions, oldest first: `migrations = [v0_to_v1, v1_to_v2]`",
        ),
    }
    Ok(())
}

/// Whether `step` can be a migration step: a function (path) or a closure of one typed
/// argument. Records why not.
fn check_step(cx: &mut Ctxt, step: &Expr) -> bool {
    match step {
        Expr::Lit(ExprLit {
            lit: Lit::Str(lit), ..
        }) => {
            let text = lit.value();
            let unquoted = if syn::parse_str::<Path>(&text).is_ok() {
                format!("`{text}`, without the quotes")
            } else {
                "a path to it, like `v0_to_v1`".to_owned()
            };
            cx.error_spanned_by(
                lit,
                format!("a migration step is a function, not a string: write {unquoted}"),
            );
            false
        }
        Expr::Lit(ExprLit { lit, .. }) => {
            cx.error_spanned_by(
                lit,
                "a migration step is a function from the previous version's value to the next one, like `v0_to_v1`, not a literal",
            );
            false
        }
        Expr::Closure(closure) if closure.inputs.len() != 1 => {
            cx.error_spanned_by(
                closure_head(closure),
                format!(
                    "a migration closure takes one argument, the value stored by the previous version, not {}: `|old: OldType| ...`",
                    closure.inputs.len()
                ),
            );
            false
        }
        Expr::Closure(closure) if !matches!(closure.inputs.first(), Some(Pat::Type(_))) => {
            cx.error_spanned_by(
                closure_head(closure),
                "a migration closure needs the type of its argument, which the stored value is decoded as: `|old: OldType| ...`",
            );
            false
        }
        _ => true,
    }
}

/// `|args|` of a closure: where to report problems with its arguments.
fn closure_head(closure: &ExprClosure) -> TokenStream {
    let (begin, inputs, end) = (&closure.inputs_begin, &closure.inputs, &closure.inputs_end);
    quote!(#begin #inputs #end)
}

/// Skips the value of an option that is not used (unknown, or given without `=`), so the
/// options after it are still checked.
fn skip_value(meta: &ParseNestedMeta<'_>) -> syn::Result<()> {
    if meta.input.peek(Token![=]) {
        let value = meta.value()?;
        let fork = value.fork();
        if fork.parse::<Expr>().is_ok() && (fork.is_empty() || fork.peek(Token![,])) {
            value.advance_to(&fork);
        } else {
            // Not an expression (a type, say): skip to the next comma.
            value.step(|cursor| {
                let mut rest = *cursor;
                while let Some((tree, next)) = rest.token_tree() {
                    if matches!(&tree, TokenTree::Punct(p) if p.as_char() == ',') {
                        break;
                    }
                    rest = next;
                }
                Ok(((), rest))
            })?;
        }
    } else if meta.input.peek(syn::token::Paren) {
        let _: TokenTree = meta.input.parse()?;
    }
    Ok(())
}

fn set_once<T>(cx: &mut Ctxt, slot: &mut Option<Attr<T>>, name: &Path, value: T) {
    if slot.is_some() {
        cx.error_spanned_by(
            name,
            format!(
                "duplicate session option `{}`: give each option once per field",
                display(name)
            ),
        );
    } else {
        *slot = Some(Attr { value });
    }
}

fn display(path: &Path) -> String {
    path.get_ident().map_or_else(
        || path.to_token_stream().to_string().replace(' ', ""),
        ToString::to_string,
    )
}

/// Reports an option that does not exist, with the option meant where it can tell.
fn unknown_option(cx: &mut Ctxt, name: &Path) {
    let shown = display(name);
    let normalized = shown.to_lowercase().replace('-', "_");
    let message = if let Some(hint) = hint(&normalized) {
        format!(
            "unknown session option `{shown}`: {hint}; the options are {}",
            options_list()
        )
    } else if let Some(meant) = did_you_mean(&normalized) {
        format!(
            "unknown session option `{shown}`; did you mean `{meant}`? The options are {}",
            options_list()
        )
    } else {
        format!(
            "unknown session option `{shown}`; the options are {}",
            options_list()
        )
    };
    cx.error_spanned_by(name, message);
}

/// Why an option that users ask for does not exist, and what to do instead.
fn hint(name: &str) -> Option<&'static str> {
    Some(match name {
        "store" | "stores" | "storage" | "backend" => {
            "stores are chosen when the sessions are built, not in the attribute: `Session::builder().field(store)`, or `.default_store(store)` for every fragment without its own"
        }
        "strict" | "lazy" | "eager" => {
            "loading is chosen per update, not per field: `sessions.run(..)` loads each fragment when it is first touched, `sessions.load(..)` loads them all up front"
        }
        "rename" | "name" | "alias" => {
            "a fragment is named by its field; to keep the stored keys of a renamed field, use `prefix = \"old_name:\"`"
        }
        "skip" | "ignore" => {
            "every field of the struct is a fragment; keep other data outside the session struct"
        }
        _ => return None,
    })
}

/// The option `name` most likely means: a known alias, a close spelling, or a part of it
/// (`get_session_key` means `key`).
fn did_you_mean(name: &str) -> Option<&'static str> {
    let alias = match name {
        "default" | "default_value" | "init" | "initial_value" | "value" | "initializer" => {
            Some("initial")
        }
        "expire" | "expires" | "expiry" | "expiration" | "timeout" | "lifetime" | "max_age"
        | "time_to_live" => Some("ttl"),
        "namespace" | "ns" => Some("prefix"),
        "serializer" | "serde" | "format" | "encoding" => Some("codec"),
        "migrate" | "versions" | "upgrade" | "upgrades" => Some("migrations"),
        "scope" | "getsessionkey" => Some("key"),
        _ => None,
    };
    alias
        .or_else(|| {
            OPTIONS
                .iter()
                .map(|option| (edit_distance(name, option), *option))
                .filter(|(distance, option)| *distance <= (option.len() / 3).max(1))
                .min_by_key(|(distance, _)| *distance)
                .map(|(_, option)| option)
        })
        .or_else(|| {
            name.split('_')
                .find_map(|part| OPTIONS.iter().find(|option| **option == part))
                .copied()
        })
}

/// The edit distance between `a` and `b`: insertions, deletions, substitutions and swaps
/// of two neighbours (optimal string alignment), each counting one.
fn edit_distance(a: &str, b: &str) -> usize {
    let (a, b): (Vec<char>, Vec<char>) = (a.chars().collect(), b.chars().collect());
    // d[i][j]: the distance between the first i chars of a and the first j of b.
    let mut d = vec![vec![0; b.len() + 1]; a.len() + 1];
    for (i, row) in d.iter_mut().enumerate() {
        row[0] = i;
    }
    for (j, cell) in d[0].iter_mut().enumerate() {
        *cell = j;
    }
    for i in 1..=a.len() {
        for j in 1..=b.len() {
            let cost = usize::from(a[i - 1] != b[j - 1]);
            let mut best = (d[i - 1][j] + 1)
                .min(d[i][j - 1] + 1)
                .min(d[i - 1][j - 1] + cost);
            if i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] {
                best = best.min(d[i - 2][j - 2] + 1);
            }
            d[i][j] = best;
        }
    }
    d[a.len()][b.len()]
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
    use super::{did_you_mean, edit_distance, parse_duration};

    #[test]
    fn edit_distance_counts_edits_and_swaps() {
        assert_eq!(edit_distance("prefix", "prefix"), 0);
        assert_eq!(edit_distance("prefx", "prefix"), 1);
        assert_eq!(edit_distance("tll", "ttl"), 1);
        assert_eq!(edit_distance("kye", "key"), 1);
        assert_eq!(edit_distance("", "key"), 3);
        assert_eq!(edit_distance("codec", "key"), 4);
    }

    #[test]
    fn misspelled_options_are_recognized() {
        assert_eq!(did_you_mean("prefx"), Some("prefix"));
        assert_eq!(did_you_mean("inital"), Some("initial"));
        assert_eq!(did_you_mean("migration"), Some("migrations"));
        assert_eq!(did_you_mean("keys"), Some("key"));
        assert_eq!(did_you_mean("default"), Some("initial"));
        assert_eq!(did_you_mean("get_session_key"), Some("key"));
        assert_eq!(did_you_mean("expires"), Some("ttl"));
        assert_eq!(did_you_mean("colour"), None);
    }

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
