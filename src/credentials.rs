//! Credentials for private StepLibs and storage: taken from the URL's userinfo or from a netrc
//! (`$NETRC`, else `~/.netrc`), held in memory only.
//!
//! Invariants: a credential is never written to disk (URLs are stored and shown with their
//! userinfo removed; git receives it through its environment, not its config file or the remote
//! URL), never printed (its `Debug` is redacted), and sent only to the host it belongs to (HTTP
//! redirects drop the `Authorization` header).

use std::fmt;

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
        format!(
            "Basic {}",
            base64(format!("{}:{}", self.user, self.secret).as_bytes())
        )
    }
}

fn base64(data: &[u8]) -> String {
    const T: &[u8; 64] = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    let mut out = String::with_capacity(data.len().div_ceil(3) * 4);
    for chunk in data.chunks(3) {
        let b = [
            chunk[0],
            *chunk.get(1).unwrap_or(&0),
            *chunk.get(2).unwrap_or(&0),
        ];
        let n = (u32::from(b[0]) << 16) | (u32::from(b[1]) << 8) | u32::from(b[2]);
        for i in 0..4 {
            if i <= chunk.len() {
                out.push(T[((n >> (18 - 6 * i)) & 63) as usize] as char);
            } else {
                out.push('=');
            }
        }
    }
    out
}

fn percent_decode(s: &str) -> String {
    let b = s.as_bytes();
    let mut out = Vec::with_capacity(b.len());
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%'
            && i + 2 < b.len()
            && let Ok(v) =
                u8::from_str_radix(std::str::from_utf8(&b[i + 1..i + 3]).unwrap_or("zz"), 16)
        {
            out.push(v);
            i += 3;
            continue;
        }
        out.push(b[i]);
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// Splits `scheme://user:secret@host/…` into the URL without userinfo and the credential.
pub fn split_userinfo(url: &str) -> (String, Option<Credential>) {
    let Some((scheme, rest)) = url.split_once("://") else {
        return (url.to_string(), None);
    };
    let authority_end = rest.find(['/', '?', '#']).unwrap_or(rest.len());
    let (authority, path) = rest.split_at(authority_end);
    let Some((userinfo, host)) = authority.rsplit_once('@') else {
        return (url.to_string(), None);
    };
    let (user, secret) = userinfo.split_once(':').unwrap_or((userinfo, ""));
    let cred = Credential {
        user: percent_decode(user),
        secret: percent_decode(secret),
    };
    (format!("{scheme}://{host}{path}"), Some(cred))
}

/// The URL as it may be shown or stored: userinfo removed.
pub fn redact(url: &str) -> String {
    split_userinfo(url).0
}

/// The host of an `http(s)://` URL.
fn host_of(url: &str) -> Option<&str> {
    let rest = url.split_once("://")?.1;
    let authority = &rest[..rest.find(['/', '?', '#']).unwrap_or(rest.len())];
    let host = authority.rsplit_once('@').map_or(authority, |(_, h)| h);
    Some(host.split(':').next().unwrap_or(host))
}

/// The credential for `url`: its own userinfo, else the netrc entry of its host.
pub(crate) fn for_url(url: &str) -> (String, Option<Credential>) {
    let (clean, cred) = split_userinfo(url);
    if cred.is_some() {
        return (clean, cred);
    }
    let cred = host_of(&clean).and_then(netrc_lookup);
    (clean, cred)
}

fn netrc_lookup(host: &str) -> Option<Credential> {
    // An empty NETRC or HOME counts as unset (never `./.netrc`).
    let set = |k: &str| std::env::var_os(k).filter(|v| !v.is_empty());
    let path = set("NETRC")
        .map(std::path::PathBuf::from)
        .or_else(|| set("HOME").map(|h| std::path::Path::new(&h).join(".netrc")))?;
    let text = std::fs::read_to_string(path).ok()?;
    parse_netrc(&text, host)
}

/// Finds `host` (or `default`) in netrc text.
pub(crate) fn parse_netrc(text: &str, host: &str) -> Option<Credential> {
    let mut tokens = text.split_whitespace();
    let mut found: Option<Credential> = None;
    let mut default: Option<Credential> = None;
    let mut current: Option<(bool, Credential)> = None;
    let finish = |cur: Option<(bool, Credential)>,
                  found: &mut Option<Credential>,
                  default: &mut Option<Credential>| {
        if let Some((is_default, c)) = cur {
            if is_default {
                default.get_or_insert(c);
            } else {
                found.get_or_insert(c);
            }
        }
    };
    while let Some(t) = tokens.next() {
        match t {
            "machine" => {
                finish(current.take(), &mut found, &mut default);
                let m = tokens.next()?;
                if m == host {
                    current = Some((
                        false,
                        Credential {
                            user: String::new(),
                            secret: String::new(),
                        },
                    ));
                }
            }
            "default" => {
                finish(current.take(), &mut found, &mut default);
                current = Some((
                    true,
                    Credential {
                        user: String::new(),
                        secret: String::new(),
                    },
                ));
            }
            "login" => {
                let v = tokens.next()?;
                if let Some((_, c)) = current.as_mut() {
                    c.user = v.to_string();
                }
            }
            "password" => {
                let v = tokens.next()?;
                if let Some((_, c)) = current.as_mut() {
                    c.secret = v.to_string();
                }
            }
            "account" | "macdef" => {
                tokens.next();
            }
            _ => {}
        }
    }
    finish(current.take(), &mut found, &mut default);
    found.or(default)
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
    fn basic_header() {
        let c = Credential {
            user: "Aladdin".into(),
            secret: "open sesame".into(),
        };
        assert_eq!(c.basic_header(), "Basic QWxhZGRpbjpvcGVuIHNlc2FtZQ==");
    }

    #[test]
    fn netrc() {
        let t = "machine a.example login u1 password p1\nmachine b.example\n login u2\n password p2\ndefault login d password dp\n";
        assert_eq!(
            parse_netrc(t, "b.example"),
            Some(Credential {
                user: "u2".into(),
                secret: "p2".into()
            })
        );
        assert_eq!(
            parse_netrc(t, "c.example"),
            Some(Credential {
                user: "d".into(),
                secret: "dp".into()
            })
        );
        assert_eq!(parse_netrc("machine x login a password b", "y"), None);
    }
}
