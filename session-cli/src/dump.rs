//! `export` and `import`: sessions as JSON lines, between any two stores.
//!
//! The first line is a header, `{"multisession_dump":1,"exported_at_ms":..,"store":".."}`;
//! then one line per value: `{"key":"pizza:42","value":"<base64>","expires_at_ms":..}`,
//! with the full storage key, the exact stored bytes (recorded updates and migration
//! version included) and the moment it expires (unix milliseconds; absent: never).
//! Import writes each value only where no value is stored (compare-and-set on absence),
//! skips values stored identically, and reports the ones that differ: so running it again
//! resumes an interrupted import and changes nothing that is already there.

use std::{
    collections::HashSet,
    io::{BufRead, BufReader, Write as _},
    path::Path,
    time::{Duration, SystemTime, UNIX_EPOCH},
};

use base64::{Engine, engine::general_purpose::STANDARD};
use futures_util::{StreamExt, stream};
use multisession::store::{Expect, Outcome, Record, Store, Write};
use serde::{Deserialize, Serialize};

use crate::{
    error::CliError,
    inspect::{BATCH, Namespace, PAGE, bot_namespace, list_failed},
    progress::Progress,
    target::Target,
};

/// The dump format this command writes and reads.
const FORMAT: u32 = 1;

/// Values read at once while exporting (each read is one round trip).
const READ_AHEAD: usize = 32;

/// How many differing values an import names before it only counts them.
const REPORTED: u64 = 20;

#[derive(Serialize)]
struct Header<'a> {
    multisession_dump: u32,
    exported_at_ms: u64,
    store: &'a str,
}

#[derive(Serialize)]
struct Entry<'a> {
    key: &'a str,
    value: String,
    #[serde(skip_serializing_if = "Option::is_none")]
    expires_at_ms: Option<u64>,
}

/// Any line of a dump.
#[derive(Deserialize)]
struct Line {
    multisession_dump: Option<u32>,
    key: Option<String>,
    value: Option<String>,
    expires_at_ms: Option<u64>,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map_or(0, |d| u64::try_from(d.as_millis()).unwrap_or(u64::MAX))
}

/// The key prefixes to export: the fragments', the raw ones, or everything; none that
/// another one covers (so no key is exported twice).
fn export_prefixes(bot: Option<i64>, fragments: &[String], raw: &[String]) -> Vec<String> {
    let bot = bot_namespace(bot);
    let mut prefixes: Vec<String> = fragments
        .iter()
        .map(|f| format!("{bot}{f}:"))
        .chain(raw.iter().map(|p| format!("{bot}{p}")))
        .collect();
    if prefixes.is_empty() {
        prefixes.push(bot);
    }
    prefixes.sort();
    prefixes.dedup();
    let all = prefixes.clone();
    prefixes.retain(|p| !all.iter().any(|q| q != p && p.starts_with(q.as_str())));
    prefixes
}

pub async fn export(
    target: &Target,
    bot: Option<i64>,
    fragments: &[String],
    raw: &[String],
) -> Result<(), CliError> {
    let store = target.dyn_store();
    for fragment in fragments {
        let ns = Namespace::new(
            &crate::cli::FragmentArgs {
                fragment: fragment.clone(),
                prefix: None,
            },
            bot,
        );
        if ns.is_empty(store).await? {
            return Err(ns.unknown(target).await);
        }
    }
    let write_failed = |e: std::io::Error| CliError::store(format!("writing the dump: {e}"));
    let mut out = std::io::BufWriter::new(std::io::stdout().lock());
    let header = Header {
        multisession_dump: FORMAT,
        exported_at_ms: now_ms(),
        store: store.name(),
    };
    serde_json::to_writer(&mut out, &header).map_err(|e| CliError::store(e.to_string()))?;
    writeln!(out).map_err(write_failed)?;
    let progress = Progress::counter(None, "exporting");
    let (mut exported, mut with_ttl, mut vanished) = (0u64, 0u64, 0u64);
    for prefix in export_prefixes(bot, fragments, raw) {
        let mut cursor: Option<String> = None;
        loop {
            let page = store
                .list(&prefix, cursor.as_deref(), PAGE)
                .await
                .map_err(|e| list_failed(store, &prefix, e))?;
            // Each value again with its TTL: the value and its expiry from one read.
            let reads: Vec<_> =
                stream::iter(page.entries.iter().map(|(key, _)| store.read_with_ttl(key)))
                    .buffered(READ_AHEAD)
                    .collect()
                    .await;
            for ((key, _), read) in page.entries.iter().zip(reads) {
                let (record, ttl) = match read {
                    Ok(Some(found)) => found,
                    // Deleted or expired since it was listed.
                    Ok(None) => {
                        vanished += 1;
                        continue;
                    }
                    Err(e) => {
                        out.flush().ok();
                        return Err(CliError::store(format!(
                            "could not read `{key}` on {}: {e}; the dump is incomplete \
                             ({exported} values written to it)",
                            store.name()
                        )));
                    }
                };
                let expires_at_ms = ttl.map(|ttl| {
                    with_ttl += 1;
                    now_ms().saturating_add(u64::try_from(ttl.as_millis()).unwrap_or(u64::MAX))
                });
                let entry = Entry {
                    key,
                    value: STANDARD.encode(&record.value),
                    expires_at_ms,
                };
                serde_json::to_writer(&mut out, &entry)
                    .map_err(|e| CliError::store(e.to_string()))?;
                writeln!(out).map_err(write_failed)?;
                exported += 1;
            }
            progress.inc(page.entries.len() as u64);
            match page.cursor {
                Some(next) => cursor = Some(next),
                None => break,
            }
        }
    }
    out.flush().map_err(write_failed)?;
    progress.finish();
    let gone = if vanished > 0 {
        format!("; {vanished} deleted or expired while exporting")
    } else {
        String::new()
    };
    eprintln!(
        "exported {exported} values ({with_ttl} with a TTL) from `{}`{gone}",
        target.url
    );
    Ok(())
}

/// One entry of the dump, parsed.
#[derive(Debug)]
struct Pending {
    line: u64,
    key: String,
    value: Vec<u8>,
    expires_at_ms: Option<u64>,
}

#[derive(Default)]
struct Counts {
    entries: u64,
    written: u64,
    identical: u64,
    differ: u64,
    expired: u64,
}

/// What to do with one entry, given what the target holds.
enum Plan {
    Write(Expect),
    Same,
    Differs(u64),
}

fn plan(value: &[u8], current: Option<&Record>, overwrite: bool) -> Plan {
    match current {
        None => Plan::Write(Expect::Absent),
        Some(record) if record.value == value => Plan::Same,
        Some(record) if overwrite => Plan::Write(Expect::Revision(record.revision)),
        Some(record) => Plan::Differs(record.revision),
    }
}

struct Importer<'a> {
    store: &'a dyn Store,
    overwrite: bool,
    dry_run: bool,
    counts: Counts,
    progress: Progress,
}

impl Importer<'_> {
    fn put(pending: &Pending, now: u64, expect: Expect) -> Write {
        Write::Put {
            key: pending.key.clone(),
            value: pending.value.clone(),
            ttl: pending
                .expires_at_ms
                .map(|at| Duration::from_millis(at.saturating_sub(now).max(1))),
            expect,
        }
    }

    fn differs(&mut self, pending: &Pending, revision: u64) {
        self.counts.differ += 1;
        if self.counts.differ <= REPORTED {
            self.progress.println(&format!(
                "differs: `{}` (line {}): the store holds another value (revision {revision}); \
                 not overwritten",
                pending.key, pending.line
            ));
        } else if self.counts.differ == REPORTED + 1 {
            self.progress
                .println("(more values differ: only counted from here on)");
        }
    }

    fn failed(&self, batch: &[Pending], what: String) -> CliError {
        let lines = match (batch.first(), batch.last()) {
            (Some(first), Some(last)) => format!("lines {}-{}", first.line, last.line),
            _ => "the end".to_owned(),
        };
        CliError::store(format!(
            "import stopped at {lines}: {what}; {} values written before them. Run the same \
             import again to resume: values already imported are recognised and skipped",
            self.counts.written
        ))
    }

    /// Imports a batch: one batch read, then one batched conditional write of what is
    /// missing (a batch applies all or nothing on the stores that ship); what a concurrent
    /// writer got to first is then done one by one.
    async fn batch(&mut self, batch: &[Pending]) -> Result<(), CliError> {
        let now = now_ms();
        let live: Vec<&Pending> = batch
            .iter()
            .filter(|p| p.expires_at_ms.is_none_or(|at| at > now))
            .collect();
        self.counts.expired += (batch.len() - live.len()) as u64;
        let keys: Vec<&str> = live.iter().map(|p| p.key.as_str()).collect();
        let current =
            self.store.read_many(&keys).await.map_err(|e| {
                self.failed(batch, format!("reading from {}: {e}", self.store.name()))
            })?;
        let mut writes = Vec::new();
        let mut planned = Vec::new();
        for (pending, current) in live.into_iter().zip(current) {
            match plan(&pending.value, current.as_ref(), self.overwrite) {
                Plan::Write(expect) => {
                    writes.push(Self::put(pending, now, expect));
                    planned.push(pending);
                }
                Plan::Same => self.counts.identical += 1,
                Plan::Differs(revision) => self.differs(pending, revision),
            }
        }
        if self.dry_run || writes.is_empty() {
            self.counts.written += if self.dry_run { writes.len() as u64 } else { 0 };
            return Ok(());
        }
        let results = self.store.apply(&writes).await;
        let mut again = Vec::new();
        for (pending, result) in planned.into_iter().zip(results) {
            match result {
                Ok(Outcome::Applied) => self.counts.written += 1,
                Ok(Outcome::Conflict) => again.push(pending),
                Err(e) => {
                    let unknown = if e.outcome_unknown() {
                        " (outcome unknown: some of the batch may have landed)"
                    } else {
                        ""
                    };
                    return Err(self.failed(
                        batch,
                        format!("writing to {}: {e}{unknown}", self.store.name()),
                    ));
                }
            }
        }
        for pending in again {
            self.one(pending, batch).await?;
        }
        Ok(())
    }

    /// One entry on its own, re-read until its conditional write goes through.
    async fn one(&mut self, pending: &Pending, batch: &[Pending]) -> Result<(), CliError> {
        for _ in 0..5 {
            let name = self.store.name();
            let current = self
                .store
                .read(&pending.key)
                .await
                .map_err(|e| self.failed(batch, format!("reading from {name}: {e}")))?;
            let expect = match plan(&pending.value, current.as_ref(), self.overwrite) {
                Plan::Write(expect) => expect,
                Plan::Same => {
                    self.counts.identical += 1;
                    return Ok(());
                }
                Plan::Differs(revision) => {
                    self.differs(pending, revision);
                    return Ok(());
                }
            };
            let write = Self::put(pending, now_ms(), expect);
            match self.store.apply(std::slice::from_ref(&write)).await.pop() {
                Some(Ok(Outcome::Applied)) => {
                    self.counts.written += 1;
                    return Ok(());
                }
                Some(Ok(Outcome::Conflict)) => continue,
                Some(Err(e)) => return Err(self.failed(batch, format!("writing to {name}: {e}"))),
                None => return Err(self.failed(batch, format!("{name} answered nothing"))),
            }
        }
        Err(self.failed(
            batch,
            format!("`{}` kept changing while it was imported", pending.key),
        ))
    }
}

fn parse_line(bytes: &[u8], line: u64) -> Result<Option<Pending>, String> {
    let parsed: Line = serde_json::from_slice(bytes).map_err(|e| format!("not JSON: {e}"))?;
    if let Some(format) = parsed.multisession_dump {
        if format > FORMAT {
            return Err(format!(
                "dump format {format} is newer than this command knows ({FORMAT})"
            ));
        }
        return Ok(None);
    }
    let key = parsed.key.filter(|k| !k.is_empty()).ok_or("no `key`")?;
    let value = parsed.value.ok_or("no `value`")?;
    let value = STANDARD
        .decode(value.as_bytes())
        .map_err(|e| format!("`value` is not base64: {e}"))?;
    Ok(Some(Pending {
        line,
        key,
        value,
        expires_at_ms: parsed.expires_at_ms,
    }))
}

pub async fn import(
    target: &Target,
    file: Option<&Path>,
    overwrite: bool,
    dry_run: bool,
) -> Result<(), CliError> {
    let (input, size): (Box<dyn BufRead>, Option<u64>) = match file {
        Some(path) => {
            let file = std::fs::File::open(path)
                .map_err(|e| CliError::store(format!("cannot open {}: {e}", path.display())))?;
            let size = file.metadata().ok().map(|m| m.len());
            (Box::new(BufReader::with_capacity(1 << 16, file)), size)
        }
        None => {
            // Redirected from a file: its size gives the bar a length.
            let size = std::fs::metadata("/dev/stdin")
                .ok()
                .filter(|m| m.is_file())
                .map(|m| m.len());
            (
                Box::new(BufReader::with_capacity(1 << 16, std::io::stdin())),
                size,
            )
        }
    };
    let mut importer = Importer {
        store: target.dyn_store(),
        overwrite,
        dry_run,
        counts: Counts::default(),
        progress: Progress::bytes(size, if dry_run { "checking" } else { "importing" }),
    };
    let result = import_lines(&mut importer, input).await;
    importer.progress.finish();
    if !dry_run {
        target.save()?;
    }
    result?;
    let c = &importer.counts;
    let written = if dry_run {
        "would be written"
    } else {
        "written"
    };
    let summary = format!(
        "{}{} entries for `{}`: {} {written}, {} already there (identical), {} differ{}, \
         {} expired (skipped)",
        if dry_run { "dry run: " } else { "imported " },
        c.entries,
        target.url,
        c.written,
        c.identical,
        c.differ,
        if c.differ > 0 && !overwrite {
            " (not overwritten: --overwrite replaces them)"
        } else {
            ""
        },
        c.expired,
    );
    eprintln!("{summary}");
    if c.differ > 0 && !overwrite {
        return Err(CliError::partial(format!(
            "{} values differ from the dump and were left as they are",
            c.differ
        )));
    }
    Ok(())
}

async fn import_lines(
    importer: &mut Importer<'_>,
    mut input: Box<dyn BufRead>,
) -> Result<(), CliError> {
    let mut batch: Vec<Pending> = Vec::with_capacity(BATCH);
    let mut keys: HashSet<String> = HashSet::new();
    let mut buffer = Vec::new();
    let (mut line, mut consumed) = (0u64, 0u64);
    loop {
        buffer.clear();
        let read = input.read_until(b'\n', &mut buffer);
        let n = match read {
            Ok(n) => n,
            Err(e) => {
                importer.batch(&batch).await?;
                return Err(importer.failed(&[], format!("reading line {}: {e}", line + 1)));
            }
        };
        if n == 0 {
            break;
        }
        line += 1;
        consumed += n as u64;
        if buffer.iter().all(u8::is_ascii_whitespace) {
            continue;
        }
        match parse_line(&buffer, line) {
            Ok(None) => {}
            Ok(Some(pending)) => {
                importer.counts.entries += 1;
                // A key twice in one batch: the first goes in first.
                if keys.contains(&pending.key) || batch.len() == BATCH {
                    importer.batch(&batch).await?;
                    batch.clear();
                    keys.clear();
                }
                keys.insert(pending.key.clone());
                batch.push(pending);
            }
            Err(why) => {
                // What came before the bad line goes in; the error names the line.
                importer.batch(&batch).await?;
                let written = importer.counts.written;
                return Err(CliError::store(format!(
                    "line {line} is not a dump entry ({why}); the {} entries before it were \
                     imported ({written} written). Fix or remove the line and run the same \
                     import again: what is already imported is skipped",
                    importer.counts.entries
                )));
            }
        }
        importer.progress.set(consumed);
    }
    importer.batch(&batch).await?;
    importer.progress.set(consumed);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn prefixes_cover_each_key_once() {
        assert_eq!(export_prefixes(None, &[], &[]), [""]);
        assert_eq!(export_prefixes(Some(7), &[], &[]), ["7/"]);
        assert_eq!(
            export_prefixes(None, &["quiz".into(), "pizza".into(), "quiz".into()], &[]),
            ["pizza:", "quiz:"]
        );
        assert_eq!(
            export_prefixes(
                Some(1),
                &["pizza".into()],
                &["pizza:-100".into(), "legacy-".into()]
            ),
            ["1/legacy-", "1/pizza:"]
        );
    }

    #[test]
    fn lines_parse_or_say_why() {
        assert!(
            parse_line(br#"{"multisession_dump":1,"store":"sqlite"}"#, 1)
                .unwrap()
                .is_none()
        );
        assert!(
            parse_line(br#"{"multisession_dump":2}"#, 1)
                .unwrap_err()
                .contains("newer")
        );
        let entry = parse_line(
            br#"{"key":"pizza:1","value":"AE1TdQ==","expires_at_ms":5}"#,
            3,
        )
        .unwrap()
        .unwrap();
        assert_eq!(
            (entry.key.as_str(), entry.value.as_slice()),
            ("pizza:1", &b"\0MSu"[..])
        );
        assert_eq!(entry.expires_at_ms, Some(5));
        assert!(
            parse_line(b"{\"key\":\"a\"}", 1)
                .unwrap_err()
                .contains("value")
        );
        assert!(
            parse_line(b"{\"key\":\"a\",\"value\":\"!!\"}", 1)
                .unwrap_err()
                .contains("base64")
        );
        assert!(parse_line(b"nonsense", 1).unwrap_err().contains("not JSON"));
    }
}
