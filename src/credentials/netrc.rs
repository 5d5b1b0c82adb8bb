//! The netrc file, read as curl reads it.
//!
//! Our own parser, not a crate: none on crates.io is maintained (checked 2026-12 with
//! `cargo info` and the index: `netrc` 0.4.1 is from 2015, `netrc-rs` 0.1.2 from 2020,
//! `rust-netrc` 0.1.2 from 2024-10 and it takes backslash escapes outside quotes, unlike curl,
//! and pulls in `thiserror` 1 and `shellexpand`). The syntax is small:
//!
//! - Tokens are separated by any whitespace, newlines included: an entry may span lines or
//!   share one with others. Keywords are matched in any case.
//! - A token that starts with `"` is quoted: it runs to the next `"` that is not escaped, and may
//!   hold whitespace, `#` and newlines. In it `\n`, `\r` and `\t` are a newline, a carriage
//!   return and a tab, and `\` before any other character is that character (`\"`, `\\`).
//!   Outside quotes a backslash is an ordinary character.
//! - A token that starts with `#` (unquoted) starts a comment, to the end of its line (so a
//!   password that starts with `#` must be quoted, as for curl).
//! - `machine NAME` starts the entry of host `NAME` (matched in any case); `default` starts the
//!   entry for every host. `login`, `password` and `account` take the next token as their value
//!   (`account` is read and not used). Other tokens are ignored.
//! - `macdef NAME` defines a macro: the rest of its line and every following line up to the next
//!   blank one (or the end of the file) are its body, skipped. It ends the entry it is in.
//! - The first `machine` entry of the host wins, else the first `default` (which the format puts
//!   last).
//! - A quote left open or a keyword without its value makes the whole file unusable (curl
//!   refuses such a file too): [`NetrcError`] says where.

use super::Credential;

/// Why a netrc cannot be used.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub(crate) enum NetrcError {
    /// A `"` without its closing `"` (or a `\` at the very end of the file inside one).
    #[error("line {line}: a quoted token is not closed")]
    OpenQuote {
        /// The line the quote opens on (1-based).
        line: usize,
    },
    /// `machine`, `login`, `password`, `account` or `macdef` at the end of the file.
    #[error("line {line}: `{keyword}` without its value")]
    MissingValue {
        /// The keyword, as the format spells it.
        keyword: &'static str,
        /// Its line (1-based).
        line: usize,
    },
}

/// One token and the line it starts on.
struct Token {
    text: String,
    line: usize,
}

/// Splits netrc text into tokens, skipping comments, and skips macro bodies on request.
struct Lexer<'a> {
    rest: &'a str,
    line: usize,
}

impl<'a> Lexer<'a> {
    fn new(text: &'a str) -> Lexer<'a> {
        Lexer {
            rest: text,
            line: 1,
        }
    }

    /// Moves `n` bytes on (`n` is on a character boundary), counting lines.
    fn advance(&mut self, n: usize) {
        let (gone, rest) = self.rest.split_at(n);
        self.line += gone.matches('\n').count();
        self.rest = rest;
    }

    /// Moves past the end of the current line (its `\n` included).
    fn skip_line(&mut self) {
        let n = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
        self.advance(n);
    }

    /// Skips a macro body: the rest of the current line, then every line up to and including
    /// the next blank one (empty or only whitespace), or to the end.
    fn skip_macro_body(&mut self) {
        self.skip_line();
        while !self.rest.is_empty() {
            let end = self.rest.find('\n').map_or(self.rest.len(), |i| i + 1);
            let blank = self.rest[..end].trim().is_empty();
            self.advance(end);
            if blank {
                break;
            }
        }
    }

    /// The next token, `None` at the end.
    fn token(&mut self) -> Result<Option<Token>, NetrcError> {
        loop {
            let space = self.rest.len() - self.rest.trim_start().len();
            self.advance(space);
            let line = self.line;
            match self.rest.chars().next() {
                None => return Ok(None),
                Some('#') => self.skip_line(),
                Some('"') => return self.quoted(line).map(Some),
                Some(_) => {
                    let n = self
                        .rest
                        .find(char::is_whitespace)
                        .unwrap_or(self.rest.len());
                    let text = self.rest[..n].to_string();
                    self.advance(n);
                    return Ok(Some(Token { text, line }));
                }
            }
        }
    }

    /// A quoted token; `self.rest` starts at its opening `"`.
    fn quoted(&mut self, line: usize) -> Result<Token, NetrcError> {
        let mut text = String::new();
        let mut chars = self.rest.char_indices().skip(1);
        while let Some((i, c)) = chars.next() {
            match c {
                '"' => {
                    self.advance(i + 1);
                    return Ok(Token { text, line });
                }
                '\\' => match chars.next() {
                    Some((_, 'n')) => text.push('\n'),
                    Some((_, 'r')) => text.push('\r'),
                    Some((_, 't')) => text.push('\t'),
                    Some((_, e)) => text.push(e),
                    None => break,
                },
                c => text.push(c),
            }
        }
        Err(NetrcError::OpenQuote { line })
    }

    /// The value of `keyword` (the next token, whatever it is).
    fn value(&mut self, keyword: &'static str, line: usize) -> Result<String, NetrcError> {
        Ok(self
            .token()?
            .ok_or(NetrcError::MissingValue { keyword, line })?
            .text)
    }
}

/// Which hosts an entry is for.
#[derive(PartialEq, Eq)]
enum Machine {
    /// `machine NAME`.
    Named(String),
    /// `default`.
    Default,
}

/// An entry being read.
struct Entry {
    machine: Machine,
    login: String,
    password: String,
}

/// The credential netrc `text` holds for `host`: its first `machine` entry for the host, else
/// its first `default`; `Ok(None)` when neither is there.
pub(crate) fn lookup(text: &str, host: &str) -> Result<Option<Credential>, NetrcError> {
    let mut lexer = Lexer::new(text);
    let mut entries: Vec<Entry> = Vec::new();
    // Whether the last entry is still open (a `macdef` closes it).
    let mut open = false;
    while let Some(Token { text, line }) = lexer.token()? {
        let current = if open { entries.last_mut() } else { None };
        match text.to_ascii_lowercase().as_str() {
            "machine" => {
                let name = lexer.value("machine", line)?;
                entries.push(Entry {
                    machine: Machine::Named(name),
                    login: String::new(),
                    password: String::new(),
                });
                open = true;
            }
            "default" => {
                entries.push(Entry {
                    machine: Machine::Default,
                    login: String::new(),
                    password: String::new(),
                });
                open = true;
            }
            "login" => {
                let v = lexer.value("login", line)?;
                if let Some(e) = current {
                    e.login = v;
                }
            }
            "password" => {
                let v = lexer.value("password", line)?;
                if let Some(e) = current {
                    e.password = v;
                }
            }
            "account" => {
                lexer.value("account", line)?;
            }
            "macdef" => {
                lexer.value("macdef", line)?;
                lexer.skip_macro_body();
                open = false;
            }
            _ => {}
        }
    }
    let named = entries
        .iter()
        .position(|e| matches!(&e.machine, Machine::Named(m) if m.eq_ignore_ascii_case(host)));
    let chosen = named.or_else(|| entries.iter().position(|e| e.machine == Machine::Default));
    Ok(chosen.map(|i| {
        let e = entries.swap_remove(i);
        Credential {
            user: e.login,
            secret: e.password,
        }
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cred(user: &str, secret: &str) -> Option<Credential> {
        Some(Credential {
            user: user.into(),
            secret: secret.into(),
        })
    }

    #[test]
    fn entries_on_one_line_or_many_and_the_default() {
        let t = "machine a.example login u1 password p1\nmachine b.example\n login u2\n\tpassword p2\ndefault login d password dp\n";
        assert_eq!(lookup(t, "a.example"), Ok(cred("u1", "p1")));
        assert_eq!(lookup(t, "b.example"), Ok(cred("u2", "p2")));
        assert_eq!(lookup(t, "c.example"), Ok(cred("d", "dp")));
        assert_eq!(lookup("machine x login a password b", "y"), Ok(None));
        assert_eq!(lookup("", "y"), Ok(None));
    }

    #[test]
    fn the_first_entry_of_the_host_wins_and_a_machine_beats_the_default() {
        let t = "default login d password dp machine h login u1 password p1 machine h login u2 password p2";
        assert_eq!(lookup(t, "h"), Ok(cred("u1", "p1")));
        assert_eq!(lookup(t, "other"), Ok(cred("d", "dp")));
    }

    #[test]
    fn hosts_and_keywords_match_in_any_case() {
        let t = "MACHINE Example.COM LOGIN u PassWord p";
        assert_eq!(lookup(t, "example.com"), Ok(cred("u", "p")));
    }

    #[test]
    fn tokens_split_on_any_whitespace() {
        let t = "machine\th\r\nlogin\x0cu\u{a0}password  \n\n p";
        assert_eq!(lookup(t, "h"), Ok(cred("u", "p")));
    }

    #[test]
    fn quoted_tokens_hold_spaces_hashes_and_escapes() {
        let t = r#"machine "h" login "a user" password "p \"q\" \\ #x\ty\nz\rw \e""#;
        assert_eq!(
            lookup(t, "h"),
            Ok(cred("a user", "p \"q\" \\ #x\ty\nz\rw e"))
        );
        // A quoted token may span lines and ends at its quote, whatever follows.
        assert_eq!(
            lookup("machine h password \"a\nb\"login u", "h"),
            Ok(cred("u", "a\nb"))
        );
        assert_eq!(lookup(r#"machine h password """#, "h"), Ok(cred("", "")));
        // Outside quotes a backslash and a quote are ordinary characters.
        assert_eq!(
            lookup(r#"machine h login a\nb password p"q"#, "h"),
            Ok(cred(r"a\nb", r#"p"q"#))
        );
    }

    #[test]
    fn comments_run_to_the_end_of_the_line() {
        let t = "# machine h login x password y\nmachine h # login c password c\n login u password p#not-a-comment\n";
        assert_eq!(lookup(t, "h"), Ok(cred("u", "p#not-a-comment")));
        assert_eq!(
            lookup("machine h login u password #secret", "h"),
            Err(NetrcError::MissingValue {
                keyword: "password",
                line: 1
            })
        );
        assert_eq!(
            lookup(r##"machine h login u password "#secret""##, "h"),
            Ok(cred("u", "#secret"))
        );
    }

    #[test]
    fn macdef_skips_its_body_up_to_a_blank_line() {
        let t = "machine a login u password p\nmacdef init\nmachine h login evil password evil\ncd /\n  \t\nmachine h login u2 password p2\n";
        assert_eq!(lookup(t, "h"), Ok(cred("u2", "p2")));
        assert_eq!(lookup(t, "a"), Ok(cred("u", "p")));
        // A macdef ends its entry: a login after its body belongs to no entry.
        let t = "machine h login u\nmacdef m\nbody\n\npassword p\n";
        assert_eq!(lookup(t, "h"), Ok(cred("u", "")));
        // A body that runs to the end of the file.
        assert_eq!(
            lookup("macdef m\nmachine h login u password p", "h"),
            Ok(None)
        );
    }

    #[test]
    fn account_is_read_and_not_used() {
        let t = "machine h account login login u password p";
        assert_eq!(lookup(t, "h"), Ok(cred("u", "p")));
    }

    #[test]
    fn a_broken_file_is_refused_with_its_line() {
        assert_eq!(
            lookup("machine h login u\npassword \"open", "h"),
            Err(NetrcError::OpenQuote { line: 2 })
        );
        assert_eq!(
            lookup("machine h password \"ends in a backslash\\", "h"),
            Err(NetrcError::OpenQuote { line: 1 })
        );
        assert_eq!(
            lookup("machine h login u\n\nmachine", "h"),
            Err(NetrcError::MissingValue {
                keyword: "machine",
                line: 3
            })
        );
        assert_eq!(
            NetrcError::OpenQuote { line: 2 }.to_string(),
            "line 2: a quoted token is not closed"
        );
    }
}
