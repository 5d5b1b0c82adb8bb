//! What the object-store fixtures (moto's S3 server in s3.rs, Azurite in azurite.rs) share: a
//! server process on a loopback port that never outlives the test binary, the tests' view of a
//! remote tier ([`Tier`]), and the small HTTP and XML helpers of their plain requests.
//!
//! A [`Daemon`] runs behind a wrapper shell whose stdin is a pipe this process holds: when the
//! process exits, however it exits, the pipe closes and the wrapper kills the server, so no server
//! outlives its tests (a shared one sits in a static, which is never dropped).

use std::io::{BufRead, BufReader};
use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, ChildStdin, Command, Stdio};
use std::thread;
use std::time::{Duration, Instant};

/// How long a server may take to answer after it is started (moto takes about half a second,
/// Azurite about one).
const STARTUP: Duration = Duration::from_secs(30);
/// Starts tried (each on a fresh port) before giving up: another process may take the free
/// port between our picking it and the server binding it.
const ATTEMPTS: usize = 3;
/// How long a stopped server may take to exit and free its port.
const SHUTDOWN: Duration = Duration::from_secs(10);
/// The largest response body [`expect_status`] reads.
const MAX_BODY: u64 = 1 << 30;

/// Runs the server (`$2…`) with its output in `$1/log`; prints its pid; kills it (and waits for
/// it) when stdin closes, and removes `$1`. A background job's stdin is `/dev/null` in a
/// non-interactive shell, so only `cat` reads the pipe.
const WRAPPER: &str = r#"dir="$1"
shift
"$@" >"$dir/log" 2>&1 </dev/null &
pid=$!
echo "$pid"
cat >/dev/null
kill "$pid" 2>/dev/null
wait "$pid"
rm -rf "$dir""#;

/// A remote tier's server as the fleet tests see it: fresh buckets (containers), the URL and
/// environment that point `stepman` at one, and plain reads and writes of its keys.
pub(crate) trait Tier {
    /// Creates a fresh bucket whose name starts with `prefix` (sanitised) and returns its name.
    fn bucket(&self, prefix: &str) -> String;
    /// The `STEPMAN_REMOTE` URL of `prefix` in `bucket` (`s3://…`, `az://…`).
    fn remote(&self, bucket: &str, prefix: &str) -> String;
    /// Points `cmd` at this server with test credentials.
    fn env(&self, cmd: &mut Command);
    /// Every key in `bucket` that starts with `prefix`, in lexicographic order.
    fn keys(&self, bucket: &str, prefix: &str) -> Vec<String>;
    /// The body of `bucket/key`, or `None` when there is no such object.
    fn get(&self, bucket: &str, key: &str) -> Option<Vec<u8>>;
    /// Stores `body` as `bucket/key`, over whatever is there (a test corrupting an object).
    fn put(&self, bucket: &str, key: &str, body: &[u8]);
}

/// A server process on `127.0.0.1:port` behind the [`WRAPPER`]; dropping it stops it.
pub(crate) struct Daemon {
    name: &'static str,
    port: u16,
    /// The server's own pid (the wrapper's child).
    pid: u32,
    wrapper: Child,
    /// The wrapper's stdin: closing it stops the server. `None` once stopped.
    gate: Option<ChildStdin>,
    dir: PathBuf,
}

/// How [`Daemon::start`] runs one attempt: the program and its arguments for a port, and what
/// must hold before the server counts as started.
pub(crate) struct Recipe<'a> {
    /// The server's name in messages.
    pub(crate) name: &'static str,
    pub(crate) program: &'a Path,
    /// The arguments, given the port and the server's own directory (removed when it stops).
    pub(crate) args: &'a dyn Fn(u16, &Path) -> Vec<String>,
    /// Files to write into the server's directory first, and variables to set.
    pub(crate) files: &'a [(&'a str, &'a str)],
    pub(crate) env: &'a dyn Fn(&Path) -> Vec<(String, String)>,
    /// True once the server is ready, given its port and what it has logged so far.
    pub(crate) ready: &'a dyn Fn(u16, &str) -> bool,
}

impl Daemon {
    /// Starts the server `r` describes on a fresh port, retried on another port when an attempt
    /// fails; the error says what each attempt saw.
    pub(crate) fn start(r: &Recipe<'_>) -> Result<Daemon, String> {
        let mut failures = Vec::new();
        for _ in 0..ATTEMPTS {
            match Daemon::start_once(r) {
                Ok(d) => return Ok(d),
                Err(e) => failures.push(e),
            }
        }
        Err(format!(
            "{} did not start in {ATTEMPTS} attempts:\n{}",
            r.program.display(),
            failures.join("\n")
        ))
    }

    fn start_once(r: &Recipe<'_>) -> Result<Daemon, String> {
        let started = Instant::now();
        let port = free_port();
        let dir = std::env::temp_dir().join(format!(
            "stepman-test-{}-{}-{port}",
            r.name.to_ascii_lowercase(),
            std::process::id()
        ));
        std::fs::create_dir_all(&dir).map_err(|e| format!("cannot make {}: {e}", dir.display()))?;
        for (name, text) in r.files {
            std::fs::write(dir.join(name), text)
                .map_err(|e| format!("cannot write {name} in {}: {e}", dir.display()))?;
        }
        let mut wrapper = Command::new("sh")
            .arg("-c")
            .arg(WRAPPER)
            .arg("wrapper")
            .arg(&dir)
            .arg(r.program)
            .args((r.args)(port, &dir))
            .envs((r.env)(&dir))
            .stdin(Stdio::piped())
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .map_err(|e| format!("cannot run sh for {}: {e}", r.program.display()))?;
        let gate = wrapper.stdin.take();
        let mut line = String::new();
        let read = BufReader::new(
            wrapper
                .stdout
                .take()
                .expect("the wrapper's stdout is piped"),
        )
        .read_line(&mut line);
        let pid = line.trim().parse::<u32>();
        let mut daemon = Daemon {
            name: r.name,
            port,
            pid: *pid.as_ref().unwrap_or(&0),
            wrapper,
            gate,
            dir,
        };
        if read.is_err() || pid.is_err() {
            let _ = daemon.shutdown();
            return Err(format!(
                "the wrapper printed {line:?}, not {}'s pid ({read:?})",
                r.name
            ));
        }
        loop {
            if (r.ready)(port, &daemon.log()) {
                eprintln!(
                    "{} on 127.0.0.1:{port} answered after {:.2}s",
                    r.name,
                    started.elapsed().as_secs_f64()
                );
                return Ok(daemon);
            }
            let why = if !alive(daemon.pid) {
                "exited"
            } else if started.elapsed() > STARTUP {
                "did not answer in time"
            } else {
                thread::sleep(Duration::from_millis(50));
                continue;
            };
            let e = format!(
                "{} on 127.0.0.1:{port} {why} after {:.1}s; it said:\n{}",
                r.name,
                started.elapsed().as_secs_f64(),
                daemon.log()
            );
            let _ = daemon.shutdown();
            return Err(e);
        }
    }

    pub(crate) fn port(&self) -> u16 {
        self.port
    }

    /// What the server has printed so far.
    pub(crate) fn log(&self) -> String {
        std::fs::read_to_string(self.dir.join("log")).unwrap_or_default()
    }

    /// Stops the server: it is killed, and gone when this returns (its port refuses
    /// connections). Stopping it again does nothing.
    pub(crate) fn shutdown(&mut self) -> Result<(), String> {
        let Some(gate) = self.gate.take() else {
            return Ok(());
        };
        drop(gate); // the wrapper kills the server, waits for it and exits
        let deadline = Instant::now() + SHUTDOWN;
        let mut killed = false;
        loop {
            match self.wrapper.try_wait() {
                Ok(Some(_)) => break,
                Ok(None) if Instant::now() < deadline => thread::sleep(Duration::from_millis(20)),
                _ => {
                    // It did not stop in time: kill the server and its wrapper outright.
                    if self.pid != 0 {
                        let _ = Command::new("kill")
                            .args(["-KILL", &self.pid.to_string()])
                            .status();
                    }
                    let _ = self.wrapper.kill();
                    let _ = self.wrapper.wait();
                    let _ = std::fs::remove_dir_all(&self.dir);
                    killed = true;
                    break;
                }
            }
        }
        let deadline = Instant::now() + SHUTDOWN;
        while TcpStream::connect(("127.0.0.1", self.port)).is_ok() {
            if Instant::now() > deadline {
                return Err(format!(
                    "{} on 127.0.0.1:{} was stopped but its port still accepts connections \
                     after {SHUTDOWN:?}",
                    self.name, self.port
                ));
            }
            thread::sleep(Duration::from_millis(20));
        }
        if killed {
            return Err(format!(
                "{} on 127.0.0.1:{} did not exit in {SHUTDOWN:?} after its wrapper's stdin \
                 closed (killed)",
                self.name, self.port
            ));
        }
        Ok(())
    }
}

impl Drop for Daemon {
    fn drop(&mut self) {
        if let Err(e) = self.shutdown() {
            if thread::panicking() {
                eprintln!("{e}");
            } else {
                panic!("{e}");
            }
        }
    }
}

/// The plain HTTP client of a fixture's own requests: statuses are answers, no proxy, no
/// redirects, 30 s at most a request.
pub(crate) fn agent() -> ureq::Agent {
    ureq::Agent::config_builder()
        .http_status_as_error(false)
        .proxy(None)
        .max_redirects(0)
        .timeout_global(Some(Duration::from_secs(30)))
        .build()
        .into()
}

/// The program a fixture runs: `$<var>`, else `<name>` on `PATH`; `None` (with the skip
/// message) when there is none, and a panic instead when `$<require>=1` (as CI sets it).
pub(crate) fn program(test: &str, var: &str, name: &str, require: &str) -> Option<PathBuf> {
    let found = std::env::var_os(var)
        .filter(|v| !v.is_empty())
        .map(PathBuf::from)
        .or_else(|| {
            std::env::split_paths(&std::env::var_os("PATH")?)
                .map(|d| d.join(name))
                .find(|p| p.is_file())
        });
    if found.is_none() {
        if std::env::var(require).as_deref() == Ok("1") {
            panic!("{test}: no {name} and {require}=1 (set {var})");
        }
        eprintln!("{test}: skipped: no {name} (set {var})");
    }
    found
}

/// A port nothing listens on now (the kernel's pick, released at once).
fn free_port() -> u16 {
    TcpListener::bind("127.0.0.1:0")
        .and_then(|l| l.local_addr())
        .expect("bind 127.0.0.1:0 to pick a free port")
        .port()
}

/// True while process `pid` runs (not gone, not a zombie waiting for its wrapper).
fn alive(pid: u32) -> bool {
    let Ok(stat) = std::fs::read_to_string(format!("/proc/{pid}/stat")) else {
        return false;
    };
    // `pid (comm) S ...`: the state follows the last `)` (comm may hold anything).
    let state = stat
        .rsplit_once(')')
        .and_then(|(_, rest)| rest.trim_start().chars().next());
    !matches!(state, Some('Z' | 'X') | None)
}

/// The body of a response whose status is one of `ok`; panics naming `what` otherwise.
pub(crate) fn expect_status(
    r: Result<ureq::http::Response<ureq::Body>, ureq::Error>,
    ok: &[u16],
    what: &str,
) -> Vec<u8> {
    let r = r.unwrap_or_else(|e| panic!("{what}: request failed: {e}"));
    let status = r.status().as_u16();
    let body = r
        .into_body()
        .with_config()
        .limit(MAX_BODY)
        .read_to_vec()
        .unwrap_or_else(|e| panic!("{what}: reading the {status} answer's body: {e}"));
    assert!(
        ok.contains(&status),
        "{what}: status {status}, not {ok:?}: {}",
        String::from_utf8_lossy(&body)
    );
    body
}

/// `s` percent-encoded: every byte but the unreserved ones (and `/` when `keep_slash`).
pub(crate) fn encode(s: &str, keep_slash: bool) -> String {
    let mut out = String::with_capacity(s.len());
    for b in s.bytes() {
        match b {
            b'A'..=b'Z' | b'a'..=b'z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' => {
                out.push(b as char)
            }
            b'/' if keep_slash => out.push('/'),
            _ => out.push_str(&format!("%{b:02X}")),
        }
    }
    out
}

/// A fresh bucket name: `prefix` lowercased (any character but a letter, a digit or `-` as
/// `-`, starting with a letter or digit), a counter and the pid; at most 62 characters.
pub(crate) fn fresh_name(prefix: &str) -> String {
    use std::sync::atomic::{AtomicUsize, Ordering};
    static NEXT: AtomicUsize = AtomicUsize::new(0);
    let suffix = format!(
        "-{}-{}",
        NEXT.fetch_add(1, Ordering::Relaxed),
        std::process::id()
    );
    let mut name: String = prefix
        .chars()
        .map(|c| match c.to_ascii_lowercase() {
            c @ ('a'..='z' | '0'..='9' | '-') => c,
            _ => '-',
        })
        .take(62 - suffix.len())
        .collect();
    if !name.starts_with(|c: char| c.is_ascii_alphanumeric()) {
        name.insert(0, 'b');
    }
    name.push_str(&suffix);
    name
}

/// The contents of every `<name>…</name>` element of `xml`, outermost first (the listing
/// documents have no attributes on these, nor nested elements of the same name).
pub(crate) fn elements<'a>(xml: &'a str, name: &str) -> Vec<&'a str> {
    let (open, close) = (format!("<{name}>"), format!("</{name}>"));
    let mut found = Vec::new();
    let mut rest = xml;
    while let Some(start) = rest.find(&open) {
        let after = &rest[start + open.len()..];
        let Some(end) = after.find(&close) else {
            panic!("<{name}> is not closed in {xml}");
        };
        found.push(&after[..end]);
        rest = &after[end + close.len()..];
    }
    found
}

/// XML character data with its entity and character references replaced.
pub(crate) fn unescape(text: &str) -> Result<String, String> {
    let mut out = String::with_capacity(text.len());
    let mut rest = text;
    while let Some(amp) = rest.find('&') {
        out.push_str(&rest[..amp]);
        let after = &rest[amp + 1..];
        let semi = after
            .find(';')
            .ok_or_else(|| format!("an unterminated reference in {text:?}"))?;
        let entity = &after[..semi];
        let c = match entity {
            "amp" => '&',
            "lt" => '<',
            "gt" => '>',
            "quot" => '"',
            "apos" => '\'',
            _ => {
                let code = if let Some(hex) = entity.strip_prefix("#x") {
                    u32::from_str_radix(hex, 16).ok()
                } else if let Some(dec) = entity.strip_prefix('#') {
                    dec.parse().ok()
                } else {
                    None
                };
                code.and_then(char::from_u32)
                    .ok_or_else(|| format!("an unknown reference &{entity}; in {text:?}"))?
            }
        };
        out.push(c);
        rest = &after[semi + 1..];
    }
    out.push_str(rest);
    Ok(out)
}
