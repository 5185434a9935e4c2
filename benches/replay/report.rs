//! What every part shares: env knobs, the spread over rounds, targets and the summary,
//! the machine's load, and the counting allocator.

use std::{
    alloc::{GlobalAlloc, Layout, System},
    sync::{
        Mutex,
        atomic::{AtomicBool, AtomicU64, Ordering::Relaxed},
    },
    time::Duration,
};

/// An env knob: `name` parsed as a number, else `default`.
pub fn env_usize(name: &str, default: usize) -> usize {
    std::env::var(name)
        .ok()
        .and_then(|v| v.parse().ok())
        .unwrap_or(default)
}

/// Nanoseconds per update.
pub fn per_update(total: Duration, updates: usize) -> f64 {
    total.as_secs_f64() * 1e9 / updates as f64
}

/// Minimum, median (the mean of the middle two for an even count) and maximum of
/// per-round samples.
#[derive(Clone, Copy, Debug)]
pub struct Spread {
    pub min: f64,
    pub median: f64,
    pub max: f64,
}

impl Spread {
    /// The spread of `samples` (at least one).
    pub fn of(samples: &[f64]) -> Spread {
        let mut sorted = samples.to_vec();
        sorted.sort_by(f64::total_cmp);
        let mid = sorted.len() / 2;
        let median = if sorted.len().is_multiple_of(2) {
            (sorted[mid - 1] + sorted[mid]) / 2.0
        } else {
            sorted[mid]
        };
        Spread {
            min: sorted[0],
            median,
            max: sorted[sorted.len() - 1],
        }
    }

    /// `a[i] / b[i]` for each round.
    pub fn ratios(a: &[f64], b: &[f64]) -> Spread {
        let ratios: Vec<f64> = a.iter().zip(b).map(|(a, b)| a / b).collect();
        Spread::of(&ratios)
    }

    /// `time_a / time_b` per round (a slowdown; `throughput_b / throughput_a`).
    pub fn time_ratios(a: &[Duration], b: &[Duration]) -> Spread {
        let a: Vec<f64> = a.iter().map(Duration::as_secs_f64).collect();
        let b: Vec<f64> = b.iter().map(Duration::as_secs_f64).collect();
        Spread::ratios(&a, &b)
    }

    /// `time_b / time_a` per round: the throughput of `a` relative to `b`.
    pub fn throughput_ratios(a: &[Duration], b: &[Duration]) -> Spread {
        Spread::time_ratios(b, a)
    }

    /// "1.23× (1.20–1.31)".
    pub fn show(&self) -> String {
        format!("{:.2}× ({:.2}–{:.2})", self.median, self.min, self.max)
    }
}

/// What a ratio should be.
#[derive(Clone, Copy, Debug)]
pub enum Target {
    /// At most this (a cost).
    AtMost(f64),
    /// At least this (a throughput).
    AtLeast(f64),
    /// Reported, no target.
    None,
}

impl Target {
    fn show(self) -> String {
        match self {
            Target::AtMost(t) => format!("≤ {t:.2}×"),
            Target::AtLeast(t) => format!("≥ {t:.2}×"),
            Target::None => "—".to_owned(),
        }
    }

    /// "met", "missed (×2.93)" (how far the median is from the target, as a factor), or
    /// "—" without a target.
    pub fn verdict(self, value: f64) -> String {
        match self {
            Target::AtMost(t) if value <= t => "met".to_owned(),
            Target::AtMost(t) => format!("missed (×{:.2})", value / t),
            Target::AtLeast(t) if value >= t => "met".to_owned(),
            Target::AtLeast(t) => format!("missed (×{:.2})", t / value),
            Target::None => "—".to_owned(),
        }
    }
}

/// One line of the final summary.
struct Row {
    what: String,
    value: String,
    target: String,
    verdict: String,
}

static SUMMARY: Mutex<Vec<Row>> = Mutex::new(Vec::new());

fn push(row: Row) {
    SUMMARY.lock().unwrap_or_else(|e| e.into_inner()).push(row);
}

/// Prints a ratio beside its target and keeps it for the summary.
pub fn ratio(what: &str, spread: Spread, target: Target) {
    let row = Row {
        what: what.to_owned(),
        value: spread.show(),
        target: target.show(),
        verdict: target.verdict(spread.median),
    };
    println!(
        "- {}: {} — target {}: **{}**",
        row.what, row.value, row.target, row.verdict
    );
    push(row);
}

/// A yes/no check for the summary (operation counts, batching).
pub fn check(what: &str, holds: bool, detail: &str) {
    let row = Row {
        what: what.to_owned(),
        value: detail.to_owned(),
        target: "exact".to_owned(),
        verdict: if holds { "met" } else { "MISSED" }.to_owned(),
    };
    push(row);
}

/// A part that did not run, for the summary.
pub fn skipped(what: &str, why: &str) {
    push(Row {
        what: what.to_owned(),
        value: format!("skipped: {why}"),
        target: String::new(),
        verdict: "not measured".to_owned(),
    });
}

/// The summary of every target of this run.
pub fn print_summary() {
    let rows = SUMMARY.lock().unwrap_or_else(|e| e.into_inner());
    println!("## Summary: every ratio of this run beside its target\n");
    println!("Medians over rounds, (min–max) in parentheses; a distance is target ÷ median");
    println!("(or median ÷ target for costs).\n");
    println!("| what | measured | target | verdict |");
    println!("|---|---|---|---|");
    for row in rows.iter() {
        println!(
            "| {} | {} | {} | {} |",
            row.what, row.value, row.target, row.verdict
        );
    }
    println!();
}

/// `/proc/loadavg`'s three averages, or a note that it is unreadable.
pub fn load_average() -> String {
    match std::fs::read_to_string("/proc/loadavg") {
        Ok(text) => text
            .split_whitespace()
            .take(3)
            .collect::<Vec<_>>()
            .join(" / "),
        Err(_) => "unreadable".to_owned(),
    }
}

/// Prints the load average at the start of a part and returns a guard printing it, and
/// the part's wall time, at its end.
pub fn part_load(part: &str) -> PartLoad {
    println!(
        "load average (1 / 5 / 15 min) at the start of {part}: {}\n",
        load_average()
    );
    PartLoad(part.to_owned(), std::time::Instant::now())
}

/// See [`part_load`].
pub struct PartLoad(String, std::time::Instant);

impl Drop for PartLoad {
    fn drop(&mut self) {
        println!(
            "load average at the end of {}: {} ({:.0} s)\n",
            self.0,
            load_average(),
            self.1.elapsed().as_secs_f64()
        );
    }
}

// ---------------------------------------------------------------------------------------
// Allocations

/// The system allocator, counting allocations and requested bytes while switched on
/// ([`count_allocations`]); off, it costs one relaxed load per call.
pub struct CountingAlloc;

static COUNTING: AtomicBool = AtomicBool::new(false);
static ALLOCATIONS: AtomicU64 = AtomicU64::new(0);
static BYTES: AtomicU64 = AtomicU64::new(0);

fn note(size: usize) {
    if COUNTING.load(Relaxed) {
        ALLOCATIONS.fetch_add(1, Relaxed);
        BYTES.fetch_add(size as u64, Relaxed);
    }
}

// SAFETY: every call is forwarded unchanged to `System`; counting touches only atomics.
unsafe impl GlobalAlloc for CountingAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc(layout) }
    }

    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        note(layout.size());
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.alloc_zeroed(layout) }
    }

    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        // A reallocation counts as one allocation of its new size.
        note(new_size);
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.realloc(ptr, layout, new_size) }
    }

    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        // SAFETY: the caller's contract, forwarded.
        unsafe { System.dealloc(ptr, layout) }
    }
}

/// Allocations and requested bytes (a reallocation counts as one of its new size).
#[derive(Clone, Copy, Debug, Default)]
pub struct Allocations {
    pub count: u64,
    pub bytes: u64,
}

/// Runs `f` with counting on (every thread's allocations count: run it where nothing
/// else allocates meanwhile).
pub async fn count_allocations<F: Future>(f: F) -> (F::Output, Allocations) {
    let (count, bytes) = (ALLOCATIONS.load(Relaxed), BYTES.load(Relaxed));
    COUNTING.store(true, Relaxed);
    let output = f.await;
    COUNTING.store(false, Relaxed);
    let counted = Allocations {
        count: ALLOCATIONS.load(Relaxed) - count,
        bytes: BYTES.load(Relaxed) - bytes,
    };
    (output, counted)
}
