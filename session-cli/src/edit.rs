//! Changing: `set`, `delete`, `clear`. Every write is compare-and-set unless told not to.

use std::io::{IsTerminal, Read, Write as _};

use multisession::store::{Expect, Outcome, Store, Write};

use crate::{
    cli::SetArgs,
    error::CliError,
    inspect::{Namespace, for_each_key},
    progress::Progress,
    target::Target,
    value::{Decoded, new_value, reformat},
};

/// Applies one write; `Ok(false)` on a failed precondition.
async fn apply_one(store: &dyn Store, write: Write) -> Result<bool, CliError> {
    let key = write.key().to_owned();
    match store.apply(std::slice::from_ref(&write)).await.pop() {
        Some(Ok(Outcome::Applied)) => Ok(true),
        Some(Ok(Outcome::Conflict)) => Ok(false),
        Some(Err(e)) if e.outcome_unknown() => Err(CliError::store(format!(
            "writing `{key}` on {}: {e}; whether it landed is unknown: check with `get`",
            store.name()
        ))),
        Some(Err(e)) => Err(CliError::store(format!(
            "writing `{key}` on {}: {e}; nothing was written",
            store.name()
        ))),
        None => Err(CliError::store(format!(
            "writing `{key}` on {}: the store answered nothing",
            store.name()
        ))),
    }
}

pub async fn set(
    target: &Target,
    ns: &Namespace,
    key: &str,
    args: SetArgs,
) -> Result<(), CliError> {
    let text = if args.json == "-" {
        let mut text = String::new();
        std::io::stdin()
            .read_to_string(&mut text)
            .map_err(|e| CliError::store(format!("reading the JSON from standard input: {e}")))?;
        text
    } else {
        args.json
    };
    let json = reformat(text.as_bytes(), false)
        .map_err(|e| CliError::usage(format!("invalid JSON ({e}); nothing written")))?;
    let store = target.dyn_store();
    let storage_key = ns.key(key);
    let current = store.read_with_ttl(&storage_key).await.map_err(|e| {
        CliError::store(format!(
            "could not read `{storage_key}` on {}: {e}",
            store.name()
        ))
    })?;
    let expect = match (&current, args.revision) {
        (_, None) if args.force => Expect::Any,
        (None, Some(revision)) => {
            return Err(CliError::store(format!(
                "conflict: `{storage_key}` holds no value, not revision {revision}; nothing written"
            )));
        }
        (Some((record, _)), Some(revision)) if record.revision != revision => {
            return Err(CliError::store(format!(
                "conflict: `{storage_key}` is at revision {}, not {revision} (it changed since \
                 it was read); nothing written",
                record.revision
            )));
        }
        (_, Some(revision)) => Expect::Revision(revision),
        (Some((record, _)), None) => Expect::Revision(record.revision),
        (None, None) => Expect::Absent,
    };
    let (bytes, kept_ttl) = match &current {
        Some((record, ttl)) => {
            let decoded = Decoded::new(&record.value);
            if let (Err(why), false) = (&decoded.json, args.force) {
                return Err(CliError::store(format!(
                    "`{storage_key}` does not hold JSON ({why}): another codec? Refusing to \
                     write JSON over it (--force to do it anyway)"
                )));
            }
            (decoded.with_body(json.as_bytes(), args.version), *ttl)
        }
        None => {
            if !args.force && ns.is_empty(store).await? {
                let error = ns.unknown(target).await;
                return Err(CliError::store(format!(
                    "{error}; --force creates its first value anyway"
                )));
            }
            if args.version.is_none() {
                eprintln!(
                    "note: new value without a migration version (version 0); pass --version N \
                     if the fragment has migrations"
                );
            }
            (new_value(json.as_bytes(), args.version), None)
        }
    };
    let ttl = match (args.ttl, args.no_ttl) {
        (Some(ttl), _) => Some(ttl),
        (None, true) => None,
        (None, false) => kept_ttl,
    };
    let write = Write::Put {
        key: storage_key.clone(),
        value: bytes,
        ttl,
        expect,
    };
    if !apply_one(store, write).await? {
        return Err(CliError::store(format!(
            "conflict: `{storage_key}` changed after it was read; nothing written (run `get` again)"
        )));
    }
    target.save()?;
    let revision = match store.read(&storage_key).await {
        Ok(Some(record)) => format!(" (revision {})", record.revision),
        _ => String::new(),
    };
    eprintln!("set `{storage_key}`{revision}");
    Ok(())
}

pub async fn delete(
    target: &Target,
    ns: &Namespace,
    key: &str,
    revision: Option<u64>,
) -> Result<(), CliError> {
    let (record, _) = crate::inspect::read(target, ns, key).await?;
    let storage_key = ns.key(key);
    if let Some(revision) = revision.filter(|r| *r != record.revision) {
        return Err(CliError::store(format!(
            "conflict: `{storage_key}` is at revision {}, not {revision}; nothing deleted",
            record.revision
        )));
    }
    let write = Write::Delete {
        key: storage_key.clone(),
        expect: revision.map_or(Expect::Any, Expect::Revision),
    };
    if !apply_one(target.dyn_store(), write).await? {
        return Err(CliError::store(format!(
            "conflict: `{storage_key}` changed after it was read; nothing deleted"
        )));
    }
    target.save()?;
    eprintln!("deleted `{storage_key}` (was revision {})", record.revision);
    Ok(())
}

pub async fn clear(
    target: &Target,
    ns: &Namespace,
    yes: bool,
    dry_run: bool,
) -> Result<(), CliError> {
    let store = target.dyn_store();
    let mut keys = Vec::new();
    for_each_key(store, &ns.prefix, None, |key, _| {
        keys.push(key);
        true
    })
    .await?;
    if keys.is_empty() {
        return Err(ns.unknown(target).await);
    }
    let what = format!(
        "{} values of fragment `{}` (keys `{}*`) from `{}`",
        keys.len(),
        ns.fragment,
        ns.prefix,
        target.url
    );
    if dry_run {
        println!("would delete {what}");
        return Ok(());
    }
    if !yes {
        if !std::io::stdin().is_terminal() {
            return Err(CliError::usage(format!(
                "refusing to delete {what} without --yes: standard input is not a terminal"
            )));
        }
        eprint!("delete {what}? [y/N] ");
        std::io::stderr().flush().ok();
        let mut answer = String::new();
        std::io::stdin()
            .read_line(&mut answer)
            .map_err(|e| CliError::store(format!("reading the answer: {e}")))?;
        if !matches!(answer.trim(), "y" | "Y" | "yes") {
            return Err(CliError::store("nothing deleted"));
        }
    }
    let progress = Progress::counter(Some(keys.len() as u64), "deleting");
    let mut deleted = 0u64;
    for chunk in keys.chunks(crate::inspect::BATCH) {
        let writes: Vec<Write> = chunk
            .iter()
            .map(|key| Write::Delete {
                key: key.clone(),
                expect: Expect::Any,
            })
            .collect();
        for (write, result) in writes.iter().zip(store.apply(&writes).await) {
            match result {
                Ok(_) => deleted += 1,
                Err(e) => {
                    target.save()?;
                    return Err(CliError::store(format!(
                        "deleting `{}` on {}: {e}; {deleted} values deleted before it \
                         (run `clear` again to go on)",
                        write.key(),
                        store.name()
                    )));
                }
            }
        }
        progress.inc(chunk.len() as u64);
    }
    progress.finish();
    target.save()?;
    eprintln!("deleted {deleted} values of fragment `{}`", ns.fragment);
    Ok(())
}
