//! `audit`: the old tool's checks of a step definition before it is shared, and of a whole
//! StepLib.
//!
//! Invariants:
//! - Every check runs and every failure is reported, never only the first (the old tool stops at
//!   the first, and at the first failing version of a StepLib).
//! - A StepLib's versions are audited in parallel.
//! - The clone that checks a version's tag is made in a temp dir of the store's temp area
//!   (`tmp/audit-<random>`, `store-format.md` §6), removed when the check ends, and reclaimed by
//!   the next sweep when the process is killed: nothing is left in the system's temp dir.

use std::path::Path;

use rayon::prelude::*;
use serde::Serialize;
use serde_json::Value;

use crate::error::{Error, Result};
use crate::fetch::{GitTransports, NetConfig};
use crate::layout::TempKind;
use crate::steplib::{self, Collection, Source};
use crate::store::Store;
use crate::tmp::TempDir;

/// How much of a step definition is checked.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Depth {
    /// The fields a step needs to be shared (`share create` before it writes, `audit` without
    /// `--before-pr`): `title`, `summary` and `website` not empty, `timeout` not negative, a
    /// title for every input and output, `is_sensitive` only with `is_expand`.
    Fields,
    /// What a StepLib pull request needs besides (`--before-pr`, `audit -c`): the path
    /// `steps/<id>/<version>/step.yml` (for a file), `published_at`, `source.git` (http(s),
    /// ending in `.git`) and `source.commit`, and a clone of the tag `<version>` that checks out
    /// exactly `source.commit`.
    BeforePr,
}

/// The audit of one step version.
#[derive(Debug, Clone, Serialize)]
pub struct Audited {
    /// What was audited: the step.yml's path, or `<id>@<version>` of a StepLib.
    pub subject: String,
    /// Every failure found (empty: it passes).
    pub failures: Vec<String>,
}

impl Audited {
    /// Whether every check passed.
    pub fn passed(&self) -> bool {
        self.failures.is_empty()
    }
}

/// The text of `step[key]` as the old tool reads it into a string field (a number or a boolean
/// as written); `None` when missing or null.
fn text(v: &Value, key: &str) -> Option<String> {
    match v.get(key)? {
        Value::Null => None,
        Value::String(s) => Some(s.clone()),
        Value::Number(n) => Some(n.to_string()),
        Value::Bool(b) => Some(b.to_string()),
        _ => Some(String::new()),
    }
}

/// Whether `v[key]` is true, as a YAML boolean or its text.
fn flag(v: &Value, key: &str) -> Option<bool> {
    match v.get(key)? {
        Value::Bool(b) => Some(*b),
        Value::String(s) => match s.trim() {
            "true" | "yes" | "True" | "TRUE" | "on" => Some(true),
            "false" | "no" | "False" | "FALSE" | "off" => Some(false),
            _ => None,
        },
        _ => None,
    }
}

/// The failures of the checks of [`Depth::Fields`].
pub fn check_fields(step: &Value) -> Vec<String> {
    let mut out = Vec::new();
    for key in ["title", "summary", "website"] {
        if text(step, key).is_none_or(|t| t.is_empty()) {
            out.push(format!("missing or empty required '{key}' property"));
        }
    }
    match step.get("timeout") {
        None | Some(Value::Null) => {}
        Some(t) => {
            let n = t
                .as_f64()
                .or_else(|| t.as_str().and_then(|s| s.trim().parse::<f64>().ok()));
            match n {
                Some(n) if n < 0.0 => out.push(format!("timeout {t} is less than 0")),
                Some(_) => {}
                None => out.push(format!("timeout {t} is not a number")),
            }
        }
    }
    for list in ["inputs", "outputs"] {
        let Some(items) = step.get(list).and_then(Value::as_array) else {
            continue;
        };
        for (i, item) in items.iter().enumerate() {
            let key = item
                .as_object()
                .and_then(|m| m.keys().find(|k| *k != "opts").cloned())
                .unwrap_or_else(|| format!("#{}", i + 1));
            let what = format!("{} {key}", &list[..list.len() - 1]);
            let opts = item.get("opts").cloned().unwrap_or(Value::Null);
            if text(&opts, "title").is_none_or(|t| t.is_empty()) {
                out.push(format!("{what}: missing or empty title"));
            }
            if flag(&opts, "is_sensitive") == Some(true) && flag(&opts, "is_expand") == Some(false)
            {
                out.push(format!(
                    "{what}: is_sensitive is true, which needs is_expand (it is false)"
                ));
            }
        }
    }
    out
}

/// The field checks of [`Depth::BeforePr`] besides [`check_fields`]: `published_at`,
/// `source.git`, `source.commit`.
pub fn check_pr_fields(step: &Value) -> Vec<String> {
    let mut out = Vec::new();
    if text(step, "published_at").is_none_or(|t| t.is_empty()) {
        out.push("missing or empty required 'published_at' property".to_string());
    }
    let source = step.get("source").cloned().unwrap_or(Value::Null);
    match text(&source, "git").filter(|g| !g.is_empty()) {
        None => out.push("missing or empty required 'source.git' property".to_string()),
        Some(g) => {
            let lower = g.to_ascii_lowercase();
            if !(lower.starts_with("http://") || lower.starts_with("https://")) {
                out.push(format!(
                    "source.git {g} should start with http:// or https://"
                ));
            }
            if !g.ends_with(".git") {
                out.push(format!("source.git {g} should end with .git"));
            }
        }
    }
    if text(&source, "commit").is_none_or(|c| c.is_empty()) {
        out.push("missing or empty required 'source.commit' property".to_string());
    }
    out
}

/// The `(id, version)` a step.yml's path names: its last components must be
/// `steps/<id>/<version>/step.yml`.
pub fn id_and_version_of(path: &Path) -> std::result::Result<(String, String), String> {
    let parts: Vec<String> = path
        .components()
        .map(|c| c.as_os_str().to_string_lossy().into_owned())
        .collect();
    let n = parts.len();
    if n < 4 || parts[n - 4] != "steps" || parts[n - 1] != "step.yml" {
        return Err(format!(
            "the path should end with steps/<id>/<version>/step.yml: {}",
            path.display()
        ));
    }
    Ok((parts[n - 3].clone(), parts[n - 2].clone()))
}

/// Clones the tag `version` of the step's `source.git` into a temp dir of the store and
/// checks that it is exactly `source.commit`; the failure, if any.
fn check_tag(
    store: &Store,
    step: &Value,
    version: &str,
    transports: GitTransports,
    net: &NetConfig,
) -> Result<Option<String>> {
    let source = step.get("source").cloned().unwrap_or(Value::Null);
    let (Some(git), Some(commit)) = (text(&source, "git"), text(&source, "commit")) else {
        return Ok(None);
    };
    if git.is_empty() || commit.is_empty() {
        return Ok(None);
    }
    store.check_owner("audit a step")?;
    let tmp = TempDir::create(store.layout(), TempKind::Audit)
        .map_err(|e| store.read_only_or(e, "audit a step"))?;
    let dest = tmp.path().join("clone");
    let what = format!("tag {version}");
    match crate::fetch::git_clone(
        &git,
        Some(version),
        Some(&commit),
        &dest,
        &what,
        transports,
        net,
    ) {
        Ok(_) => Ok(None),
        Err(Error::Cancelled) => Err(Error::Cancelled),
        Err(Error::Fetch { what, reason }) => Ok(Some(format!("{what}: {reason}"))),
        Err(e) => Err(e),
    }
}

/// Every failure of one step definition at `depth`; `version` is the tag a
/// [`Depth::BeforePr`] audit clones.
fn audit_step(
    store: &Store,
    step: &Value,
    version: &str,
    depth: Depth,
    transports: GitTransports,
    net: &NetConfig,
) -> Result<Vec<String>> {
    let mut failures = check_fields(step);
    if depth == Depth::BeforePr {
        failures.extend(check_pr_fields(step));
        if let Some(f) = check_tag(store, step, version, transports, net)? {
            failures.push(f);
        }
    }
    Ok(failures)
}

/// Audits the step.yml at `path` (`audit --step-yml PATH [--before-pr]`). A file that cannot
/// be read or parsed is an error, not a failure.
pub fn audit_step_yml(
    store: &Store,
    path: &Path,
    depth: Depth,
    net: &NetConfig,
) -> Result<Audited> {
    let step = steplib::read_step_yml(path)?;
    let subject = path.display().to_string();
    let mut failures = Vec::new();
    let mut version = String::new();
    if depth == Depth::BeforePr {
        match id_and_version_of(path) {
            Ok((_, v)) => version = v,
            Err(e) => failures.push(e),
        }
    }
    if depth == Depth::BeforePr && version.is_empty() {
        failures.extend(check_fields(&step));
        failures.extend(check_pr_fields(&step));
    } else {
        // A file the user names may name a repository on this machine.
        failures.extend(audit_step(
            store,
            &step,
            &version,
            depth,
            GitTransports::NetworkAndLocal,
            net,
        )?);
    }
    Ok(Audited { subject, failures })
}

/// Audits every version of every step of the collection `o` of `c` at [`Depth::BeforePr`], in
/// parallel (`jobs` at once): one result per version, in the collection's order (by id, then
/// version), then one per file the collection left out (`collection.json`'s `skipped`: a
/// step.yml that does not parse, or has no title), named by its path in the StepLib.
pub fn audit_collection(
    store: &Store,
    c: &Collection,
    o: &steplib::Opened,
    jobs: usize,
    net: &NetConfig,
) -> Result<Vec<Audited>> {
    let mut work = Vec::new();
    for id in o.step_ids()? {
        let Some(entry) = o.entry(&id)? else { continue };
        for v in &entry.versions {
            if let Some(step) = entry.step(v)? {
                work.push((id.clone(), v.clone(), step));
            }
        }
    }
    let transports = match c.source {
        Source::Dir(_) => GitTransports::NetworkAndLocal,
        _ => GitTransports::Network,
    };
    // What setup left out of the collection (a step.yml without a title, say) fails too.
    let skipped = o.meta.skipped.iter().map(|s| Audited {
        subject: s.path.clone(),
        failures: vec![s.error.clone()],
    });
    // `collect` keeps the order of `work`: by id, then version.
    let mut out = crate::jobs::in_pool(jobs, "audit", || {
        work.par_iter()
            .map(|(id, v, step)| {
                net.check_cancel()?;
                Ok(Audited {
                    subject: format!("{id}@{v}"),
                    failures: audit_step(store, step, v, Depth::BeforePr, transports, net)?,
                })
            })
            .collect::<Result<Vec<_>>>()
    })?;
    out.extend(skipped);
    Ok(out)
}
