//! Which fragments updates touch together (rule S29).
//!
//! Two updates that take the same two keys in opposite orders would wait for each other;
//! the wait-for graph refuses the second wait and that update is re-run. To keep re-runs
//! rare, the runtime learns which fragments the updates of a bot touch together: an
//! update that touches one of them first takes the keys of the others too, at once and in
//! the global order, so such updates take turns instead of meeting in a cycle.
//!
//! A pair's score grows by 2 when an update touches both and shrinks by 1 when an update
//! touches one without the other; companions are taken from a score of 2 on. A bot whose
//! updates mostly touch one fragment alone thus keeps its per-key concurrency.

use std::sync::atomic::{AtomicU8, Ordering};

const GROW: u8 = 2;
const CAP: u8 = 16;
const THRESHOLD: u8 = 2;

/// The pair scores of one `Sessions` (fragments × fragments).
pub(crate) struct Affinity {
    n: usize,
    scores: Vec<AtomicU8>,
}

impl Affinity {
    pub(crate) fn new(n: usize) -> Self {
        Self {
            n,
            scores: (0..n * n).map(|_| AtomicU8::new(0)).collect(),
        }
    }

    fn score(&self, i: usize, j: usize) -> Option<&AtomicU8> {
        (i < self.n && j < self.n).then(|| &self.scores[i * self.n + j])
    }

    /// Learns from one committed update: `touched[i]` says fragment `i` was touched.
    pub(crate) fn record(&self, touched: &[bool]) {
        self.record_by(|i| touched.get(i).copied().unwrap_or(false));
    }

    /// [`record`](Self::record), with `touched(i)` saying whether fragment `i` was.
    pub(crate) fn record_by(&self, touched: impl Fn(usize) -> bool) {
        for i in (0..self.n).filter(|&i| touched(i)) {
            for j in 0..self.n {
                let other = touched(j);
                let Some(score) = self.score(i, j).filter(|_| i != j) else {
                    continue;
                };
                // Most updates change no score (a lone fragment, scores at 0): no write.
                let _ = score.fetch_update(Ordering::Relaxed, Ordering::Relaxed, |s| {
                    let next = if other {
                        s.saturating_add(GROW).min(CAP)
                    } else {
                        s.saturating_sub(1)
                    };
                    (next != s).then_some(next)
                });
            }
        }
    }

    /// Whether updates touching `i` usually touch another fragment too.
    pub(crate) fn has_companions(&self, i: usize) -> bool {
        (0..self.n).any(|j| {
            j != i
                && self
                    .score(i, j)
                    .is_some_and(|s| s.load(Ordering::Relaxed) >= THRESHOLD)
        })
    }

    /// The fragments updates touching `i` usually touch too.
    pub(crate) fn companions(&self, i: usize) -> Vec<usize> {
        (0..self.n)
            .filter(|&j| {
                j != i
                    && self
                        .score(i, j)
                        .is_some_and(|s| s.load(Ordering::Relaxed) >= THRESHOLD)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pairs_are_learned_and_forgotten() {
        let affinity = Affinity::new(3);
        assert!(affinity.companions(0).is_empty());
        affinity.record(&[true, true, false]);
        assert_eq!(affinity.companions(0), [1]);
        assert_eq!(affinity.companions(1), [0]);
        affinity.record(&[true, false, false]);
        affinity.record(&[true, false, false]);
        assert!(affinity.companions(0).is_empty());
        assert_eq!(
            affinity.companions(1),
            [0],
            "updates of 1 alone still take 0"
        );
        assert!(Affinity::new(0).companions(5).is_empty());
    }
}
