//! The netrc parser (`$NETRC`, `~/.netrc`: a file any program on the machine may have written).
//! The input is `host`, a NUL, then the netrc text. Checks: nothing panics; a file is refused
//! or read whatever the host asked for (a syntax error is the file's, not the lookup's); an
//! entry written with every token quoted and escaped (the host, login and password taken from
//! the rest of the input, split at NULs) reads back exactly, before any `default` and after
//! the fuzzed text's own entries when those parse.

#![no_main]

use libfuzzer_sys::fuzz_target;
use stepman::fuzzing;

/// `s` as a quoted netrc token.
fn quote(s: &str) -> String {
    let mut q = String::from("\"");
    for c in s.chars() {
        match c {
            '"' => q.push_str("\\\""),
            '\\' => q.push_str("\\\\"),
            '\n' => q.push_str("\\n"),
            '\r' => q.push_str("\\r"),
            '\t' => q.push_str("\\t"),
            c => q.push(c),
        }
    }
    q.push('"');
    q
}

fuzz_target!(|data: &[u8]| {
    let Ok(input) = std::str::from_utf8(data) else {
        return;
    };
    let (host, text) = input.split_once('\0').unwrap_or(("h", input));
    let got = fuzzing::netrc_lookup(text, host);
    let other = fuzzing::netrc_lookup(text, "another.example");
    assert_eq!(got.is_err(), other.is_err(), "{text:?}");

    let mut parts = input.split('\0');
    let (Some(host), Some(login), Some(password)) = (parts.next(), parts.next(), parts.next())
    else {
        return;
    };
    let entry = format!(
        "machine {} login {} password {}\n",
        quote(host),
        quote(login),
        quote(password)
    );
    let want = Some((login.to_string(), password.to_string()));
    let alone = format!("{entry}default login d password dp\n");
    assert_eq!(fuzzing::netrc_lookup(&alone, host), Ok(want.clone()), "{alone:?}");
    // After more fuzzed text that has no entry for the host (nor a default) and leaves no quote
    // or macro body open: still found.
    let rest = parts.next().unwrap_or_default();
    if fuzzing::netrc_lookup(rest, host) == Ok(None)
        && !rest.contains('"')
        && !rest.to_ascii_lowercase().contains("macdef")
    {
        let after = format!("{rest}\n\n{entry}");
        assert_eq!(fuzzing::netrc_lookup(&after, host), Ok(want), "{after:?}");
    }
});
