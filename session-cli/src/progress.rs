//! A progress bar on a terminal (standard error), nothing otherwise: the plain summary
//! the commands print at the end is what a log or a script sees.

use std::io::IsTerminal;

use indicatif::{ProgressBar, ProgressDrawTarget, ProgressStyle};

pub struct Progress(ProgressBar);

impl Progress {
    /// Counts items (`total` if known).
    pub fn counter(total: Option<u64>, what: &str) -> Self {
        let style = match total {
            Some(_) => "{msg} {bar:40} {pos}/{len} ({per_sec}, {eta} left)",
            None => "{spinner} {msg} {pos} ({per_sec})",
        };
        Self::with(total, what, style)
    }

    /// Counts bytes of an input of `total` bytes.
    pub fn bytes(total: Option<u64>, what: &str) -> Self {
        let style = match total {
            Some(_) => "{msg} {bar:40} {bytes}/{total_bytes} ({bytes_per_sec}, {eta} left)",
            None => "{spinner} {msg} {bytes} ({bytes_per_sec})",
        };
        Self::with(total, what, style)
    }

    fn with(total: Option<u64>, what: &str, template: &str) -> Self {
        if !std::io::stderr().is_terminal() {
            return Progress(ProgressBar::hidden());
        }
        let bar = match total {
            Some(total) => ProgressBar::new(total),
            None => ProgressBar::new_spinner(),
        };
        bar.set_draw_target(ProgressDrawTarget::stderr());
        if let Ok(style) = ProgressStyle::with_template(template) {
            bar.set_style(style);
        }
        bar.set_message(what.to_owned());
        Progress(bar)
    }

    pub fn inc(&self, n: u64) {
        self.0.inc(n);
    }

    pub fn set(&self, position: u64) {
        self.0.set_position(position);
    }

    /// Prints `line` above the bar (or just prints it without one).
    pub fn println(&self, line: &str) {
        if self.0.is_hidden() {
            eprintln!("{line}");
        } else {
            self.0.println(line);
        }
    }

    pub fn finish(&self) {
        self.0.finish_and_clear();
    }
}
