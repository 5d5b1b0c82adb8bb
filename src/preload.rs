//! Cache warming: many step versions downloaded in parallel, every failure collected.
//!
//! Invariants: preload only ever adds to the store (it fills names that are missing, through the
//! same single-flight protocol as `activate`, so a step being preloaded while a build activates
//! it is downloaded once); one step's failure never stops the others; every requested step gets
//! exactly one result.

use std::sync::Mutex;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::time::Instant;

use serde::Serialize;

use crate::activate;
use crate::error::Result;
use crate::fetch::NetConfig;
use crate::steplib::{self, Collection};
use crate::store::Store;

/// One requested step: `id` and a version constraint (`""` = latest).
#[derive(Debug, Clone, PartialEq, Eq)]
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

/// What happened to one requested step.
#[derive(Debug, Clone, Serialize)]
pub struct Outcome {
    /// Step id.
    pub id: String,
    /// The constraint as requested.
    pub constraint: String,
    /// The version it resolved to.
    pub version: Option<String>,
    /// `cached` (already in the store), `downloaded` or `failed`.
    pub status: &'static str,
    /// Bytes of the step's files (for cached and downloaded steps).
    pub bytes: u64,
    /// Seconds spent on it.
    pub seconds: f64,
    /// Why it failed.
    pub error: Option<String>,
}

/// Every step group's latest version, skipping deprecated groups (those with a `removal_date`
/// or `deprecate_notes`).
pub fn all_latest(store: &Store, c: &Collection, net: &NetConfig) -> Result<Vec<Request>> {
    let opened = activate::open_or_setup(store, c, net)?;
    let mut out = Vec::new();
    for id in opened.step_ids()? {
        let Some(g) = opened.group(&id)? else {
            continue;
        };
        let deprecated = ["removal_date", "deprecate_notes"].iter().any(|k| {
            g.info
                .get(k)
                .is_some_and(|v| !v.is_null() && v.as_str() != Some(""))
        });
        if !deprecated {
            out.push(Request {
                id,
                constraint: g.latest_version_number,
            });
        }
    }
    Ok(out)
}

/// Downloads every request with `jobs` workers; `progress` sees each outcome as it completes.
pub fn preload(
    store: &Store,
    c: &Collection,
    requests: &[Request],
    jobs: usize,
    net: &NetConfig,
    progress: &(dyn Fn(&Outcome, usize, usize) + Sync),
) -> Result<Vec<Outcome>> {
    // Set the collection up once, before the workers start.
    activate::open_or_setup(store, c, net)?;
    let next = AtomicUsize::new(0);
    let done = AtomicUsize::new(0);
    let results: Mutex<Vec<Option<Outcome>>> = Mutex::new(vec![None; requests.len()]);
    std::thread::scope(|s| {
        for _ in 0..jobs.max(1).min(requests.len().max(1)) {
            s.spawn(|| {
                loop {
                    let i = next.fetch_add(1, Ordering::SeqCst);
                    let Some(req) = requests.get(i) else { break };
                    let o = one(store, c, req, net);
                    let n = done.fetch_add(1, Ordering::SeqCst) + 1;
                    progress(&o, n, requests.len());
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

fn one(store: &Store, c: &Collection, req: &Request, net: &NetConfig) -> Outcome {
    let start = Instant::now();
    let mut o = Outcome {
        id: req.id.clone(),
        constraint: req.constraint.clone(),
        version: None,
        status: "failed",
        bytes: 0,
        seconds: 0.0,
        error: None,
    };
    let r = activate::resolve(store, c, &req.id, &req.constraint, false, net).and_then(|r| {
        let got = activate::download(store, &r, net)?;
        Ok((r.version, got))
    });
    match r {
        Ok((version, got)) => {
            o.version = Some(version);
            o.status = if got.ingested { "downloaded" } else { "cached" };
            o.bytes = crate::scan::tree_bytes(&store.layout().object_dir(&got.id));
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
        .filter(|(id, version)| id != steplib::COLLECTION_ID && !version.contains('+'))
        .collect();
    v.sort_by(|a, b| {
        a.0.cmp(&b.0).then_with(|| {
            steplib::version::Version::parse(&a.1).cmp(&steplib::version::Version::parse(&b.1))
        })
    });
    Ok(v)
}
