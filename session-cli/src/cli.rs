//! The command line: what each subcommand takes, with an example in every `--help`.

use std::path::PathBuf;

use clap::{Args, Parser, Subcommand};

/// Inspect, edit, export and import the sessions a multisession bot stored.
#[derive(Debug, Parser)]
#[command(
    name = "multisession",
    version,
    after_help = "\
Stores:
  sqlite://bot.db              a SQLite file (sqlite:///abs/path/bot.db for an absolute path)
  redis://127.0.0.1:6379/0     a Redis server (with --redis-prefix if the bot set one)
  redis+cluster://h:7000,h:7001  a Redis Cluster (the bot's RedisStore::connect_cluster,
                               default 256 buckets), through any of its nodes
  postgres://user@host/db      a PostgreSQL database (with --table if the bot set one)
  memory:sessions.snapshot     a memory store's snapshot file (stop the bot first)

Examples:
  multisession --store sqlite://bot.db list pizza
  multisession --store sqlite://bot.db get settings 1001
  multisession --store sqlite://bot.db export > dump.jsonl
  multisession --store postgres://postgres@127.0.0.1/bot import < dump.jsonl"
)]
pub struct Cli {
    #[command(flatten)]
    pub store: StoreArgs,

    #[command(subcommand)]
    pub command: Command,
}

/// Which store, and the options the bot opened it with.
#[derive(Debug, Args)]
pub struct StoreArgs {
    /// The store: sqlite://PATH, redis://HOST[:PORT][/DB], postgres://USER@HOST/DB (or
    /// postgresql://), memory:PATH (a memory-store snapshot file).
    #[arg(long, env = "MULTISESSION_STORE", global = true, value_name = "URL")]
    pub store: Option<String>,

    /// Redis: the key prefix the bot's `RedisConfig::key_prefix` set.
    #[arg(long, global = true, value_name = "P")]
    pub redis_prefix: Option<String>,

    /// SQLite and PostgreSQL: the table the bot's config named.
    #[arg(long, global = true, value_name = "T")]
    pub table: Option<String>,

    /// The bot namespace (`Config::bot`): keys under "{ID}/" before the fragment's prefix.
    #[arg(long, global = true, value_name = "ID", allow_negative_numbers = true)]
    pub bot: Option<i64>,

    /// Seconds to wait for a server connection before giving up.
    #[arg(long, global = true, value_name = "SECS", default_value_t = 5)]
    pub connect_timeout: u64,
}

/// A fragment: where its keys live.
#[derive(Debug, Clone, Args)]
pub struct FragmentArgs {
    /// The fragment: the field name of the session struct (its keys live under "NAME:").
    pub fragment: String,

    /// The fragment's key prefix, if `#[session(prefix = ..)]` changed it.
    #[arg(long, value_name = "P")]
    pub prefix: Option<String>,
}

#[derive(Debug, Subcommand)]
pub enum Command {
    /// List the session keys of a fragment, one a line.
    #[command(after_help = "\
Examples:
  multisession --store sqlite://bot.db list pizza
  multisession --store sqlite://bot.db list quiz --limit 20 --long
  multisession --store redis://127.0.0.1 --redis-prefix pizza-bot: --bot 1001 list settings")]
    List {
        #[command(flatten)]
        fragment: FragmentArgs,
        /// Stop after N keys.
        #[arg(long, value_name = "N")]
        limit: Option<usize>,
        /// Also show each value's revision, migration version, size and recorded updates.
        #[arg(long, short)]
        long: bool,
    },

    /// Count the sessions of a fragment.
    #[command(after_help = "\
Example:
  multisession --store postgres://postgres@127.0.0.1/bot count quiz")]
    Count {
        #[command(flatten)]
        fragment: FragmentArgs,
    },

    /// Show one session value: decoded, with its version, revision, expiry and the updates
    /// that last changed it.
    #[command(after_help = "\
Examples:
  multisession --store sqlite://bot.db get pizza -100123
  multisession --store sqlite://bot.db get quiz -100123:42 --json | jq .value")]
    Get {
        #[command(flatten)]
        fragment: FragmentArgs,
        /// The session key (a chat id, a user id, \"chat:user\", ...).
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// Print one JSON object (value, version, revision, ttl_ms, updates) instead.
        #[arg(long)]
        json: bool,
    },

    /// Replace a session value with JSON, compare-and-set on its revision.
    ///
    /// The recorded update ids and the migration version header are kept; the remaining
    /// TTL too, unless --ttl or --no-ttl says otherwise.
    #[command(after_help = "\
Examples:
  multisession --store sqlite://bot.db set pizza -100123 '{\"count\": 3}'
  multisession --store sqlite://bot.db set pizza -100123 '{\"count\": 3}' --revision 17
  echo '{\"lang\": \"de\"}' | multisession --store sqlite://bot.db set settings 42 -")]
    Set {
        #[command(flatten)]
        fragment: FragmentArgs,
        /// The session key.
        #[arg(allow_hyphen_values = true)]
        key: String,
        #[command(flatten)]
        args: SetArgs,
    },

    /// Delete one session value.
    #[command(after_help = "\
Example:
  multisession --store sqlite://bot.db delete settings 42")]
    Delete {
        #[command(flatten)]
        fragment: FragmentArgs,
        /// The session key.
        #[arg(allow_hyphen_values = true)]
        key: String,
        /// Delete only if the value is still at this revision.
        #[arg(long, value_name = "R")]
        revision: Option<u64>,
    },

    /// Delete every session value of a fragment.
    #[command(after_help = "\
Examples:
  multisession --store sqlite://bot.db clear quiz            # asks first
  multisession --store sqlite://bot.db clear quiz --dry-run  # says how many
  multisession --store sqlite://bot.db clear quiz --yes      # in a script")]
    Clear {
        #[command(flatten)]
        fragment: FragmentArgs,
        /// Do not ask; needed when standard input is not a terminal.
        #[arg(long, short)]
        yes: bool,
        /// Count what would be deleted, delete nothing.
        #[arg(long)]
        dry_run: bool,
    },

    /// Remove expired values now (SQL stores and memory snapshots; Redis expires by itself).
    #[command(after_help = "\
Example:
  multisession --store sqlite://bot.db sweep")]
    Sweep,

    /// Write sessions to standard output as JSON lines: exact stored bytes (base64) and
    /// expiry. Without a fragment, every key of the store.
    #[command(after_help = "\
Examples:
  multisession --store sqlite://bot.db export > dump.jsonl
  multisession --store sqlite://bot.db export pizza settings > some.jsonl
  multisession --store sqlite://bot.db export | multisession --store redis://127.0.0.1 import")]
    Export {
        /// The fragments to export (default: everything).
        fragments: Vec<String>,
        /// Also export every key under this raw key prefix (after --bot's namespace).
        #[arg(long, value_name = "P")]
        prefix: Vec<String>,
    },

    /// Read an export from standard input (or FILE) into this store. Writes a value only
    /// where none is stored (or the same one is): run it again to resume or check.
    #[command(after_help = "\
Examples:
  multisession --store postgres://postgres@127.0.0.1/bot import < dump.jsonl
  multisession --store redis://127.0.0.1 import dump.jsonl --dry-run
  multisession --store sqlite://bot.db import dump.jsonl --overwrite

Exit status: 0 when every entry is in the store, 3 when some differ from what is stored
(reported, not overwritten without --overwrite), 1 on an error.")]
    Import {
        /// The dump (default: standard input).
        file: Option<PathBuf>,
        /// Replace values that differ from the dump's (compare-and-set on what was read).
        #[arg(long)]
        overwrite: bool,
        /// Read and compare, write nothing.
        #[arg(long)]
        dry_run: bool,
    },
}

/// What `set` writes, and on what condition.
#[derive(Debug, Args)]
pub struct SetArgs {
    /// The new value as JSON (`-`: read it from standard input).
    #[arg(allow_hyphen_values = true)]
    pub json: String,
    /// Write only if the value is still at this revision (as `get` showed it).
    #[arg(long, value_name = "R", conflicts_with = "force")]
    pub revision: Option<u64>,
    /// Write whatever is stored now: no compare-and-set, and also over a value that is
    /// not JSON, or into a fragment with nothing stored.
    #[arg(long)]
    pub force: bool,
    /// The migration version to record (default: the stored value's).
    #[arg(long, value_name = "N")]
    pub version: Option<u32>,
    /// Expire the value after this long ("30m", "1h30m", "7d").
    #[arg(long, value_name = "DURATION", value_parser = parse_duration, conflicts_with = "no_ttl")]
    pub ttl: Option<std::time::Duration>,
    /// Never expire the value.
    #[arg(long)]
    pub no_ttl: bool,
}

/// A duration like the derive's `ttl`: "500ms", "90s", "30m", "1h30m", "7d".
pub fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let mut millis: u64 = 0;
    let mut number = String::new();
    let mut chars = text.trim().chars().peekable();
    if chars.peek().is_none() {
        return Err("an empty duration".into());
    }
    while let Some(c) = chars.next() {
        if c.is_ascii_digit() {
            number.push(c);
            continue;
        }
        let mut unit = c.to_string();
        while let Some(&next) = chars.peek().filter(|c| c.is_ascii_alphabetic()) {
            unit.push(next);
            chars.next();
        }
        let scale = match unit.as_str() {
            "ms" => 1,
            "s" => 1_000,
            "m" => 60_000,
            "h" => 3_600_000,
            "d" => 86_400_000,
            _ => {
                return Err(format!(
                    "unknown unit `{unit}` in {text:?}: use ms, s, m, h or d"
                ));
            }
        };
        let n: u64 = number
            .parse()
            .map_err(|_| format!("a number must come before `{unit}` in {text:?}"))?;
        number.clear();
        millis = n
            .checked_mul(scale)
            .and_then(|ms| millis.checked_add(ms))
            .ok_or_else(|| format!("{text:?} is too long"))?;
    }
    if !number.is_empty() {
        return Err(format!(
            "`{number}` needs a unit in {text:?}: ms, s, m, h or d"
        ));
    }
    Ok(std::time::Duration::from_millis(millis))
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn durations() {
        assert_eq!(parse_duration("90s"), Ok(Duration::from_secs(90)));
        assert_eq!(parse_duration("1h30m"), Ok(Duration::from_secs(5400)));
        assert_eq!(parse_duration("250ms"), Ok(Duration::from_millis(250)));
        assert!(parse_duration("30").unwrap_err().contains("needs a unit"));
        assert!(parse_duration("2w").unwrap_err().contains("unknown unit"));
        assert!(parse_duration("").is_err());
    }

    #[test]
    fn every_subcommand_has_an_example() {
        use clap::CommandFactory;
        let cli = Cli::command();
        cli.clone().debug_assert();
        for sub in cli.get_subcommands() {
            let help = sub
                .get_after_help()
                .map(|h| h.to_string())
                .unwrap_or_default();
            assert!(
                help.contains("multisession --store"),
                "`{}` has no example",
                sub.get_name()
            );
        }
    }
}
