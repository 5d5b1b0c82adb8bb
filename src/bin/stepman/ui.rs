//! What the binary writes on stderr besides errors: the commands' informational lines
//! ([`note!`]), which `-q/--quiet` silences.

use std::fmt;
use std::sync::atomic::{AtomicBool, Ordering};

/// Set by `-q/--quiet`.
static QUIET: AtomicBool = AtomicBool::new(false);

/// `-q/--quiet`: no informational lines from now on.
pub(crate) fn set_quiet() {
    QUIET.store(true, Ordering::Relaxed);
}

/// Whether `-q/--quiet` was given.
pub(crate) fn quiet() -> bool {
    QUIET.load(Ordering::Relaxed)
}

/// Writes an informational line on stderr (what [`note!`] expands to); nothing with `--quiet`.
pub(crate) fn write_note(args: fmt::Arguments<'_>) {
    if quiet() {
        return;
    }
    eprintln!("{args}");
}

/// `eprintln!` for a command's informational lines (what it did), through [`write_note`]: errors and
/// warnings do not use it.
macro_rules! note {
    ($($t:tt)*) => {
        $crate::ui::write_note(format_args!($($t)*))
    };
}
pub(crate) use note;
