//! Credentials for private StepLibs and storage: taken from the URL's userinfo or from a netrc
//! (`$NETRC`, else `~/.netrc`), held in memory only.
//!
//! Invariants: a credential is never written to disk (URLs are stored and shown with their
//! userinfo removed; git receives it through its environment, not its config file or the remote
//! URL), never printed (its `Debug` is redacted), and sent only to the host it belongs to (HTTP
//! redirects drop the `Authorization` header).

use std::fmt;

mod netrc;

/// A user name and a secret.
#[derive(Clone, PartialEq, Eq)]
pub struct Credential {
    user: String,
    secret: String,
}

impl fmt::Debug for Credential {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("Credential(<redacted>)")
    }
}

impl Credential {
    /// `Basic <base64(user:secret)>`.
    pub(crate) fn basic_header(&self) -> String {
        use base64::Engine as _;
        let pair = format!("{}:{}", self.user, self.secret);
        format!(
            "Basic {}",
            base64::engine::general_purpose::STANDARD.encode(pair)
        )
    }
}

/// A userinfo part as the credential it spells (`%40` is `@`; invalid UTF-8 is replaced).
fn decode(part: &str) -> String {
    percent_encoding::percent_decode_str(part)
        .decode_utf8_lossy()
        .into_owned()
}

/// Where the userinfo of `url` (with its `@`) lies in the text: after `scheme://`, up to the
/// last `@` of the authority.
fn userinfo_span(url: &str) -> Option<std::ops::Range<usize>> {
    let start = url.find("://")? + 3;
    let rest = &url[start..];
    let authority = &rest[..rest.find(['/', '\\', '?', '#']).unwrap_or(rest.len())];
    let at = authority.rfind('@')?;
    Some(start..start + at + 1)
}

/// Splits `scheme://user:secret@host/…` into the URL without userinfo and the credential.
///
/// The URL is read as [`url::Url`] reads it (the WHATWG URL standard). The URL returned keeps the
/// caller's spelling (a collection's URI is its key) with only the userinfo cut out, unless that
/// text would read differently: then it is the parsed URL's own serialization without userinfo.
/// A string that is not a URL (a path, `git@host:repo`) comes back as it is, except that
/// anything between `://` and the authority's last `@` is still taken as a userinfo and removed.
pub fn split_userinfo(url: &str) -> (String, Option<Credential>) {
    let Ok(parsed) = url::Url::parse(url) else {
        // Not a URL ureq or git could use as one; still never shown with its userinfo.
        let Some(span) = userinfo_span(url) else {
            return (url.to_string(), None);
        };
        let userinfo = &url[span.start..span.end - 1];
        let (user, secret) = userinfo.split_once(':').unwrap_or((userinfo, ""));
        let cred = Credential {
            user: decode(user),
            secret: decode(secret),
        };
        let clean = format!("{}{}", &url[..span.start], &url[span.end..]);
        return (clean, Some(cred));
    };
    if parsed.username().is_empty() && parsed.password().is_none() {
        return (url.to_string(), None);
    }
    let cred = Credential {
        user: decode(parsed.username()),
        secret: parsed.password().map(decode).unwrap_or_default(),
    };
    let mut bare = parsed;
    // A URL with a userinfo has a host, so both always succeed.
    let _ = bare.set_username("");
    let _ = bare.set_password(None);
    let cut = userinfo_span(url)
        .map(|span| format!("{}{}", &url[..span.start], &url[span.end..]))
        .filter(|cut| url::Url::parse(cut).is_ok_and(|u| u == bare));
    (cut.unwrap_or_else(|| bare.into()), Some(cred))
}

/// The URL as it may be shown or stored: userinfo removed.
pub fn redact(url: &str) -> String {
    split_userinfo(url).0
}

/// The host of a URL as a netrc names it: a domain or an IP address, an IPv6 address without
/// its brackets (as curl matches it: `machine ::1` for `http://[::1]:8080/`).
fn host_of(url: &str) -> Option<String> {
    match url::Url::parse(url).ok()?.host()? {
        url::Host::Domain(d) => Some(d.to_string()),
        url::Host::Ipv4(a) => Some(a.to_string()),
        url::Host::Ipv6(a) => Some(a.to_string()),
    }
}

/// The credential for `url`: its own userinfo, else the netrc entry of its host.
pub(crate) fn for_url(url: &str) -> (String, Option<Credential>) {
    let (clean, cred) = split_userinfo(url);
    if cred.is_some() {
        return (clean, cred);
    }
    let cred = host_of(&clean).and_then(|h| netrc_lookup(&h));
    (clean, cred)
}

/// The netrc entry of `host`, from `$NETRC`, else `~/.netrc`. A netrc that cannot be read (other
/// than a missing one) or parsed gives nothing, with a warning that names it and says why.
fn netrc_lookup(host: &str) -> Option<Credential> {
    // An empty NETRC or HOME counts as unset (never `./.netrc`).
    let set = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let path = set("NETRC")
        .map(std::path::PathBuf::from)
        .or_else(|| set("HOME").map(|h| std::path::Path::new(&h).join(".netrc")))?;
    let text = match std::fs::read_to_string(&path) {
        Ok(t) => t,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => return None,
        Err(e) => {
            log::warn!("netrc {} not used: read: {e}", path.display());
            return None;
        }
    };
    netrc::lookup(&text, host).unwrap_or_else(|e| {
        log::warn!("netrc {} not used: {e}", path.display());
        None
    })
}

/// [`netrc::lookup`] for the fuzz targets: `(login, password)`.
pub(crate) fn netrc_pair(text: &str, host: &str) -> Result<Option<(String, String)>, String> {
    netrc::lookup(text, host)
        .map(|c| c.map(|c| (c.user, c.secret)))
        .map_err(|e| e.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn userinfo_is_split_and_redacted() {
        let (u, c) = split_userinfo("https://bot:s3cr%40t@example.com/lib.git");
        assert_eq!(u, "https://example.com/lib.git");
        assert_eq!(
            c,
            Some(Credential {
                user: "bot".into(),
                secret: "s3cr@t".into()
            })
        );
        assert_eq!(redact("https://example.com/a@b"), "https://example.com/a@b");
        assert!(!format!("{c:?}").contains("s3cr"));
    }

    #[test]
    fn userinfo_is_cut_out_of_the_url_as_spelled() {
        let cred = |u: &str, s: &str| {
            Some(Credential {
                user: u.into(),
                secret: s.into(),
            })
        };
        // The rest of the URL keeps its spelling (a collection's URI is its key).
        assert_eq!(
            split_userinfo("HTTPS://u:p@Example.COM:443/A/../b?q#f"),
            ("HTTPS://Example.COM:443/A/../b?q#f".into(), cred("u", "p"))
        );
        assert_eq!(
            split_userinfo("https://example.com/x"),
            ("https://example.com/x".into(), None)
        );
        // A user only; a secret only; the last `@` of the authority ends the userinfo.
        assert_eq!(
            split_userinfo("ssh://git@h/r.git"),
            ("ssh://h/r.git".into(), cred("git", ""))
        );
        assert_eq!(
            split_userinfo("https://:t%3Ak@h/"),
            ("https://h/".into(), cred("", "t:k"))
        );
        assert_eq!(
            split_userinfo("https://a@b:c@h/"),
            ("https://h/".into(), cred("a@b", "c"))
        );
        // Read as a URL where the text alone would not show the userinfo: the URL's own form.
        assert_eq!(
            split_userinfo("http:u:p@h/x"),
            ("http://h/x".into(), cred("u", "p"))
        );
        // Not a URL: as it was, or with what looks like a userinfo removed.
        assert_eq!(split_userinfo("/a/b@c"), ("/a/b@c".into(), None));
        assert_eq!(
            split_userinfo("git@github.com:o/r.git"),
            ("git@github.com:o/r.git".into(), None)
        );
        assert_eq!(
            split_userinfo("https://u:p@bad host/x"),
            ("https://bad host/x".into(), cred("u", "p"))
        );
    }

    #[test]
    fn the_netrc_host_of_a_url() {
        assert_eq!(host_of("http://[::1]:8773/x").as_deref(), Some("::1"));
        assert_eq!(
            host_of("https://[0:0::1]/x").as_deref(),
            Some("::1"),
            "compressed"
        );
        assert_eq!(
            host_of("http://127.0.0.1:80/").as_deref(),
            Some("127.0.0.1")
        );
        assert_eq!(
            host_of("https://Example.COM/").as_deref(),
            Some("example.com")
        );
        assert_eq!(host_of("file:///etc/passwd"), None);
        assert_eq!(host_of("/etc/passwd"), None);
    }

    #[test]
    fn basic_header() {
        let c = Credential {
            user: "Aladdin".into(),
            secret: "open sesame".into(),
        };
        assert_eq!(c.basic_header(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }
}
