//! The commit: what changed goes out, one batch per store, all stores at once, and the
//! outcome says exactly what landed (rules S12, S14, S25–S27).

use std::time::Duration;

use futures_util::future::join_all;

use crate::{
    cell::{ErasedCell, Plan},
    error::{Error, SaveError, SaveFailure, WriteOutcome},
    stats::Counters,
    store::{Outcome, StoreError, StoreRef, Write},
    update::UpdateRef,
};

/// How a commit attempt ended, when it did not succeed.
pub(crate) enum CommitError {
    /// The update can be re-run to complete it: a conflict, or writes that failed or timed
    /// out after others landed (exactly-once makes the re-run safe).
    Retry(Error),
    /// Re-running cannot help (or nothing was written and the store refused).
    Final(Error),
}

/// Writes what the cells of one update changed, one batch per store, all stores at once.
pub(crate) async fn commit_cells(
    cells: Vec<&dyn ErasedCell>,
    update: UpdateRef<'_>,
    attempt: u32,
) -> Result<(), CommitError> {
    let counters = &update.env.counters;
    let traced = tracing::enabled!(tracing::Level::DEBUG);
    let started = traced.then(std::time::Instant::now);
    // Without a subscriber that wants it, no span and no wrapper around the commit.
    let result = if traced {
        let span = tracing::debug_span!("multisession.commit", attempt);
        tracing::Instrument::instrument(commit_inner(cells, update, attempt), span).await
    } else {
        commit_inner(cells, update, attempt).await
    };
    match &result {
        Ok(()) => tracing::debug!(
            elapsed_us = started.map_or(0, |s| s.elapsed().as_micros() as u64),
            "session committed"
        ),
        Err(CommitError::Retry(error)) => {
            tracing::debug!(%error, "session commit incomplete")
        }
        Err(CommitError::Final(error)) => {
            Counters::add(&counters.errors, 1);
            tracing::warn!(%error, "session commit failed");
        }
    }
    result
}

/// The writes of a commit.
async fn commit_inner(
    cells: Vec<&dyn ErasedCell>,
    update: UpdateRef<'_>,
    attempt: u32,
) -> Result<(), CommitError> {
    let mut failures = Vec::new();
    type Planned<'a> = (StoreRef, Vec<(&'a dyn ErasedCell, Write)>);
    let mut groups: Vec<(usize, Planned<'_>)> = Vec::new();
    // Fragments this update changed before (an earlier run, an earlier delivery).
    let mut repeated = Vec::new();
    for cell in cells {
        match cell.plan() {
            Ok(Plan::Write(write)) => {
                let store = cell.store();
                let instance = store.as_dyn().instance();
                match groups.iter_mut().find(|(id, _)| *id == instance) {
                    Some((_, (_, planned))) => planned.push((cell, write)),
                    None => groups.push((instance, (store.clone(), vec![(cell, write)]))),
                }
            }
            Ok(Plan::Repeat) => repeated.push(cell.fragment()),
            Ok(Plan::Skip) => {}
            Err(failure) => failures.push(failure),
        }
    }
    if !failures.is_empty() {
        return Err(CommitError::Final(Error::Save {
            failures,
            written: repeated,
            update_id: update.update_id,
        }));
    }
    let batches = groups.into_iter().map(|(_, (store, planned))| async move {
        let writes: Vec<Write> = planned.iter().map(|(_, w)| w.clone()).collect();
        let results = match update
            .timed(async { Ok(store.as_dyn().apply(&writes).await) })
            .await
        {
            Ok(results) => results,
            Err(timeout) => writes.iter().map(|_| Err(timeout.replicate())).collect(),
        };
        (store, planned, results)
    });
    let mut written = repeated;
    let mut conflicts = Vec::new();
    for (store, planned, results) in join_all(batches).await {
        let mut results = results.into_iter();
        for (cell, write) in planned {
            let result = results.next().unwrap_or_else(|| {
                Err(StoreError::Corrupt(
                    "apply returned fewer results than writes".into(),
                ))
            });
            tracing::debug!(
                fragment = cell.fragment(),
                key = %update.env.config.shown_key(write.key()),
                store = store.as_dyn().name(),
                op = if matches!(write, Write::Put { .. }) { "put" } else { "delete" },
                outcome = match &result {
                    Ok(Outcome::Applied) => "applied",
                    Ok(Outcome::Conflict) => "conflict",
                    Err(e) if e.outcome_unknown() => "unknown",
                    Err(_) => "error",
                },
                "session fragment saved"
            );
            let failure = |error, outcome| SaveFailure {
                fragment: cell.fragment(),
                key: write.key().to_owned(),
                store: store.as_dyn().name().to_owned(),
                error,
                outcome,
            };
            match result {
                Ok(Outcome::Applied) => {
                    let counter = match &write {
                        Write::Put { .. } => &update.env.counters.writes,
                        Write::Delete { .. } => &update.env.counters.deletes,
                    };
                    Counters::add(counter, 1);
                    written.push(cell.fragment());
                }
                Ok(Outcome::Conflict) => {
                    Counters::add(&update.env.counters.conflicts, 1);
                    conflicts.push(failure(SaveError::Conflict, WriteOutcome::NotWritten));
                }
                Err(error) => {
                    let outcome = if error.outcome_unknown() {
                        WriteOutcome::Unknown
                    } else {
                        WriteOutcome::NotWritten
                    };
                    failures.push(failure(SaveError::Store(error), outcome));
                }
            }
        }
    }
    if !failures.is_empty() {
        // Re-running completes what landed in part or maybe; a store that refused a
        // commit of which nothing landed gets the caller's decision.
        let retry = !written.is_empty()
            || !conflicts.is_empty()
            || failures.iter().any(|f| f.outcome == WriteOutcome::Unknown);
        failures.extend(conflicts);
        let error = Error::Save {
            failures,
            written,
            update_id: update.update_id,
        };
        return Err(if retry {
            CommitError::Retry(error)
        } else {
            CommitError::Final(error)
        });
    }
    if let Some(conflict) = conflicts.into_iter().next() {
        return Err(CommitError::Retry(Error::Conflict {
            fragment: conflict.fragment,
            key: conflict.key,
            store: conflict.store,
            attempts: attempt,
            written,
            update_id: update.update_id,
        }));
    }
    Ok(())
}

/// A random wait before run `n + 1` after `n` incomplete commits ("full jitter"): up to
/// 1 ms, doubling to 64 ms, so processes racing on one key stop colliding.
pub(crate) fn backoff(n: u32) -> Duration {
    use std::hash::{BuildHasher, Hasher};
    let cap_us = 1000u64 << n.saturating_sub(1).min(6);
    let random = std::collections::hash_map::RandomState::new()
        .build_hasher()
        .finish();
    Duration::from_micros(random % cap_us)
}
