//! Cache warming: many step versions downloaded in parallel, every failure collected.
//!
//! Invariants: preload only ever adds to the store (it fills names that are missing, through the
//! same single-flight protocol as `activate`, so a step being preloaded while a build activates
//! it is downloaded once); one step's failure never stops the others; every requested step gets
//! exactly one result.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::{Instant, SystemTime};

use serde::Serialize;
use serde_json::{Map, Value};

use crate::error::{Error, Result};
use crate::fetch::NetConfig;
use crate::retry::Race;
use crate::step::{self, OnMiss};
use crate::steplib::model::Group;
use crate::steplib::version::Version;
use crate::steplib::{self, Collection, Constraint};
use crate::store::Store;

/// One requested step: `id` and a version constraint (`""` = latest).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Request {
    /// Step id.
    pub id: String,
    /// Version constraint.
    pub constraint: String,
}

impl Request {
    /// Parses `id`, `id@constraint`.
    pub fn parse(s: &str) -> Request {
        match s.trim().split_once('@') {
            Some((id, c)) => Request {
                id: id.trim().into(),
                constraint: c.trim().into(),
            },
            None => Request {
                id: s.trim().into(),
                constraint: String::new(),
            },
        }
    }
}

impl std::fmt::Display for Request {
    /// `id@constraint`, or `id` for the latest version: what [`Request::parse`] reads back.
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.constraint.as_str() {
            "" => f.write_str(&self.id),
            c => write!(f, "{}@{c}", self.id),
        }
    }
}

/// How one requested step ended ([`Outcome::status`]); shown and serialized in lowercase.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Status {
    /// Fetched and published by this preload.
    Downloaded,
    /// Already in the store.
    Cached,
    /// Could not be resolved or fetched ([`Outcome::error`] says why).
    Failed,
    /// Stopped by [`NetConfig::cancel`] before it finished; nothing of it was published.
    Cancelled,
}

impl Status {
    /// The name, as in the JSON output.
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Downloaded => "downloaded",
            Status::Cached => "cached",
            Status::Failed => "failed",
            Status::Cancelled => "cancelled",
        }
    }
}

/// What happened to one requested step.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Step id.
    pub id: String,
    /// The constraint as requested.
    pub constraint: String,
    /// The version it resolved to.
    pub version: Option<String>,
    /// How it ended.
    pub status: Status,
    /// Bytes of the step's files (for cached and downloaded steps).
    pub bytes: u64,
    /// Seconds spent on it.
    pub seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
    /// With `--prepare`: whether it was built now, found built, or needed no build.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub build: Option<crate::toolkit::BuildStatus>,
    /// Where a downloaded step came from: `origin` (its download location) or `remote` (the
    /// fleet's remote tier); `store` for a cached one.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub from: Option<crate::remote::Came>,
    /// With `--prepare`: the name of its build when a fleet's hosts may share it (its
    /// toolchain links no C), for `preload --push`.
    #[serde(skip)]
    pub shared_build: Option<crate::layout::Name>,
}

/// Whether a step group is deprecated: its step-info has a `removal_date` or `deprecate_notes`.
fn deprecated(g: &Group) -> bool {
    deprecated_info(&g.info)
}

/// [`deprecated`] of a group's info.
fn deprecated_info(info: &Value) -> bool {
    ["removal_date", "deprecate_notes"].iter().any(|k| {
        info.get(k)
            .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
    })
}

/// Every step group's latest version, skipping deprecated groups (those with a `removal_date`
/// or `deprecate_notes`).
pub fn all_latest(store: &Store, c: &Collection, net: &NetConfig) -> Result<Vec<Request>> {
    let mut out = Vec::new();
    let want = Want {
        info: &|info| !deprecated_info(info),
        versions: false,
    };
    for_each_group(store, c, net, want, |id, g| {
        if !deprecated(&g) {
            out.push(Request {
                id: id.to_string(),
                constraint: g.latest_version_number,
            });
        }
    })?;
    Ok(out)
}

/// What a listing of step groups needs of each ([`for_each_group`]).
struct Want<'a> {
    /// The groups to list, by their info.
    info: &'a dyn Fn(&Value) -> bool,
    /// Whether every version's step is needed (else only the latest version's number).
    versions: bool,
}

/// Calls `f` with every step group of collection `c` (set up first if needed), one at a time,
/// holding the store lock: an update and a gc running meanwhile cannot remove the collection
/// object half-way through the listing.
///
/// A StepLib API collection's groups are not in the store: each group's documents are
/// fetched (no store lock is held meanwhile; the documents are objects of their own), and only
/// for the groups whose info `wanted` keeps, every version's step only when `versions` asks.
fn for_each_group(
    store: &Store,
    c: &Collection,
    net: &NetConfig,
    want: Want<'_>,
    mut f: impl FnMut(&str, Group),
) -> Result<()> {
    let o = step::open_or_setup(store, c, net)?;
    if o.is_api() {
        for id in o.step_ids()? {
            let Some(e) = o.entry(&id)? else { continue };
            if !(want.info)(&e.info) {
                continue;
            }
            let mut versions = serde_json::Map::new();
            if want.versions {
                for v in &e.versions {
                    if let Some(step) = e.step(v)? {
                        versions.insert(v.clone(), step);
                    }
                }
            }
            f(
                &id,
                Group {
                    info: e.info,
                    latest_version_number: e.latest_version_number,
                    versions,
                },
            );
        }
        return Ok(());
    }
    // Set up outside the lock (a setup takes it itself: the first pass uses the one above),
    // then read under it. A concurrent `delete` may remove the collection between the two
    // (delete is safe while others work): then set it up again, as an activation does (a few
    // times, then give up: `crate::retry`; the first pass counts, as an activation's first
    // download does).
    drop(o);
    let mut set_up = true;
    let mut race = Race::new(Race::REDO);
    while race.again() {
        if !std::mem::take(&mut set_up) {
            step::open_or_setup(store, c, net)?;
        }
        let listed = store.read_locked(|| {
            let Some(opened) = steplib::open(store, c)? else {
                return Ok(false);
            };
            for id in opened.step_ids()? {
                if let Some(g) = opened.group(&id)? {
                    f(&id, g);
                }
            }
            Ok(true)
        })?;
        if listed {
            return Ok(());
        }
        log::debug!("collection {} was deleted after its setup; again", c.uri);
    }
    Err(Error::NotSetUp { uri: c.uri.clone() })
}

/// The `bitrise steps preload` selection of step versions, as the old tool chooses them: of the
/// step groups of `maintainer` without `deprecate_notes`, each group's latest version always, and
/// every version any of the rules below chooses (only release versions, `X.Y.Z` without a
/// pre-release, and only versions with a valid `published_at` for the two date rules; a rule set
/// to 0 chooses nothing). A month is 31 days, as the old tool counts. `project-scanner` (used
/// only by the scanner, and the largest group) gets its latest version only.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Selection {
    /// Only step groups whose step-info `maintainer` is this; `None`: every maintainer.
    pub maintainer: Option<String>,
    /// The latest patch of the latest `minors` minor versions of each of the latest `majors`
    /// major versions.
    pub majors: u32,
    /// See `majors`.
    pub minors: u32,
    /// The latest patch of every minor version whose latest patch was published (`published_at`)
    /// in the last `minors_since_months` months.
    pub minors_since_months: u32,
    /// Every version published in the last `patches_since_months` months.
    pub patches_since_months: u32,
}

impl Default for Selection {
    /// The defaults of `bitrise steps preload`: maintainer `bitrise`, 2 majors, 1 minor each,
    /// minors of the last 2 months, patches of the last month.
    fn default() -> Selection {
        Selection {
            maintainer: Some("bitrise".into()),
            majors: 2,
            minors: 1,
            minors_since_months: 2,
            patches_since_months: 1,
        }
    }
}

/// The step versions that `sel` chooses from collection `c` as of `now`, as exact requests
/// sorted by step id and version.
pub fn select(
    store: &Store,
    c: &Collection,
    net: &NetConfig,
    sel: &Selection,
    now: SystemTime,
) -> Result<Vec<Request>> {
    let cutoffs = Cutoffs::new(sel, now)?;
    let mut out = Vec::new();
    let chosen = |info: &Value| {
        let maintainer = info.get("maintainer").and_then(Value::as_str);
        let notes = info.get("deprecate_notes");
        !(notes.is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
            || sel
                .maintainer
                .as_deref()
                .is_some_and(|m| Some(m) != maintainer))
    };
    let want = Want {
        info: &chosen,
        versions: true,
    };
    for_each_group(store, c, net, want, |id, g| {
        if !chosen(&g.info) {
            return;
        }
        let versions = if id == ONLY_LATEST {
            latest_release(&g.versions).into_iter().collect()
        } else {
            select_versions(&g.versions, sel, &cutoffs)
        };
        for version in versions {
            out.push(Request {
                id: id.to_string(),
                constraint: version,
            });
        }
    })?;
    Ok(out)
}

/// The step group whose selection is its latest version only (as in the old tool).
const ONLY_LATEST: &str = "project-scanner";

/// The length of a month in the date rules, as the old tool counts it.
const MONTH: jiff::SignedDuration = jiff::SignedDuration::from_hours(24 * 31);

/// The two date rules' cutoffs: a version published after one is recent (`None`: the rule is
/// off).
struct Cutoffs {
    minors: Option<jiff::Timestamp>,
    patches: Option<jiff::Timestamp>,
}

impl Cutoffs {
    fn new(sel: &Selection, now: SystemTime) -> Result<Cutoffs> {
        let now = jiff::Timestamp::try_from(now).map_err(|e| Error::Steplib {
            what: "preload selection".into(),
            reason: format!("the clock reads a time out of range: {e}"),
        })?;
        let back = |months: u32| -> Result<Option<jiff::Timestamp>> {
            if months == 0 {
                return Ok(None);
            }
            MONTH
                .checked_mul(i32::try_from(months).unwrap_or(i32::MAX))
                .and_then(|d| now.checked_sub(d).ok())
                .map(Some)
                .ok_or_else(|| Error::Steplib {
                    what: "preload selection".into(),
                    reason: format!("{months} months before now is out of range"),
                })
        };
        Ok(Cutoffs {
            minors: back(sel.minors_since_months)?,
            patches: back(sel.patches_since_months)?,
        })
    }
}

/// `published_at` of a step definition, when it is a valid RFC 3339 time.
fn published_at(step: &Value) -> Option<jiff::Timestamp> {
    step.get("published_at")?.as_str()?.trim().parse().ok()
}

/// The highest release version (`X.Y.Z`, no pre-release) of a step group.
fn latest_release(versions: &Map<String, Value>) -> Option<String> {
    versions
        .keys()
        .filter(|v| Version::parse(v).triple().is_some())
        .max_by(|a, b| Version::parse(a).cmp(&Version::parse(b)))
        .cloned()
}

/// The versions of one step group that `sel` chooses, sorted: its latest release always, and
/// what the rules choose.
fn select_versions(versions: &Map<String, Value>, sel: &Selection, cut: &Cutoffs) -> Vec<String> {
    // major -> minor -> the latest patch (by version order) of that minor.
    let mut tree: BTreeMap<u64, BTreeMap<u64, &str>> = BTreeMap::new();
    let mut chosen: BTreeSet<&str> = BTreeSet::new();
    let recent = |v: &str, cutoff: Option<jiff::Timestamp>| {
        cutoff.is_some_and(|c| {
            versions
                .get(v)
                .and_then(published_at)
                .is_some_and(|p| p > c)
        })
    };
    for v in versions.keys() {
        let Some((major, minor, _)) = Version::parse(v).triple() else {
            continue;
        };
        if recent(v, cut.patches) {
            chosen.insert(v);
        }
        let slot = tree.entry(major).or_default().entry(minor).or_insert(v);
        if Version::parse(v) > Version::parse(slot) {
            *slot = v;
        }
    }
    for (i, minors) in tree.values().rev().enumerate() {
        for (j, latest) in minors.values().rev().enumerate() {
            if i < sel.majors as usize && j < sel.minors as usize {
                chosen.insert(latest);
            }
            if recent(latest, cut.minors) {
                chosen.insert(latest);
            }
        }
    }
    let mut out: Vec<String> = chosen.into_iter().map(String::from).collect();
    out.extend(latest_release(versions).filter(|l| !out.contains(l)));
    out.sort_by(|a, b| Version::parse(a).cmp(&Version::parse(b)));
    out
}

/// Downloads every request with `jobs` workers; `net.progress` sees a
/// [`Phase::Preload`](crate::progress::Phase::Preload), then each outcome as it completes
/// ([`Progress::step_done`](crate::progress::Progress::step_done)) and the downloads' bytes.
/// Once `net.cancel` is set, no new step starts, running downloads stop at their next read, and
/// the steps not done are reported `cancelled` (give `store` the same flag with
/// [`Store::with_interrupt`] so that waits for other processes stop too).
///
/// With `prepare`, each step is also made ready to run (`step::download_prepared`): Go steps
/// are built, one build at a time (each `go build` uses every core), while downloads go on.
///
/// A floating request (`id`, `id@X`, `id@X.Y`) refreshes a stale collection first, once, as
/// `opts.refresh` says ([`step::Refresh`]).
pub fn preload(
    store: &Store,
    c: &Collection,
    requests: &[Request],
    opts: &Options<'_>,
    net: &NetConfig,
) -> Result<Vec<Outcome>> {
    let (jobs, prepare) = (opts.jobs, opts.prepare);
    let builds = Mutex::new(());
    // Refresh and set the collection up once, before the workers start.
    if let Some(floating) = requests
        .iter()
        .find(|r| !matches!(Constraint::parse(&r.constraint), Constraint::Exact(_)))
    {
        step::refresh_if_stale(store, c, &floating.constraint, opts.refresh, net)?;
    }
    step::open_or_setup(store, c, net)?;
    let progress = &*net.progress;
    progress.phase(crate::progress::Phase::Preload {
        steps: requests.len() as u64,
    });
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; requests.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(requests.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(req) = requests.get(i) else { break };
                    let o = if net.cancelled() {
                        cancelled(req)
                    } else {
                        one(store, c, req, net, prepare.map(|p| (p, &builds)))
                    };
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    progress.step_done(&o, n, requests.len());
                    if let Ok(mut r) = results.lock() {
                        r[i] = Some(o);
                    }
                }
            });
        }
    });
    let results = results.into_inner().unwrap_or_default();
    Ok(results.into_iter().flatten().collect())
}

/// How [`preload`] runs.
#[derive(Debug, Clone, Copy)]
pub struct Options<'a> {
    /// Parallel downloads.
    pub jobs: usize,
    /// When floating requests refresh the collection first.
    pub refresh: step::Refresh,
    /// Also make each step ready to run (see [`preload`]).
    pub prepare: Option<&'a step::PrepareOptions>,
}

fn cancelled(req: &Request) -> Outcome {
    Outcome {
        id: req.id.clone(),
        constraint: req.constraint.clone(),
        version: None,
        status: Status::Cancelled,
        bytes: 0,
        seconds: 0.0,
        error: None,
        build: None,
        from: None,
        shared_build: None,
    }
}

fn one(
    store: &Store,
    c: &Collection,
    req: &Request,
    net: &NetConfig,
    prepare: Option<(&step::PrepareOptions, &Mutex<()>)>,
) -> Outcome {
    let start = Instant::now();
    let mut o = Outcome {
        id: req.id.clone(),
        constraint: req.constraint.clone(),
        version: None,
        status: Status::Failed,
        bytes: 0,
        seconds: 0.0,
        error: None,
        build: None,
        from: None,
        shared_build: None,
    };
    // The collection was refreshed, if at all, before the workers started.
    let lookup = step::Lookup {
        on_miss: OnMiss::Fail,
        refresh: step::Refresh::Never,
        read: step::Read::Definition,
    };
    let r = step::resolve(store, c, &req.id, &req.constraint, lookup, net).and_then(|r| {
        let (got, came) = step::download_from(store, &r, net)?;
        o.from = Some(came);
        // Its step.yml as a file of its own, so that `step-info` of a baked, read-only store
        // can name one (`definition_pth`). The step is cached either way, so its outcome is
        // the download's: a failure (the collection deleted meanwhile, say) is a warning, and a
        // stop that lands here leaves the file to the next run (which makes it for cached steps
        // too), never a bound step reported as cancelled.
        match r.definition_path(store) {
            Err(Error::Cancelled) => {
                log::info!(
                    "{}@{}: stopped before its step.yml was kept as a file of its own",
                    r.picked.id,
                    r.picked.version
                );
            }
            Err(e) => log::warn!(
                "{}@{}: its step.yml was not kept as a file of its own: {}",
                r.picked.id,
                r.picked.version,
                e.describe()
            ),
            Ok(_) => {}
        }
        if let Some((opts, builds)) = prepare {
            o.version = Some(r.picked.version.clone());
            let built = if crate::toolkit::Toolkit::of(&r.picked.step, "")?.kind()
                == crate::toolkit::ToolkitKind::Go
            {
                let _one = builds.lock().unwrap_or_else(|e| e.into_inner());
                let p = step::download_prepared(store, &r, opts, net)?;
                o.shared_build = p.shared_build();
                p.build
            } else {
                crate::toolkit::BuildStatus::None
            };
            o.build = Some(built);
        }
        Ok((r.picked.version, got))
    });
    match r {
        Ok((version, got)) => {
            o.version = Some(version);
            o.status = if got.ingested {
                Status::Downloaded
            } else {
                Status::Cached
            };
            o.bytes = crate::scan::tree_bytes(&store.layout().object_dir(&got.id));
        }
        Err(Error::Cancelled) => o.status = Status::Cancelled,
        Err(e) if net.cancelled() => {
            // Stopped part-way; the error is a consequence of the cancellation.
            o.status = Status::Cancelled;
            o.error = Some(e.describe());
        }
        Err(e) => o.error = Some(e.describe()),
    }
    o.seconds = start.elapsed().as_secs_f64();
    o
}

/// The cached step versions of a collection, `(id, version)` sorted.
pub fn list_cached(store: &Store, c: &Collection) -> Result<Vec<(String, String)>> {
    let mut v: Vec<(String, String)> = store
        .names_in_route(&c.alias)?
        .into_iter()
        // Ids starting with `_` are the store's own (the collection, executables); a version
        // with `+` may be an executable's name of an older stepman.
        .filter(|(id, version)| !id.starts_with('_') && !version.contains('+'))
        .collect();
    v.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            steplib::version::Version::parse(&a.1).cmp(&steplib::version::Version::parse(&b.1))
        })
    });
    Ok(v)
}

#[cfg(test)]
mod tests {
    use super::*;

    /// A group's versions with their `published_at`.
    fn versions(list: &[(&str, &str)]) -> Map<String, Value> {
        list.iter()
            .map(|(v, p)| (v.to_string(), serde_json::json!({ "published_at": p })))
            .collect()
    }

    fn pick(list: &[(&str, &str)], sel: &Selection, now: &str) -> Vec<String> {
        let now: jiff::Timestamp = now.parse().expect("test time");
        let cut = Cutoffs::new(sel, SystemTime::from(now)).expect("cutoffs");
        select_versions(&versions(list), sel, &cut)
    }

    const OLD: &str = "2020-01-01T00:00:00Z";

    #[test]
    fn majors_and_minors_take_the_latest_patch() {
        let list = [
            ("1.0.0", OLD),
            ("1.1.0", OLD),
            ("1.1.3", OLD),
            ("2.0.0", OLD),
            ("2.0.1", OLD),
            ("2.1.0", OLD),
            ("3.0.0", OLD),
            ("3.0.0-beta", OLD),
            ("3.1.2", OLD),
            ("3.1.10", OLD),
            ("3.2.0", OLD),
        ];
        let mut sel = Selection {
            minors_since_months: 0,
            patches_since_months: 0,
            ..Selection::default()
        };
        assert_eq!(
            pick(&list, &sel, "2026-01-01T00:00:00Z"),
            ["2.1.0", "3.2.0"]
        );
        sel.minors = 2;
        assert_eq!(
            pick(&list, &sel, "2026-01-01T00:00:00Z"),
            ["2.0.1", "2.1.0", "3.1.10", "3.2.0"]
        );
        sel.majors = 9;
        sel.minors = 1;
        assert_eq!(
            pick(&list, &sel, "2026-01-01T00:00:00Z"),
            ["1.1.3", "2.1.0", "3.2.0"]
        );
        // The latest release is chosen whatever the rules say (as the old tool does).
        sel.majors = 0;
        assert_eq!(pick(&list, &sel, "2026-01-01T00:00:00Z"), ["3.2.0"]);
    }

    #[test]
    fn since_rules_count_31_day_months_and_use_published_at() {
        let list = [
            ("1.0.0", "2025-12-20T10:00:00+02:00"), // latest patch of 1.0, 71 days old
            ("1.1.0", "2026-01-15T00:00:00Z"),      // 45 days old, superseded by 1.1.1
            ("1.1.1", "2026-01-31T23:00:00-05:00"), // = Feb 1 04:00 UTC, 28 days old
            ("1.2.0", "not a date"),
            ("1.3.0", OLD),
        ];
        let sel = Selection {
            majors: 0,
            ..Selection::default()
        };
        // now = 2026-03-01: patches of the last 31 days, minors of the last 62; 1.3.0 is the
        // latest release, chosen always.
        assert_eq!(
            pick(&list, &sel, "2026-03-01T00:00:00Z"),
            ["1.1.1", "1.3.0"]
        );
        let sel = Selection {
            majors: 0,
            minors_since_months: 3,
            patches_since_months: 2,
            ..Selection::default()
        };
        // patches of the last 62 days (1.1.0, 1.1.1); minors of the last 93 (1.0.0, 1.1.1).
        assert_eq!(
            pick(&list, &sel, "2026-03-01T00:00:00Z"),
            ["1.0.0", "1.1.0", "1.1.1", "1.3.0"]
        );
        // A month is 31 days, not a calendar month: on March 1, one month back is January 29
        // (a calendar month would be February 1), and a version exactly 31 days old is out.
        let sel = Selection {
            majors: 0,
            minors_since_months: 0,
            patches_since_months: 1,
            ..Selection::default()
        };
        let list = [
            ("1.0.0", "2026-01-30T00:00:00Z"),
            ("1.0.1", "2026-01-29T00:00:00Z"),
            ("1.0.2", "2026-01-28T23:59:59Z"),
            ("2.0.0", OLD),
        ];
        assert_eq!(
            pick(&list, &sel, "2026-03-01T00:00:00Z"),
            ["1.0.0", "2.0.0"]
        );
    }

    /// The example the old tool was run with: versions 400, 300, 200, 90, 10 and 5 days old and
    /// `--patches-since 1` (majors and minors off) choose the 10- and 5-day-old ones.
    #[test]
    fn patches_since_one_month_chooses_the_recent_versions() {
        let now: jiff::Timestamp = "2026-12-01T00:00:00Z".parse().unwrap();
        let ago = |days: i64| {
            now.checked_sub(jiff::SignedDuration::from_hours(24 * days))
                .unwrap()
                .to_string()
        };
        let dated: Vec<(String, String)> = [400, 300, 200, 90, 10, 5]
            .iter()
            .enumerate()
            .map(|(i, d)| (format!("1.{i}.0"), ago(*d)))
            .collect();
        let list: Vec<(&str, &str)> = dated
            .iter()
            .map(|(v, p)| (v.as_str(), p.as_str()))
            .collect();
        let sel = Selection {
            majors: 0,
            minors_since_months: 0,
            patches_since_months: 1,
            ..Selection::default()
        };
        assert_eq!(pick(&list, &sel, &now.to_string()), ["1.4.0", "1.5.0"]);
    }
}
