//! `step-info --library git::URL@REF`.

use serde_json::Value;

use super::resolve::{Picked, StepInfo};
use crate::error::{Error, Result};
use crate::fetch::{self, NetConfig};
use crate::layout::{GIT_ROUTE, Name};
use crate::steplib;
use crate::store::{Producer, Rebuild, Store};
use crate::tmp;

/// `step-info --library git::URL@REF`: clones the step's repository at `REF` into the store
/// (under `_git/<alias of URL>/<ref digest>`, re-fetched on every call since a branch moves) and
/// describes its step.yml.
pub fn git_step_info(store: &Store, spec: &str, net: &NetConfig) -> Result<StepInfo> {
    let (url, reference) = match spec.rsplit_once('@') {
        Some((u, r)) if !r.contains(['/', ':']) || !u.contains(['/', ':']) => (u, Some(r)),
        _ => (spec, None),
    };
    let (url, reference) = if url.is_empty() {
        (spec, None)
    } else {
        (url, reference)
    };
    git_step_info_at(store, url, reference, net)
}

/// [`git_step_info`] of repository `url` at `reference` (`None`: its default branch), as the
/// old form `step-info --library git --id URL --version REF` names them.
pub fn git_step_info_at(
    store: &Store,
    url: &str,
    reference: Option<&str>,
    net: &NetConfig,
) -> Result<StepInfo> {
    let shown = crate::credentials::redact(url);
    let version = crate::layout::git_ref_version(reference.unwrap_or("HEAD"));
    let name = Name::new(GIT_ROUTE, &steplib::alias_of(&shown), &version)?;
    let what = format!("step {shown}@{}", reference.unwrap_or("HEAD"));
    let got = store.produce(&name, Rebuild::Always, Producer::GitStep, |stage| {
        let clone = stage.dir().join("clone");
        // The user's own URL: it may name a repository on this machine.
        fetch::git_clone(
            url,
            reference,
            None,
            &clone,
            &what,
            fetch::GitTransports::NetworkAndLocal,
            net,
        )?;
        tmp::remove_tree(&clone.join(".git"))?;
        stage.ingest(&clone)
    })?;
    let dir = store.layout().object_dir(&got.id);
    let yml = dir.join("step.yml");
    let step = steplib::read_step_yml_in(&dir, "step.yml").map_err(|e| match e {
        Error::Steplib { reason, .. } => Error::Steplib {
            what: what.clone(),
            reason: format!("step.yml: {reason}"),
        },
        e => e,
    })?;
    Ok(StepInfo {
        library: format!("git::{shown}"),
        picked: Picked {
            id: shown,
            version: reference.unwrap_or_default().to_string(),
            original_version: reference.unwrap_or_default().to_string(),
            latest_version: String::new(),
            info: Value::Object(serde_json::Map::new()),
            step,
        },
        definition_pth: yml.display().to_string(),
    })
}
