//! PostgreSQL change notifications for a cache in front of the store: a trigger on the
//! sessions table announces every changed key (`pg_notify`), and a listener connection
//! passes other sessions' changes to the cache's [`Invalidator`].

use std::{
    collections::HashSet,
    sync::{Arc, Mutex},
    time::Duration,
};

use tokio_postgres::{AsyncMessage, NoTls};

use crate::stores::Invalidator;

/// What the trigger and the listener need to agree on.
#[derive(Clone, Debug)]
pub(crate) struct Channel {
    /// The `LISTEN` channel: `ms_changes_` and 16 hex digits of the table's SHA-256.
    pub(crate) name: String,
    /// The trigger function, qualified like the table.
    pub(crate) function: String,
    /// The trigger (unqualified: triggers belong to their table).
    pub(crate) trigger: String,
}

impl Channel {
    /// The channel of the table `table` (quoted, maybe schema-qualified) whose function
    /// is `function` (quoted and qualified the same way) and trigger `trigger`.
    pub(crate) fn new(table: &str, function: String, trigger: String) -> Self {
        use sha2::{Digest, Sha256};
        let digest = Sha256::digest(table.as_bytes());
        let hex: String = digest[..8].iter().map(|b| format!("{b:02x}")).collect();
        Channel {
            name: format!("ms_changes_{hex}"),
            function,
            trigger,
        }
    }

    /// The DDL creating (or replacing) the function and the trigger on `table`, in one
    /// transaction serialised with other creators by an advisory lock.
    pub(crate) fn ddl(&self, table: &str, lock_class: i32) -> String {
        let Channel {
            name,
            function,
            trigger,
        } = self;
        // `table` is a checked, quoted identifier: no single quote can occur in it.
        format!(
            "BEGIN;
             SELECT pg_advisory_xact_lock({lock_class}, hashtext('{table}'));
             CREATE OR REPLACE FUNCTION {function}() RETURNS trigger LANGUAGE plpgsql AS $ms$
             BEGIN
               PERFORM pg_notify('{name}', encode(CASE WHEN TG_OP = 'DELETE' THEN OLD.key ELSE NEW.key END, 'hex'));
               RETURN NULL;
             END $ms$;
             CREATE OR REPLACE TRIGGER {trigger} AFTER INSERT OR UPDATE OR DELETE ON {table}
               FOR EACH ROW EXECUTE FUNCTION {function}();
             COMMIT;"
        )
    }
}

/// The backend process ids of this store's own pooled connections: their changes are
/// already in the cache (it learnt them from the writes), so their notifications are not
/// passed on.
pub(crate) type OwnSessions = Arc<Mutex<HashSet<i32>>>;

/// Listens on `channel` and invalidates `target` for every key another session changed,
/// reconnecting (and emptying the cache) whenever the listening connection is lost, until
/// the cache is gone. `ready` is told once the first `LISTEN` is in place.
pub(crate) async fn listen(
    config: tokio_postgres::Config,
    channel: String,
    own: OwnSessions,
    target: Invalidator,
    ready: tokio::sync::oneshot::Sender<Result<(), String>>,
    long_mark: &'static str,
) {
    let mut ready = Some(ready);
    let mut backoff = Duration::from_millis(100);
    while target.is_live() {
        let (client, mut connection) = match config.connect(NoTls).await {
            Ok(pair) => pair,
            Err(error) => {
                if let Some(ready) = ready.take() {
                    let _ = ready.send(Err(format!("postgres listen connection: {error}")));
                    return;
                }
                tokio::time::sleep(backoff).await;
                backoff = (backoff * 2).min(Duration::from_secs(5));
                continue;
            }
        };
        let (sender, mut notices) = tokio::sync::mpsc::unbounded_channel();
        // Drives the connection; notifications go to the loop below, the end of the
        // connection closes the channel.
        tokio::spawn(async move {
            while let Some(message) = std::future::poll_fn(|cx| connection.poll_message(cx)).await {
                match message {
                    Ok(AsyncMessage::Notification(n)) => {
                        if sender
                            .send((n.process_id(), n.payload().to_owned()))
                            .is_err()
                        {
                            return;
                        }
                    }
                    Ok(_) => {}
                    Err(_) => return,
                }
            }
        });
        if let Err(error) = client.batch_execute(&format!("LISTEN {channel}")).await {
            if let Some(ready) = ready.take() {
                let _ = ready.send(Err(format!("postgres LISTEN: {error}")));
                return;
            }
            tokio::time::sleep(backoff).await;
            continue;
        }
        backoff = Duration::from_millis(100);
        // Whatever was cached before this connection listened may be stale.
        target.invalidate_all();
        if let Some(ready) = ready.take() {
            let _ = ready.send(Ok(()));
        }
        loop {
            // Wakes up now and then to notice a cache that is gone.
            let notice = match tokio::time::timeout(Duration::from_secs(5), notices.recv()).await {
                Ok(Some(notice)) => notice,
                Ok(None) => break,
                Err(_) if target.is_live() => continue,
                Err(_) => return,
            };
            let (process, payload) = notice;
            if own.lock().is_ok_and(|own| own.contains(&process)) {
                continue;
            }
            match decode_hex(&payload).and_then(|key| String::from_utf8(key).ok()) {
                // A long key is stored under a hashed form the cache does not know.
                Some(key) if !key.contains(long_mark) => target.invalidate(&key),
                _ => target.invalidate_all(),
            }
        }
        // The connection ended: changes may have been missed.
        target.invalidate_all();
        drop(client);
    }
}

fn decode_hex(text: &str) -> Option<Vec<u8>> {
    if !text.len().is_multiple_of(2) {
        return None;
    }
    (0..text.len())
        .step_by(2)
        .map(|i| u8::from_str_radix(text.get(i..i + 2)?, 16).ok())
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn hex_payloads_decode() {
        assert_eq!(decode_hex("636f756e743a31"), Some(b"count:1".to_vec()));
        assert_eq!(decode_hex(""), Some(Vec::new()));
        assert_eq!(decode_hex("6"), None);
        assert_eq!(decode_hex("zz"), None);
    }

    #[test]
    fn channels_are_identifiers_of_bounded_length() {
        let channel = Channel::new("\"public\".\"t\"", "f".into(), "t".into());
        assert!(channel.name.starts_with("ms_changes_"));
        assert_eq!(channel.name.len(), "ms_changes_".len() + 16);
        assert!(
            channel
                .name
                .chars()
                .all(|c| c.is_ascii_alphanumeric() || c == '_')
        );
    }
}
