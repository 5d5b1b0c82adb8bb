//! `classify_git_url` (a step's `source.git`, from any StepLib): never panics; nothing it lets
//! through could be read by git as an option, a remote helper or a control sequence, and what
//! it calls the network is never a path or `file://`.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stepman::fuzzing;

fuzz_target!(|data: &[u8]| {
    let Ok(url) = std::str::from_utf8(data) else {
        return;
    };
    let Ok(local) = fuzzing::classify_git_url(url) else {
        return;
    };
    assert!(!url.is_empty() && !url.starts_with('-'), "{url:?} accepted");
    assert!(!url.chars().any(char::is_control), "{url:?} accepted");
    let helper = url.split_once("::").is_some_and(|(h, _)| {
        !h.is_empty() && h.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
    });
    assert!(!helper, "remote helper {url:?} accepted");
    let lower = url.to_ascii_lowercase();
    if lower.starts_with("file://") {
        assert!(local, "{url:?} is local");
    }
    if !local {
        // The network: a URL with a scheme git speaks, or scp-like `host:path`.
        let scp = url.find(':').is_some_and(|c| url.find('/').is_none_or(|s| c < s));
        assert!(lower.contains("://") || scp, "{url:?} as the network");
        let scheme_chars = |s: &str| {
            s.starts_with(|c: char| c.is_ascii_alphabetic())
                && s.bytes().all(|b| b.is_ascii_alphanumeric() || b"+-.".contains(&b))
        };
        let host = match url.split_once("://") {
            Some((scheme, rest)) if scheme_chars(scheme) => rest,
            _ => url.split(':').next().unwrap_or_default(),
        };
        let host = host.split('/').next().unwrap_or_default();
        let host = host.rsplit_once('@').map_or(host, |(_, h)| h);
        assert!(!host.starts_with('-'), "host of {url:?} starts with '-'");
    }
});
