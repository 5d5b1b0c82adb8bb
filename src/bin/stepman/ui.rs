//! What the binary writes on stderr besides errors: the commands' informational lines
//! ([`note!`]), which `-q/--quiet` silences, and the library's progress reports
//! (`stepman::progress`), drawn as bars when stderr is a terminal and `--quiet` is not given,
//! not at all otherwise. A line printed while a bar is drawn goes above it.

use std::fmt;
use std::io::IsTerminal;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex, OnceLock};
use std::time::{Duration, Instant};

use indicatif::{HumanBytes, ProgressBar, ProgressDrawTarget, ProgressStyle};
use stepman::preload::{Outcome, Status};
use stepman::progress::{NoProgress, Phase, Progress};

/// Set by `-q/--quiet`.
static QUIET: AtomicBool = AtomicBool::new(false);

/// The bars of this process, once a command asked for a reporter on a terminal.
static BARS: OnceLock<Arc<Bars>> = OnceLock::new();

/// `-q/--quiet`: no progress and no informational lines from now on.
pub(crate) fn set_quiet() {
    QUIET.store(true, Ordering::Relaxed);
}

/// Whether `-q/--quiet` was given.
pub(crate) fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Whether progress is shown: stderr is a terminal and `--quiet` was not given.
pub(crate) fn shown() -> bool {
    !quiet() && std::io::stderr().is_terminal()
}

/// The reporter a command hands the library: the bars when [`shown`], else one that ignores
/// every report.
pub(crate) fn reporter() -> Arc<dyn Progress> {
    if shown() {
        BARS.get_or_init(|| Arc::new(Bars::default())).clone()
    } else {
        Arc::new(NoProgress)
    }
}

/// Writes an informational line on stderr (what [`note!`] expands to): nothing with
/// `--quiet`; above the bar when one is drawn.
pub(crate) fn write_note(args: fmt::Arguments<'_>) {
    if !quiet() {
        write_line(args);
    }
}

/// Writes a line on stderr, above the bar when one is drawn (errors too: they are never
/// silenced).
pub(crate) fn write_line(args: fmt::Arguments<'_>) {
    match BARS.get().and_then(|b| b.current()) {
        Some(bar) => bar.suspend(|| eprintln!("{args}")),
        None => eprintln!("{args}"),
    }
}

/// The log's stderr while bars may be drawn: each record goes above the bar, as
/// [`write_line`] does (env_logger writes a record with one `write_all`).
#[derive(Debug)]
pub(crate) struct AboveBars;

impl std::io::Write for AboveBars {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        let put = || std::io::stderr().lock().write_all(buf);
        match BARS.get().and_then(|b| b.current()) {
            Some(bar) => bar.suspend(put)?,
            None => put()?,
        }
        Ok(buf.len())
    }

    fn flush(&mut self) -> std::io::Result<()> {
        std::io::stderr().flush()
    }
}

/// Removes the bar, if one is drawn (before an error is printed, at the end).
pub(crate) fn clear() {
    if let Some(bar) = BARS.get().and_then(|b| b.take()) {
        bar.finish_and_clear();
    }
}

/// `eprintln!` for a command's informational lines (what it did), through [`write_note`]:
/// errors and warnings do not use it.
macro_rules! note {
    ($($t:tt)*) => {
        $crate::ui::write_note(format_args!($($t)*))
    };
}
pub(crate) use note;

/// One line about a preloaded step: `[n/total] id@version: downloaded (3.1 MiB, 0.52s)`.
pub(crate) fn step_line(o: &Outcome, n: usize, total: usize) -> String {
    let version = o.version.as_deref().unwrap_or("?");
    match (&o.error, o.status) {
        (_, Status::Cancelled) => format!("[{n}/{total}] {}@{}: cancelled", o.id, o.constraint),
        (Some(e), _) => format!("[{n}/{total}] {}@{}: failed: {e}", o.id, o.constraint),
        (None, status) => format!(
            "[{n}/{total}] {}@{version}: {}{}{} ({}, {:.2}s)",
            o.id,
            status.as_str(),
            match o.from {
                Some(stepman::remote::Came::Remote) => " from the remote",
                _ => "",
            },
            match o.build {
                Some(stepman::toolkit::BuildStatus::Built) => ", built",
                Some(stepman::toolkit::BuildStatus::Cached) => ", build cached",
                Some(stepman::toolkit::BuildStatus::Remote) => ", build from the remote",
                _ => "",
            },
            HumanBytes(o.bytes),
            o.seconds
        ),
    }
}

/// `preload`'s reporter off a terminal: one line per step on stderr (none with `--quiet`).
#[derive(Debug, Default)]
pub(crate) struct StepLines;

impl Progress for StepLines {
    fn step_done(&self, o: &Outcome, n: usize, total: usize) {
        write_note(format_args!("{}", step_line(o, n, total)));
    }
}

/// What the bar shows now.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Showing {
    /// A clone, a download or a generation.
    One,
    /// A preload: its steps, with every download's bytes counted together.
    Preload,
}

/// The bar of the phase being shown.
#[derive(Debug)]
struct Current {
    bar: ProgressBar,
    showing: Showing,
    started: Instant,
    /// Which phase it is (phases are numbered as they start).
    id: u64,
}

/// A copy of what [`Current`] holds, to report to without the lock.
struct Shown {
    bar: ProgressBar,
    started: Instant,
    id: u64,
}

/// The bars on a terminal: one at a time, replaced by each new phase.
#[derive(Debug, Default)]
pub(crate) struct Bars {
    current: Mutex<Option<Current>>,
    /// Bytes received by every download of a preload.
    preload_bytes: AtomicU64,
    /// The number of the next phase.
    next_id: AtomicU64,
}

fn style(template: &str) -> ProgressStyle {
    ProgressStyle::with_template(template)
        .unwrap_or_else(|_| ProgressStyle::default_bar())
        .progress_chars("=> ")
}

impl Bars {
    fn lock(&self) -> std::sync::MutexGuard<'_, Option<Current>> {
        self.current.lock().unwrap_or_else(|e| e.into_inner())
    }

    /// The bar drawn now.
    fn current(&self) -> Option<ProgressBar> {
        self.lock().as_ref().map(|c| c.bar.clone())
    }

    /// Takes the bar drawn now away (the caller finishes it).
    fn take(&self) -> Option<ProgressBar> {
        self.lock().take().map(|c| c.bar)
    }

    /// Shows `bar` for a new phase, replacing the one drawn.
    fn show(&self, bar: ProgressBar, showing: Showing) {
        bar.enable_steady_tick(Duration::from_millis(100));
        let id = self.next_id.fetch_add(1, Ordering::Relaxed);
        let old = self.lock().replace(Current {
            bar,
            showing,
            started: Instant::now(),
            id,
        });
        if let Some(old) = old {
            old.bar.finish_and_clear();
        }
    }

    /// The bar drawn now, unless the phase shown is of `showing`'s other kind.
    fn bar_of(&self, showing: Showing) -> Option<Shown> {
        self.lock()
            .as_ref()
            .filter(|c| c.showing == showing)
            .map(|c| Shown {
                bar: c.bar.clone(),
                started: c.started,
                id: c.id,
            })
    }

    /// Clears the bar of phase `id` (it is complete), unless another phase replaced it.
    fn done(&self, id: u64) {
        let mut cur = self.lock();
        if cur.as_ref().is_some_and(|c| c.id == id)
            && let Some(c) = cur.take()
        {
            c.bar.finish_and_clear();
        }
    }
}

/// Shortens `s` to at most `max` characters (a long URL), keeping its end.
fn tail(s: &str, max: usize) -> String {
    let n = s.chars().count();
    if n <= max {
        return s.to_string();
    }
    let end: String = s.chars().skip(n - (max - 1)).collect();
    format!("…{end}")
}

fn new_bar(len: Option<u64>) -> ProgressBar {
    ProgressBar::with_draw_target(len, ProgressDrawTarget::stderr())
}

impl Progress for Bars {
    fn phase(&self, what: Phase) {
        // The downloads (and any refresh) of a preload are counted in its one bar.
        if self.bar_of(Showing::Preload).is_some() && !matches!(what, Phase::Preload { .. }) {
            return;
        }
        match what {
            Phase::Clone { what, .. } => {
                let bar = new_bar(None);
                bar.set_style(style("{spinner} cloning {msg} ({elapsed})"));
                bar.set_message(tail(&what, 60));
                self.show(bar, Showing::One);
            }
            Phase::Download { what, total, .. } => {
                let bar = new_bar(total);
                bar.set_style(style(if total.is_some() {
                    "{spinner} downloading {msg} [{bar:20}] {binary_bytes}/{binary_total_bytes} at {binary_bytes_per_sec}, eta {eta}"
                } else {
                    "{spinner} downloading {msg} {binary_bytes} at {binary_bytes_per_sec}"
                }));
                bar.set_message(tail(&what, 50));
                self.show(bar, Showing::One);
            }
            Phase::Generate { uri, steps } => {
                let bar = new_bar(Some(steps));
                bar.set_style(style(
                    "{spinner} generating {msg}: {pos} of {len} steps [{bar:20}] eta {eta}",
                ));
                bar.set_message(tail(&uri, 40));
                self.show(bar, Showing::One);
            }
            Phase::Preload { steps } => {
                self.preload_bytes.store(0, Ordering::Relaxed);
                let bar = new_bar(Some(steps));
                bar.set_style(style(
                    "{spinner} {pos}/{len} steps, {msg} [{wide_bar}] eta {eta}",
                ));
                bar.set_message("0 B");
                self.show(bar, Showing::Preload);
            }
            _ => {}
        }
    }

    fn bytes(&self, n: u64, total: Option<u64>) {
        if let Some(s) = self.bar_of(Showing::Preload) {
            let bytes = self.preload_bytes.fetch_add(n, Ordering::Relaxed) + n;
            let secs = s.started.elapsed().as_secs_f64().max(0.001);
            s.bar.set_message(format!(
                "{} at {}/s",
                HumanBytes(bytes),
                HumanBytes((bytes as f64 / secs) as u64)
            ));
            return;
        }
        let Some(s) = self.bar_of(Showing::One) else {
            return;
        };
        s.bar.inc(n);
        if total.is_some_and(|t| s.bar.position() >= t) {
            self.done(s.id);
        }
    }

    fn items(&self, done: u64, total: u64) {
        if let Some(s) = self.bar_of(Showing::One) {
            s.bar.set_position(done);
            if done >= total {
                self.done(s.id);
            }
        }
    }

    fn step_done(&self, o: &Outcome, n: usize, total: usize) {
        let Some(s) = self.bar_of(Showing::Preload) else {
            return;
        };
        if o.status == Status::Failed {
            s.bar.println(step_line(o, n, total));
        }
        s.bar.set_position(n as u64);
        if n >= total {
            self.done(s.id);
        }
    }
}
