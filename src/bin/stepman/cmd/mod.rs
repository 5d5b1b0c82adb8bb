//! One module per subcommand.

pub mod activate;
pub mod collections;
pub mod delete;
pub mod download;
pub mod export_spec;
pub mod fsck;
pub mod gc;
pub mod list_cached;
pub mod preload;
pub mod setup;
pub mod step_info;
pub mod step_list;
pub mod steplib;
pub mod store;
pub mod update;

use std::fmt;

/// Marks an error that means "the command could not run at all" (exit 2).
#[derive(Debug)]
pub struct CouldNotRun(pub String);

impl fmt::Display for CouldNotRun {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for CouldNotRun {}

/// Opens (creating if needed) the store for a command that writes.
pub fn open_rw(cli: &crate::Cli) -> anyhow::Result<stepman::Store> {
    let home = cli.home()?;
    Ok(stepman::Store::open(&home)?.with_durability(cli.durability()))
}

/// Opens the store for a command that only reads; `None` when there is no store yet.
pub fn open_ro(cli: &crate::Cli) -> anyhow::Result<Option<stepman::Store>> {
    let home = cli.home()?;
    Ok(stepman::Store::open_existing(&home)?.map(|s| s.with_durability(cli.durability())))
}
