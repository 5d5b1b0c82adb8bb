//! Building only what the command line uses, which is most of a cache-hit `step-info`'s
//! start-up:
//! - [`Deferred`]: a subcommand's arguments that clap builds only when that subcommand is the
//!   one that runs (`clap::Command::defer`);
//! - [`Only`]: the subcommands, cut down to the one the command line names while `main` builds
//!   the definition it parses with ([`only`]). clap copies every global option into every
//!   subcommand it has before parsing (8 options into 25 subcommands: about 170 KB of heap, a
//!   page fault per 4 KB), so a definition with one subcommand starts faster.
//!
//! Invariant: outside [`only`], [`Only`] adds every subcommand, so help, completions, man pages
//! and errors see the whole tree. `main` parses with the cut-down definition only as a first try:
//! any error (help and bad usage included) is answered by parsing again with the whole one.
//! A cut-down parse that succeeds is the whole one's: the top level has no positional
//! arguments, so the tokens before the subcommand are read as the same options either way.

use std::ops::Deref;
use std::sync::Mutex;

use clap::{ArgMatches, Args, Command, FromArgMatches, Subcommand};

/// The arguments `T` of a subcommand, built on first use.
#[derive(Debug)]
pub(crate) struct Deferred<T>(T);

impl<T> Deref for Deferred<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Args> Args for Deferred<T> {
    fn augment_args(cmd: Command) -> Command {
        cmd.defer(T::augment_args)
    }
    fn augment_args_for_update(cmd: Command) -> Command {
        cmd.defer(T::augment_args_for_update)
    }
    fn group_id() -> Option<clap::Id> {
        T::group_id()
    }
}

impl<T: FromArgMatches> FromArgMatches for Deferred<T> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(m).map(Deferred)
    }
    fn from_arg_matches_mut(m: &mut ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(m).map(Deferred)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
    fn update_from_arg_matches_mut(&mut self, m: &mut ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(m)
    }
}

/// The subcommand [`Only`] keeps, while [`only`] runs.
static ONLY: Mutex<Option<String>> = Mutex::new(None);

/// Runs `build` with [`Only`] keeping just the subcommand `name` (by name or alias; every
/// subcommand when `name` is `None` or names none of them).
pub(crate) fn only<R>(name: Option<&str>, build: impl FnOnce() -> R) -> R {
    let set = |v: Option<String>| *ONLY.lock().unwrap_or_else(|e| e.into_inner()) = v;
    set(name.map(str::to_owned));
    let r = build();
    set(None);
    r
}

/// The subcommands `T`, all of them or (inside [`only`]) the one the command line names.
#[derive(Debug)]
pub(crate) struct Only<T>(T);

impl<T> Deref for Only<T> {
    type Target = T;
    fn deref(&self) -> &T {
        &self.0
    }
}

impl<T: Subcommand> Only<T> {
    /// `T`'s subcommands added to `cmd`, cut down as [`ONLY`] says.
    fn add(cmd: Command, all: fn(Command) -> Command) -> Command {
        let name = ONLY.lock().unwrap_or_else(|e| e.into_inner()).clone();
        let Some(name) = name else {
            return all(cmd);
        };
        let every = all(Command::new("stepman"));
        match every
            .get_subcommands()
            .find(|s| s.get_name() == name || s.get_all_aliases().any(|a| a == name))
        {
            Some(one) => cmd.subcommand(one.clone()),
            None => all(cmd),
        }
    }
}

impl<T: Subcommand> Subcommand for Only<T> {
    fn augment_subcommands(cmd: Command) -> Command {
        Self::add(cmd, T::augment_subcommands)
    }
    fn augment_subcommands_for_update(cmd: Command) -> Command {
        Self::add(cmd, T::augment_subcommands_for_update)
    }
    fn has_subcommand(name: &str) -> bool {
        T::has_subcommand(name)
    }
}

impl<T: FromArgMatches> FromArgMatches for Only<T> {
    fn from_arg_matches(m: &ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches(m).map(Only)
    }
    fn from_arg_matches_mut(m: &mut ArgMatches) -> Result<Self, clap::Error> {
        T::from_arg_matches_mut(m).map(Only)
    }
    fn update_from_arg_matches(&mut self, m: &ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches(m)
    }
    fn update_from_arg_matches_mut(&mut self, m: &mut ArgMatches) -> Result<(), clap::Error> {
        self.0.update_from_arg_matches_mut(m)
    }
}
