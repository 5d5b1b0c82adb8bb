//! The static keys and the region of an AWS profile, from the shared files the AWS tools write
//! (`~/.aws/credentials` and `~/.aws/config`, or `AWS_SHARED_CREDENTIALS_FILE` and
//! `AWS_CONFIG_FILE`): `object_store` reads the environment, a web identity token, ECS and the
//! instance metadata, but not these files.
//!
//! Invariants: the files are read, never written; what they hold stays in memory and is handed
//! to the S3 builder only; a value is never logged or shown (only the profile's name and the
//! file's path are). The environment wins, as in the AWS tools' own chain: keys are taken from a
//! profile only when `AWS_ACCESS_KEY_ID` is not set, and its region only when neither
//! `AWS_REGION` nor `AWS_DEFAULT_REGION` is. A profile that gets its credentials another way
//! (`credential_process`, SSO, `role_arn`) is not followed: its keys must be exported.
//!
//! The files are read by the AWS tools' own rules (not a generic INI reader's: no quotes, no
//! escapes, `#` and `;` comments only at the start of a line, indented lines belonging to the
//! setting above them); the INI crates would also bring a compile-time random constant into
//! the build through their ordered maps, and the build is meant to be reproducible.

use std::collections::HashMap;
use std::path::PathBuf;

/// What a profile gives.
pub(super) struct Profile {
    /// The profile's name (`AWS_PROFILE`, else `default`).
    pub(super) name: String,
    /// Where its keys were found.
    pub(super) keys_from: Option<PathBuf>,
    pub(super) access_key_id: Option<String>,
    pub(super) secret_access_key: Option<String>,
    pub(super) session_token: Option<String>,
    pub(super) region: Option<String>,
}

fn var(name: &str) -> Option<String> {
    std::env::var(name).ok().filter(|v| !v.is_empty())
}

fn file(var_name: &str, default: &str) -> Option<PathBuf> {
    var(var_name)
        .map(PathBuf::from)
        .or_else(|| var("HOME").map(|h| PathBuf::from(h).join(".aws").join(default)))
}

/// The settings of the file's `[section]` (the last one of that name wins, key by key); `None`
/// when there is no such file or section. Keys are lowercase; values are trimmed, as written.
fn section(path: &std::path::Path, section: &str) -> Option<HashMap<String, String>> {
    let text = std::fs::read_to_string(path).ok()?;
    parse_section(&text, section)
}

fn parse_section(text: &str, section: &str) -> Option<HashMap<String, String>> {
    let mut found: Option<HashMap<String, String>> = None;
    let mut inside = false;
    for line in text.lines() {
        let trimmed = line.trim();
        if trimmed.is_empty() || trimmed.starts_with('#') || trimmed.starts_with(';') {
            continue;
        }
        if let Some(rest) = trimmed.strip_prefix('[') {
            let Some(name) = rest.strip_suffix(']') else {
                inside = false;
                continue;
            };
            inside = name.trim() == section;
            if inside {
                found.get_or_insert_with(HashMap::new);
            }
            continue;
        }
        // An indented line is a nested setting of the one above it (`s3 =`): not a key here.
        if !inside || line.starts_with([' ', '\t']) {
            continue;
        }
        if let (Some(map), Some((k, v))) = (found.as_mut(), trimmed.split_once('=')) {
            map.insert(k.trim().to_ascii_lowercase(), v.trim().to_string());
        }
    }
    found
}

/// The profile the environment names, with what the shared files give it that the environment
/// does not; `None` when they give nothing.
pub(super) fn profile() -> Option<Profile> {
    let name = var("AWS_PROFILE").unwrap_or_else(|| "default".to_string());
    let mut p = Profile {
        name: name.clone(),
        keys_from: None,
        access_key_id: None,
        secret_access_key: None,
        session_token: None,
        region: None,
    };
    let config_section = if name == "default" {
        name.clone()
    } else {
        format!("profile {name}")
    };
    let credentials = file("AWS_SHARED_CREDENTIALS_FILE", "credentials")
        .and_then(|f| section(&f, &name).map(|s| (f, s)));
    let config = file("AWS_CONFIG_FILE", "config")
        .and_then(|f| section(&f, &config_section).map(|s| (f, s)));
    if var("AWS_ACCESS_KEY_ID").is_none() {
        // The credentials file first, as the AWS tools read it; the config file may hold keys too.
        for (f, s) in credentials.iter().chain(config.iter()) {
            if let (Some(id), Some(secret)) =
                (s.get("aws_access_key_id"), s.get("aws_secret_access_key"))
                && !id.is_empty()
                && !secret.is_empty()
            {
                p.access_key_id = Some(id.clone());
                p.secret_access_key = Some(secret.clone());
                p.session_token = s
                    .get("aws_session_token")
                    .filter(|t| !t.is_empty())
                    .cloned();
                p.keys_from = Some(f.clone());
                break;
            }
        }
        if p.keys_from.is_none()
            && let Some((f, s)) = &config
            && [
                "credential_process",
                "sso_session",
                "sso_start_url",
                "role_arn",
            ]
            .iter()
            .any(|k| s.contains_key(*k))
        {
            log::info!(
                "AWS profile {name} in {} gets its credentials another way, which stepman does \
                 not follow; export them (aws configure export-credentials --format env)",
                f.display()
            );
        }
    }
    if var("AWS_REGION").is_none() && var("AWS_DEFAULT_REGION").is_none() {
        p.region = config
            .as_ref()
            .and_then(|(_, s)| s.get("region"))
            .filter(|r| !r.is_empty())
            .cloned();
    }
    (p.keys_from.is_some() || p.region.is_some()).then_some(p)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_section_is_read_without_quotes_or_escapes() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("credentials");
        std::fs::write(
            &f,
            "[default]\naws_access_key_id = AKIDEFAULT\n\n[ci]\n# a comment\naws_access_key_id=AKICI\naws_secret_access_key = se\\cr/et+\"q\"\n",
        )
        .unwrap();
        let ci = section(&f, "ci").unwrap();
        assert_eq!(
            ci.get("aws_access_key_id").map(String::as_str),
            Some("AKICI")
        );
        assert_eq!(
            ci.get("aws_secret_access_key").map(String::as_str),
            Some("se\\cr/et+\"q\"")
        );
        assert!(section(&f, "other").is_none());
        assert!(section(&d.path().join("missing"), "ci").is_none());
    }

    #[test]
    fn nested_config_settings_do_not_stop_the_parse() {
        let d = tempfile::tempdir().unwrap();
        let f = d.path().join("config");
        std::fs::write(
            &f,
            "[profile ci]\nregion = eu-west-1\ns3 =\n  max_concurrent_requests = 20\n  addressing_style = path\n",
        )
        .unwrap();
        let s = section(&f, "profile ci").unwrap();
        assert_eq!(s.get("region").map(String::as_str), Some("eu-west-1"));
        assert!(!s.contains_key("max_concurrent_requests"), "{s:?}");
        assert_eq!(s.get("s3").map(String::as_str), Some(""));
    }
}
