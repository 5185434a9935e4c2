//! Reading: where a fragment's keys are, `list`, `count`, `get`.

use std::{collections::BTreeSet, io::Write as _};

use multisession::store::{Record, Store};
use serde_json::json;

use crate::{
    cli::FragmentArgs,
    error::CliError,
    target::Target,
    value::{Decoded, human_duration},
};

/// Listing page size: large pages mean fewer round trips to the server stores (the
/// memory store walks at most 4 096 keys per page whatever is asked).
pub const PAGE: usize = 5000;

/// Writes per batch (`clear`, `import`): each is one transaction or one Lua script, which
/// holds the store this long.
pub const BATCH: usize = 500;

/// How many keys `fragments_found` looks at.
const SCAN_LIMIT: usize = 10_000;

/// Where one fragment's keys live in a store.
#[derive(Debug, Clone)]
pub struct Namespace {
    /// The fragment's name, for messages.
    pub fragment: String,
    /// The bot namespace (`"{bot}/"`, or empty).
    pub bot: String,
    /// Every storage key of the fragment starts with this.
    pub prefix: String,
}

impl Namespace {
    pub fn new(args: &FragmentArgs, bot: Option<i64>) -> Self {
        let bot = bot_namespace(bot);
        let own = args
            .prefix
            .clone()
            .unwrap_or_else(|| format!("{}:", args.fragment));
        Namespace {
            fragment: args.fragment.clone(),
            prefix: format!("{bot}{own}"),
            bot,
        }
    }

    /// The storage key of session key `key`.
    pub fn key(&self, key: &str) -> String {
        format!("{}{key}", self.prefix)
    }

    /// The session key of a storage key of this namespace.
    pub fn session_key<'k>(&self, storage_key: &'k str) -> &'k str {
        storage_key
            .strip_prefix(&self.prefix)
            .unwrap_or(storage_key)
    }

    /// The error for a fragment with nothing stored, naming the fragments that are.
    pub async fn unknown(&self, target: &Target) -> CliError {
        let found = match fragments_found(target.dyn_store(), &self.bot).await {
            Ok(found) => found,
            Err(e) => return e,
        };
        let mut message = format!(
            "nothing is stored under fragment `{}` (key prefix `{}`) in `{}`",
            self.fragment, self.prefix, target.url
        );
        if found.is_empty() {
            message.push_str(&if self.bot.is_empty() {
                "; the store holds no sessions at all (another --table or --redis-prefix?)"
                    .to_owned()
            } else {
                format!(
                    "; nothing at all is stored under the bot namespace `{}` (another --bot?)",
                    self.bot
                )
            });
        } else {
            let names: Vec<&str> = found.iter().map(String::as_str).collect();
            message.push_str(&format!("; fragments found: {}", names.join(", ")));
            if names.iter().any(|name| name.contains('/')) {
                message.push_str(" (`ID/name`: the fragment `name` of bot ID, see --bot)");
            }
        }
        CliError::store(message)
    }

    /// Whether anything is stored under the fragment.
    pub async fn is_empty(&self, store: &dyn Store) -> Result<bool, CliError> {
        let page = store
            .list(&self.prefix, None, 1)
            .await
            .map_err(|e| list_failed(store, &self.prefix, e))?;
        Ok(page.entries.is_empty())
    }
}

pub fn bot_namespace(bot: Option<i64>) -> String {
    bot.map(|bot| format!("{bot}/")).unwrap_or_default()
}

pub fn list_failed(store: &dyn Store, prefix: &str, e: impl std::fmt::Display) -> CliError {
    CliError::store(format!(
        "could not list the keys under `{prefix}` on {}: {e}",
        store.name()
    ))
}

/// Calls `each` on every live key under `prefix` (at most `limit`), in key order, a page at
/// a time; stops early when `each` returns `false`.
pub async fn for_each_key(
    store: &dyn Store,
    prefix: &str,
    limit: Option<usize>,
    mut each: impl FnMut(String, Record) -> bool,
) -> Result<usize, CliError> {
    let mut cursor: Option<String> = None;
    let mut seen = 0usize;
    loop {
        let want = limit.map_or(PAGE, |limit| (limit - seen).min(PAGE));
        if want == 0 {
            return Ok(seen);
        }
        let page = store
            .list(prefix, cursor.as_deref(), want)
            .await
            .map_err(|e| list_failed(store, prefix, e))?;
        for (key, record) in page.entries {
            seen += 1;
            if !each(key, record) || limit.is_some_and(|limit| seen >= limit) {
                return Ok(seen);
            }
        }
        match page.cursor {
            Some(next) => cursor = Some(next),
            None => return Ok(seen),
        }
    }
}

/// The fragment names among the first keys of the store (under the bot namespace `bot`):
/// what comes before the first `:` of each key.
async fn fragments_found(store: &dyn Store, bot: &str) -> Result<BTreeSet<String>, CliError> {
    let mut found = BTreeSet::new();
    for_each_key(store, bot, Some(SCAN_LIMIT), |key, _| {
        let key = &key[bot.len()..];
        if let Some((fragment, _)) = key.split_once(':') {
            found.insert(fragment.to_owned());
        }
        true
    })
    .await?;
    Ok(found)
}

pub async fn list(
    target: &Target,
    ns: &Namespace,
    limit: Option<usize>,
    long: bool,
) -> Result<(), CliError> {
    if limit == Some(0) {
        return Ok(());
    }
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let mut failed = None;
    let count = for_each_key(target.dyn_store(), &ns.prefix, limit, |key, record| {
        let key = ns.session_key(&key);
        let line = if long {
            let decoded = Decoded::new(&record.value);
            format!(
                "{key}\trevision {}\tversion {}\t{} bytes\t{}\t{} updates",
                record.revision,
                decoded.version,
                record.value.len(),
                if decoded.json.is_ok() {
                    "json"
                } else {
                    "not json"
                },
                decoded.updates.len(),
            )
        } else {
            key.to_owned()
        };
        match writeln!(out, "{line}") {
            Ok(()) => true,
            Err(e) => {
                failed = Some(e);
                false
            }
        }
    })
    .await?;
    if let Some(e) = failed {
        return Err(CliError::store(format!("writing the listing: {e}")));
    }
    out.flush()
        .map_err(|e| CliError::store(format!("writing the listing: {e}")))?;
    if count == 0 {
        return Err(ns.unknown(target).await);
    }
    Ok(())
}

pub async fn count(target: &Target, ns: &Namespace) -> Result<(), CliError> {
    let count = for_each_key(target.dyn_store(), &ns.prefix, None, |_, _| true).await?;
    if count == 0 {
        return Err(ns.unknown(target).await);
    }
    println!("{count}");
    Ok(())
}

/// The value of `key`, with its TTL; an error naming what is missing if there is none.
pub async fn read(
    target: &Target,
    ns: &Namespace,
    key: &str,
) -> Result<(Record, Option<std::time::Duration>), CliError> {
    let storage_key = ns.key(key);
    let store = target.dyn_store();
    let found = store.read_with_ttl(&storage_key).await.map_err(|e| {
        CliError::store(format!(
            "could not read `{storage_key}` on {}: {e}",
            store.name()
        ))
    })?;
    match found {
        Some(found) => Ok(found),
        None if ns.is_empty(store).await? => Err(ns.unknown(target).await),
        None => Err(CliError::store(format!(
            "no value for key `{key}` in fragment `{}` (storage key `{storage_key}`)",
            ns.fragment
        ))),
    }
}

pub async fn get(
    target: &Target,
    ns: &Namespace,
    key: &str,
    as_json: bool,
) -> Result<(), CliError> {
    let (record, ttl) = read(target, ns, key).await?;
    let decoded = Decoded::new(&record.value);
    let ttl_ms = ttl.map(|ttl| u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX));
    if as_json {
        let value = match &decoded.json {
            Ok(_) => serde_json::from_slice::<serde_json::Value>(decoded.body).ok(),
            Err(_) => None,
        };
        let out = json!({
            "fragment": ns.fragment,
            "key": key,
            "storage_key": ns.key(key),
            "revision": record.revision,
            "version": decoded.version,
            "ttl_ms": ttl_ms,
            "updates": decoded.updates,
            "bytes": record.value.len(),
            "value": value,
            "value_base64": decoded.json.is_err().then(|| decoded.body_base64()),
        });
        println!("{out}");
        return Ok(());
    }
    println!("key        {}", ns.key(key));
    println!("revision   {}", record.revision);
    println!(
        "version    {}{}",
        decoded.version,
        if decoded.has_version {
            ""
        } else {
            " (no version header)"
        }
    );
    println!(
        "expires    {}",
        match ttl {
            Some(ttl) => format!("in {} ({} ms)", human_duration(ttl), ttl.as_millis()),
            None => "never".to_owned(),
        }
    );
    let updates: Vec<String> = decoded.updates.iter().map(u64::to_string).collect();
    println!(
        "updates    {}",
        if updates.is_empty() {
            "none recorded".to_owned()
        } else {
            updates.join(", ")
        }
    );
    println!("size       {} bytes", record.value.len());
    match &decoded.json {
        Ok(pretty) => println!("value (json)\n{pretty}"),
        Err(why) => println!(
            "value (not JSON: {why}; the codec's bytes as base64)\n{}",
            decoded.body_base64()
        ),
    }
    Ok(())
}
