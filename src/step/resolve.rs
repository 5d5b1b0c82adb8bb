//! Picking a step version from a collection (set up on first use).

use std::path::PathBuf;
use std::time::{Duration, SystemTime};

use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::fetch::NetConfig;
use crate::layout::Name;
use crate::retry::Race;
use crate::steplib::{self, Collection, Constraint, Opened, StoredStep, generate};
use crate::store::{Fill, Store};

/// A step version picked from a collection.
#[derive(Debug, Clone)]
pub struct Resolved {
    /// The collection.
    pub collection: Collection,
    /// The collection as read from the store.
    pub opened: Opened,
    /// The version picked and what the collection says of it.
    pub picked: Picked,
    /// Where its original step.yml is in the collection object.
    pub definition: steplib::Definition,
}

/// A step version as a lookup picked it (part of [`Resolved`] and of [`StepInfo`]).
#[derive(Debug, Clone, Serialize)]
pub struct Picked {
    /// Step id.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub id: String,
    /// The version picked.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub version: String,
    /// The constraint as given.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub original_version: String,
    /// The group's latest version.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub latest_version: String,
    /// The group's info (`step-info.yml`).
    pub info: Value,
    /// The step definition (null when the lookup did not parse it: [`Read`]).
    pub step: Value,
    /// The step definition as the collection stores it, JSON text not yet parsed
    /// ([`Read::Text`]; `None` otherwise): what [`StepInfo::to_json`] prints from.
    #[serde(skip)]
    pub step_json: Option<steplib::StepText>,
}

impl Resolved {
    /// The store name of this step version.
    pub fn name(&self) -> Result<Name> {
        self.collection
            .step_name(&self.picked.id, &self.picked.version)
    }

    /// The original step.yml as a file of its own ([`steplib::definition_file`]: in a layout-3
    /// collection, made the first time it is asked for, from the bytes the collection holds,
    /// read again from the current collection object if the one resolved in went away).
    pub fn definition_path(&self, store: &Store) -> Result<PathBuf> {
        match &self.definition {
            steplib::Definition::File(p) => Ok(p.clone()),
            steplib::Definition::Span { .. } => steplib::definition_file(
                store,
                &self.collection.alias,
                &super::activation::read_definition(store, self)?,
            ),
        }
    }

    /// The original step.yml's text, as it is written (what raw `step-info` prints): read from
    /// the collection object, writing nothing.
    pub fn definition_text(&self, store: &Store) -> Result<String> {
        super::activation::read_definition(store, self)
            .map(|b| String::from_utf8_lossy(&b).into_owned())
    }
}

/// What `step-info --format json` prints.
#[derive(Debug, Clone, Serialize)]
///
/// Empty strings are left out, as the old tool's `omitempty` does.
pub struct StepInfo {
    /// The collection URI.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub library: String,
    /// The step version.
    #[serde(flatten)]
    pub picked: Picked,
    /// Path of the step.yml.
    #[serde(skip_serializing_if = "String::is_empty")]
    pub definition_pth: String,
}

/// [`StepInfo`] as JSON, with the step as text ([`StepInfo::to_json`]): the same fields, in the
/// same order, left out by the same rules.
#[derive(Serialize)]
struct InfoJson<'a> {
    #[serde(skip_serializing_if = "str::is_empty")]
    library: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    id: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    original_version: &'a str,
    #[serde(skip_serializing_if = "str::is_empty")]
    latest_version: &'a str,
    info: &'a Value,
    step: steplib::compat::Shaped<'a>,
    #[serde(skip_serializing_if = "str::is_empty")]
    definition_pth: &'a str,
}

impl StepInfo {
    /// What `step-info --format json` prints: [`StepInfo::in_old_shape`], as one line of JSON.
    /// A step read as text ([`Read::Text`]) is shaped from its text
    /// ([`steplib::compat::old_shape_json`]), never parsed into a tree: the same bytes, for a
    /// fraction of the work.
    pub fn to_json(self) -> Result<String> {
        let Some(stored) = &self.picked.step_json else {
            let what = format!("{}@{}", self.picked.id, self.picked.version);
            let path = PathBuf::from(&self.definition_pth);
            return serde_json::to_string(&self.in_old_shape()).map_err(|e| Error::Format {
                path,
                reason: format!("printing the step definition of {what}: {e}"),
            });
        };
        let bad = |e: serde_json::Error| Error::Format {
            path: stored.file.clone(),
            reason: format!(
                "the stored step definition of {}@{} is not valid JSON: {e}",
                self.picked.id, self.picked.version
            ),
        };
        let text = &stored.text;
        let p = &self.picked;
        let step = steplib::compat::Shaped::of(text, p.info.get("asset_urls")).map_err(bad)?;
        serde_json::to_string(&InfoJson {
            library: &self.library,
            id: &p.id,
            version: &p.version,
            original_version: &p.original_version,
            latest_version: &p.latest_version,
            info: &steplib::compat::group_info(&p.info),
            step,
            definition_pth: &self.definition_pth,
        })
        .map_err(|e| Error::Format {
            path: stored.file.clone(),
            reason: format!(
                "printing the step definition of {}@{}: {e}",
                p.id, p.version
            ),
        })
    }

    /// The step and its group's info in the old tool's shape: the defaults it fills in
    /// ([`steplib::compat::fill_missing_defaults`]), the group's `asset_urls` also on the step,
    /// and only the group fields it knows.
    pub fn in_old_shape(mut self) -> StepInfo {
        let p = &mut self.picked;
        steplib::compat::fill_missing_defaults(&mut p.step);
        if let (Some(urls), Some(step)) = (p.info.get("asset_urls"), p.step.as_object_mut()) {
            step.insert("asset_urls".into(), urls.clone());
        }
        p.info = steplib::compat::group_info(&p.info);
        self
    }
}

impl StepInfo {
    /// What `step-info` says of `r`. Its `definition_pth` is left out, with a warning, when
    /// the step.yml is not yet a file of its own and this process cannot write the store (a
    /// baked image: `preload` made one for every step it cached).
    pub fn of(store: &Store, r: Resolved) -> Result<StepInfo> {
        let definition_pth = match r.definition_path(store) {
            Ok(p) => p.display().to_string(),
            Err(e @ (Error::ReadOnly { .. } | Error::NotOwner { .. })) => {
                log::warn!(
                    "{}@{}: its step.yml has no file of its own in this store, which this \
                     process cannot write ({e}); definition_pth left out",
                    r.picked.id,
                    r.picked.version
                );
                String::new()
            }
            Err(e) => return Err(e),
        };
        Ok(StepInfo {
            library: r.collection.uri.clone(),
            picked: r.picked,
            definition_pth,
        })
    }
}

/// Opens collection `c`, setting it up first if it is not (that needs write access). An API
/// collection fetches the documents its lookups need through `net` ([`Opened::online`]).
pub fn open_or_setup(store: &Store, c: &Collection, net: &NetConfig) -> Result<Opened> {
    // A concurrent `delete` may remove the collection right after we set it up: delete is safe
    // while others activate, so set it up again (a few times, then give up: `crate::retry`).
    let mut race = Race::new(Race::REDO);
    loop {
        if let Some(o) = steplib::open(store, c)? {
            return Ok(o.online(net));
        }
        if !race.again() {
            return Err(Error::NotSetUp { uri: c.uri.clone() });
        }
        generate::setup(store, c, Fill::IfMissing, net)?;
    }
}

/// When a lookup refreshes its collection before it resolves a floating constraint (latest,
/// `X`, `X.Y`): as the old CLI updates the StepLib before resolving one, so that a new release is
/// seen. An exact version never refreshes; offline, nothing does.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Refresh {
    /// Never (`STEPMAN_STEPLIB_TTL=off`): the collection as cached answers.
    Never,
    /// When the collection was set up or last updated longer ago than this (`0`: every time).
    OlderThan(Duration),
}

impl Refresh {
    /// The default time to live of a collection for floating lookups.
    pub const DEFAULT_TTL: Duration = Duration::from_secs(600);

    /// Reads a `STEPMAN_STEPLIB_TTL` value: whole seconds, or `off`; `None` when it is neither.
    pub fn parse(s: &str) -> Option<Refresh> {
        match s.trim() {
            "off" => Some(Refresh::Never),
            n => n
                .parse::<u64>()
                .ok()
                .map(|n| Refresh::OlderThan(Duration::from_secs(n))),
        }
    }
}

impl Default for Refresh {
    fn default() -> Refresh {
        Refresh::OlderThan(Refresh::DEFAULT_TTL)
    }
}

/// How [`resolve`] looks a step up.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Lookup {
    /// What a miss does.
    pub on_miss: OnMiss,
    /// When a floating constraint refreshes the collection first.
    pub refresh: Refresh,
    /// What is read of the version picked.
    pub read: Read,
}

/// What [`resolve`] reads of the version it picks, beyond its identity (id, version, latest
/// version, group info) and where its step.yml is.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum Read {
    /// Its step definition too ([`Picked::step`]): what activating or printing it as JSON needs.
    #[default]
    Definition,
    /// Nothing more: [`Picked::step`] is null (raw `step-info` prints the step.yml's own text,
    /// so parsing the definition, a record of 5-20 KB, would be wasted). An API collection's
    /// definition is a document that is in the store only once fetched: it is fetched as for
    /// [`Read::Text`].
    Identity,
    /// Its step definition as stored JSON text ([`Picked::step_json`]), not parsed
    /// ([`Picked::step`] is null), where the collection keeps such text
    /// ([`steplib::StepEntry::step_stored`]); parsed otherwise: what printing it as JSON needs
    /// ([`StepInfo::to_json`]).
    Text,
}

/// Refreshes collection `c` when `refresh` and `constraint` ask for it and it is stale. A refresh
/// that fails (the network, a read-only store) leaves the cached collection to answer, with a
/// warning; only a cancellation is an error.
pub(crate) fn refresh_if_stale(
    store: &Store,
    c: &Collection,
    constraint: &str,
    refresh: Refresh,
    net: &NetConfig,
) -> Result<()> {
    let Refresh::OlderThan(ttl) = refresh else {
        return Ok(());
    };
    if net.offline || matches!(Constraint::parse(constraint), Constraint::Exact(_)) {
        return Ok(());
    }
    // Not set up: the setup that follows is fresh.
    let Some(bound) = store.bound_at(&c.name()) else {
        return Ok(());
    };
    let age = SystemTime::now()
        .duration_since(bound)
        .unwrap_or(Duration::ZERO);
    if age < ttl {
        return Ok(());
    }
    match generate::refresh(store, c, bound, net) {
        Ok(p) => {
            if p.ingested {
                log::info!(
                    "{}: updated before resolving `{constraint}` (it was {}s old; STEPMAN_STEPLIB_TTL={}s)",
                    c.uri,
                    age.as_secs(),
                    ttl.as_secs()
                );
            } else {
                log::debug!(
                    "{}: no newer StepLib commit, or updated by another process meanwhile",
                    c.uri
                );
            }
            Ok(())
        }
        Err(Error::Cancelled) => Err(Error::Cancelled),
        // A store this user cannot write (a baked image): its collection is what it is.
        Err(e @ (Error::ReadOnly { .. } | Error::NotOwner { .. })) => {
            log::debug!("{}: not updated: {e}", c.uri);
            Ok(())
        }
        Err(e) => {
            log::warn!(
                "{}: could not update it ({e}); using the collection as cached {}s ago",
                c.uri,
                age.as_secs()
            );
            Ok(())
        }
    }
}

/// What [`resolve`] does when the collection has no version of the step that the constraint
/// selects.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub enum OnMiss {
    /// Fail with [`Error::StepNotFound`].
    #[default]
    Fail,
    /// Update the collection once and look again (`--update`).
    Update,
}

/// Picks the version of step `id` that `constraint` selects, after the refresh `lookup` asks
/// for; a miss does what it says.
pub fn resolve(
    store: &Store,
    c: &Collection,
    id: &str,
    constraint: &str,
    lookup: Lookup,
    net: &NetConfig,
) -> Result<Resolved> {
    let on_miss = lookup.on_miss;
    refresh_if_stale(store, c, constraint, lookup.refresh, net)?;
    let mut opened = open_or_setup(store, c, net)?;
    let mut updated = false;
    let mut reopen = Race::new(Race::REOPEN);
    loop {
        let entry = match opened.entry(id) {
            // Lookups take no lock: an update may have re-pointed the collection and a gc removed
            // the object we opened. Read the name again (`crate::retry`).
            Err(Error::Io { error, .. }) if reopen.again() && crate::sys::is_not_found(&error) => {
                opened = open_or_setup(store, c, net)?;
                continue;
            }
            other => other?,
        };
        let picked = entry.as_ref().and_then(|e| {
            Constraint::parse(constraint)
                .select(e.versions.iter().map(String::as_str))
                .map(str::to_string)
        });
        match (entry, picked) {
            (Some(e), Some(v)) => {
                let step = match lookup.read {
                    // An API collection's definition is the version's `step.json`, which only
                    // a fetch puts in the store: what raw output prints must be fetched too.
                    Read::Identity if e.fetches_definitions() => e.step_stored(&v),
                    Read::Identity => Ok(None),
                    Read::Definition => e.step(&v).map(|s| s.map(StoredStep::Parsed)),
                    Read::Text => e.step_stored(&v),
                };
                let step = match step {
                    Err(Error::Io { error, .. })
                        if reopen.again() && crate::sys::is_not_found(&error) =>
                    {
                        opened = open_or_setup(store, c, net)?;
                        continue;
                    }
                    other => other?,
                };
                let (step, step_json) = match step {
                    Some(StoredStep::Parsed(v)) => (v, None),
                    Some(StoredStep::Text(t)) => (Value::Null, Some(t)),
                    None => (Value::Null, None),
                };
                let definition = match e.definition(&v)? {
                    Some(d) => d,
                    None => steplib::Definition::File(opened.step_yml(id, &v)),
                };
                return Ok(Resolved {
                    collection: c.clone(),
                    opened,
                    definition,
                    picked: Picked {
                        id: id.to_string(),
                        version: v,
                        original_version: constraint.to_string(),
                        latest_version: e.latest_version_number,
                        info: e.info,
                        step,
                        step_json,
                    },
                });
            }
            (g, _) if on_miss == OnMiss::Fail || updated => {
                let suggestions = match &g {
                    Some(_) => Vec::new(),
                    None => closest_ids(id, &opened.step_ids().unwrap_or_default()),
                }
                .into_boxed_slice();
                let last_updated_secs = if updated || net.offline {
                    None
                } else {
                    stale_for(store, c, lookup.refresh)
                        .map(|d| u32::try_from(d.as_secs()).unwrap_or(u32::MAX))
                };
                return Err(Error::StepNotFound {
                    collection: c.uri.clone(),
                    id: id.to_string(),
                    constraint: constraint.to_string(),
                    available: g.map(|e| e.versions).unwrap_or_default(),
                    suggestions,
                    last_updated_secs,
                });
            }
            _ => {
                generate::setup(store, c, Fill::Again, net)?;
                opened = open_or_setup(store, c, net)?;
                updated = true;
            }
        }
    }
}

/// How long ago collection `c` was set up or last updated, when that is longer than `refresh`'s
/// time to live (never with [`Refresh::Never`]).
fn stale_for(store: &Store, c: &Collection, refresh: Refresh) -> Option<Duration> {
    let Refresh::OlderThan(ttl) = refresh else {
        return None;
    };
    let age = SystemTime::now()
        .duration_since(store.bound_at(&c.name())?)
        .ok()?;
    (age >= ttl).then_some(age)
}

/// Most ids [`closest_ids`] suggests.
const MAX_SUGGESTIONS: usize = 3;

/// The ids of `ids` close to `id` (a typo of it), best first, at most [`MAX_SUGGESTIONS`]:
/// those within a Damerau-Levenshtein distance of a third of its length (at least 1: a swap of
/// two letters counts as one), or with a Jaro-Winkler similarity of 0.9 or more; case is
/// ignored.
pub(crate) fn closest_ids(id: &str, ids: &[String]) -> Vec<String> {
    let want = id.to_lowercase();
    let max_distance = (want.chars().count() / 3).max(1);
    let mut scored: Vec<(usize, f64, &String)> = ids
        .iter()
        .filter_map(|cand| {
            let c = cand.to_lowercase();
            if c == want {
                return None;
            }
            let d = strsim::damerau_levenshtein(&want, &c);
            let jw = strsim::jaro_winkler(&want, &c);
            (d <= max_distance || jw >= 0.9).then_some((d, jw, cand))
        })
        .collect();
    scored.sort_by(|a, b| a.0.cmp(&b.0).then(b.1.total_cmp(&a.1)).then(a.2.cmp(b.2)));
    scored
        .into_iter()
        .take(MAX_SUGGESTIONS)
        .map(|(_, _, c)| c.clone())
        .collect()
}

#[cfg(test)]
mod suggestion_tests {
    use super::closest_ids;

    fn ids(v: &[&str]) -> Vec<String> {
        v.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn a_typo_suggests_the_closest_ids_and_nothing_far() {
        let all = ids(&[
            "script",
            "git-clone",
            "deploy-to-bitrise-io",
            "cache-pull",
            "scripts",
        ]);
        assert_eq!(closest_ids("scirpt", &all), ids(&["script", "scripts"]));
        assert_eq!(closest_ids("git-clon", &all), ids(&["git-clone"]));
        assert!(closest_ids("xcode-archive", &all).is_empty());
        let many = ids(&["ab1", "ab2", "ab3", "ab4"]);
        assert_eq!(closest_ids("ab", &many).len(), 3);
    }
}
