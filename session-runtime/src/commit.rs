//! The commit: what changed goes out, one batch per store, all stores at once, and the
//! outcome says exactly what landed (rules S12, S14, S25–S27).

use std::time::Duration;

use futures_util::future::join_all;

use crate::{
    cell::{BoundCells, ErasedCell, Plan},
    error::{Error, SaveError, SaveFailure, WriteOutcome},
    stats::{Counter, Counters},
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
    cells: &[&dyn ErasedCell],
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
        Err(error) => ended(error, counters),
    }
    result
}

/// Logs and counts a commit that did not succeed.
fn ended(error: &CommitError, counters: &Counters) {
    match error {
        CommitError::Retry(error) => {
            tracing::debug!(%error, "session commit incomplete")
        }
        CommitError::Final(error) => {
            counters.add(Counter::Errors, 1);
            tracing::warn!(%error, "session commit failed");
        }
    }
}

/// The commit without waiting, where that is all it takes: every write goes to one store
/// that answers at once (the memory store). No future, no timer, no copy of a write, and
/// nothing allocated for a single write that lands. `None`: commit with
/// [`commit_cells`] (a store that does I/O, several stores, or a subscriber that wants
/// the commit's span).
pub(crate) fn commit_now(
    cells: &dyn BoundCells,
    update: UpdateRef<'_>,
    attempt: u32,
) -> Option<Result<(), CommitError>> {
    if tracing::enabled!(tracing::Level::DEBUG) {
        return None;
    }
    let each = || (0..).map_while(|index| cells.cell(index));
    let mut touched = each().filter(|cell| cell.is_loaded());
    let store = touched.next()?.store();
    let instance = store.as_dyn().instance();
    if touched.any(|cell| cell.store().as_dyn().instance() != instance) {
        return None;
    }
    let now = store.as_dyn().immediate()?;
    // The writes: the first one inline, the others (rare: one update, several fragments
    // on one store) in a batch.
    let mut first: Option<(&dyn ErasedCell, Write)> = None;
    let mut batch = Batch {
        store,
        cells: Vec::new(),
        writes: Vec::new(),
    };
    let mut repeated = Vec::new();
    let mut failures = Vec::new();
    for cell in each() {
        match cell.plan() {
            Ok(Plan::Write(write)) => match &first {
                None => first = Some((cell, write)),
                Some(_) => {
                    batch.cells.push(cell);
                    batch.writes.push(write);
                }
            },
            Ok(Plan::Repeat) => repeated.push(cell.fragment()),
            Ok(Plan::Skip) => {}
            Err(failure) => failures.push(failure),
        }
    }
    let result = if !failures.is_empty() {
        Err(CommitError::Final(Error::Save {
            failures,
            written: repeated,
            update_id: update.update_id(),
        }))
    } else {
        match first {
            None => Ok(()),
            Some((cell, write)) if batch.writes.is_empty() => {
                match now.apply_one_now(&write) {
                    Ok(Outcome::Applied) => {
                        // The common case: it landed.
                        saved(cell, &write, store, &Ok(Outcome::Applied), update);
                        update.env.counters.add(written_counter(&write), 1);
                        Ok(())
                    }
                    result => {
                        let batch = Batch {
                            store,
                            cells: vec![cell],
                            writes: vec![write],
                        };
                        settle(vec![(batch, vec![result])], repeated, update, attempt)
                    }
                }
            }
            Some((cell, write)) => {
                batch.cells.insert(0, cell);
                batch.writes.insert(0, write);
                let results = now.apply_now(&batch.writes);
                settle(vec![(batch, results)], repeated, update, attempt)
            }
        }
    };
    if let Err(error) = &result {
        ended(error, &update.env.counters);
    }
    Some(result)
}

/// The counter a landed write adds to.
fn written_counter(write: &Write) -> Counter {
    match write {
        Write::Put { .. } => Counter::Writes,
        Write::Delete { .. } => Counter::Deletes,
    }
}

/// Logs how one write of a commit went.
fn saved(
    cell: &dyn ErasedCell,
    write: &Write,
    store: &StoreRef,
    result: &Result<Outcome, StoreError>,
    update: UpdateRef<'_>,
) {
    tracing::debug!(
        fragment = cell.fragment(),
        key = %update.env.config.shown_key(write.key()),
        store = store.as_dyn().name(),
        op = if matches!(write, Write::Put { .. }) { "put" } else { "delete" },
        outcome = match result {
            Ok(Outcome::Applied) => "applied",
            Ok(Outcome::Conflict) => "conflict",
            Err(e) if e.outcome_unknown() => "unknown",
            Err(_) => "error",
        },
        "session fragment saved"
    );
}

/// The writes of one store.
struct Batch<'c> {
    store: &'c StoreRef,
    cells: Vec<&'c dyn ErasedCell>,
    writes: Vec<Write>,
}

/// What a commit writes, by store, and the fragments an earlier run or delivery of the
/// update changed already (rule S25).
struct Planned<'c> {
    batches: Vec<Batch<'c>>,
    repeated: Vec<&'static str>,
}

/// What each cell of the update writes, grouped by store; any cell that cannot say
/// fails the commit before anything is written.
fn plan<'c>(
    cells: &[&'c dyn ErasedCell],
    update: UpdateRef<'_>,
) -> Result<Planned<'c>, CommitError> {
    let mut failures = Vec::new();
    let mut batches: Vec<Batch<'c>> = Vec::new();
    let mut repeated = Vec::new();
    for &cell in cells {
        match cell.plan() {
            Ok(Plan::Write(write)) => {
                let store = cell.store();
                let instance = store.as_dyn().instance();
                match batches
                    .iter_mut()
                    .find(|batch| batch.store.as_dyn().instance() == instance)
                {
                    Some(batch) => {
                        batch.cells.push(cell);
                        batch.writes.push(write);
                    }
                    None => batches.push(Batch {
                        store,
                        cells: vec![cell],
                        writes: vec![write],
                    }),
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
            update_id: update.update_id(),
        }));
    }
    Ok(Planned { batches, repeated })
}

/// The writes of a commit.
async fn commit_inner(
    cells: &[&dyn ErasedCell],
    update: UpdateRef<'_>,
    attempt: u32,
) -> Result<(), CommitError> {
    let Planned { batches, repeated } = plan(cells, update)?;
    let outcomes = if batches.len() == 1 {
        // One store (the common case): no need to join.
        let mut outcomes = Vec::with_capacity(1);
        for batch in batches {
            outcomes.push(apply(batch, update).await);
        }
        outcomes
    } else {
        join_all(batches.into_iter().map(|batch| apply(batch, update))).await
    };
    settle(outcomes, repeated, update, attempt)
}

/// Applies one store's batch under `op_timeout`.
async fn apply<'c>(
    batch: Batch<'c>,
    update: UpdateRef<'_>,
) -> (Batch<'c>, Vec<Result<Outcome, StoreError>>) {
    let store = batch.store.as_dyn();
    let results = match update
        .timed(async { Ok(store.apply(&batch.writes).await) })
        .await
    {
        Ok(results) => results,
        Err(timeout) => batch
            .writes
            .iter()
            .map(|_| Err(timeout.replicate()))
            .collect(),
    };
    (batch, results)
}

/// What the writes of a commit came to: `Ok` if every one landed, else the error that
/// says what did (rule S26).
fn settle(
    outcomes: Vec<(Batch<'_>, Vec<Result<Outcome, StoreError>>)>,
    repeated: Vec<&'static str>,
    update: UpdateRef<'_>,
    attempt: u32,
) -> Result<(), CommitError> {
    let mut failures = Vec::new();
    let mut written = repeated;
    let mut conflicts = Vec::new();
    for (batch, results) in outcomes {
        let mut results = results.into_iter();
        let store = batch.store.as_dyn();
        for (cell, write) in batch.cells.into_iter().zip(&batch.writes) {
            let result = results.next().unwrap_or_else(|| {
                Err(StoreError::Corrupt(
                    "apply returned fewer results than writes".into(),
                ))
            });
            saved(cell, write, batch.store, &result, update);
            let failure = |error, outcome| SaveFailure {
                fragment: cell.fragment(),
                key: write.key().to_owned(),
                store: store.name().to_owned(),
                error,
                outcome,
            };
            match result {
                Ok(Outcome::Applied) => {
                    update.env.counters.add(written_counter(write), 1);
                    written.push(cell.fragment());
                }
                Ok(Outcome::Conflict) => {
                    update.env.counters.add(Counter::Conflicts, 1);
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
            update_id: update.update_id(),
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
            update_id: update.update_id(),
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
