//! The loopback HTTP/1.1 server of the tests, well-behaved or hostile on purpose. Each path has a
//! script: the n-th request for it gets the n-th [`Answer`] (the last one repeats); a route
//! served with [`Server::serve`] is a one-answer script built from a body and a [`Mode`] (whole,
//! spread over a delay, or stalled after half). Every request is recorded with its
//! headers and arrival time, so tests can count attempts, check which headers reached which
//! origin, and measure backoff. One thread accepts, one thread per connection answers with
//! `Connection: close`. Answers that stall or drip end as soon as the client hangs up (or the
//! server is dropped), so no thread outlives its test.

use std::collections::HashMap;
use std::io::{self, Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Condvar, Mutex};
use std::thread::{self, JoinHandle};
use std::time::{Duration, Instant};

/// How a route served with [`Server::serve`] is answered.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Mode {
    /// `200` with the whole body, spread evenly over `delay` (20 chunks).
    Full {
        /// Time the body takes to send.
        delay: Duration,
    },
    /// `200` with the full Content-Length, half the body, then nothing until the client hangs
    /// up or the server stops ([`Server::wait_stalled`] counts these).
    HalfThenStall,
}

impl Mode {
    /// The answer this mode gives with `body`.
    fn answer(self, body: &Arc<Vec<u8>>) -> Answer {
        let body = Arc::clone(body);
        match self {
            Mode::Full { delay } => Answer::Spread { body, over: delay },
            Mode::HalfThenStall => {
                let send = body.len() / 2;
                Answer::StallAfter { body, send }
            }
        }
    }
}

/// What the `Content-Length` header says.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Length {
    /// The body's real length.
    Exact,
    /// This number, whatever the body is.
    Says(usize),
    /// No `Content-Length` (the body ends when the connection closes).
    Absent,
}

/// One answer to one request.
#[derive(Debug, Clone)]
pub(crate) enum Answer {
    /// `200`, the first `send` bytes of `body` (all of it when `None`), then close.
    Body {
        body: Arc<Vec<u8>>,
        length: Length,
        send: Option<usize>,
    },
    /// Nothing at all (not even a status line) until the client hangs up.
    StallBeforeHeaders,
    /// `200` with the full Content-Length, `send` bytes of `body`, then nothing until the client
    /// hangs up.
    StallAfter { body: Arc<Vec<u8>>, send: usize },
    /// `200` with the full Content-Length, then one byte of `body` every `every`, until the body
    /// ends or the client hangs up.
    Drip { body: Arc<Vec<u8>>, every: Duration },
    /// `200` with the full Content-Length, then `chunk` bytes of `body` every `every` (slow but
    /// steady).
    Paced {
        body: Arc<Vec<u8>>,
        chunk: usize,
        every: Duration,
    },
    /// `200` with the full Content-Length and the whole body in 20 chunks spread evenly over
    /// `over`.
    Spread { body: Arc<Vec<u8>>, over: Duration },
    /// `200` with `Transfer-Encoding: chunked`, the body in 1 KiB chunks; without `complete`,
    /// the connection closes after half of them (no terminating chunk).
    Chunked { body: Arc<Vec<u8>>, complete: bool },
    /// The status line and headers, one byte every `every`, forever.
    DripHeaders { every: Duration },
    /// `code` with extra headers and an empty body.
    Status {
        code: u16,
        headers: Vec<(String, String)>,
    },
}

impl Answer {
    /// `200` with the whole body and its true Content-Length.
    pub(crate) fn ok(body: &[u8]) -> Answer {
        Answer::Body {
            body: Arc::new(body.to_vec()),
            length: Length::Exact,
            send: None,
        }
    }

    /// `200` whose Content-Length is the whole body's, but only `send` bytes are sent.
    pub(crate) fn truncated(body: &[u8], send: usize) -> Answer {
        Answer::Body {
            body: Arc::new(body.to_vec()),
            length: Length::Exact,
            send: Some(send),
        }
    }

    /// A bare status.
    pub(crate) fn status(code: u16) -> Answer {
        Answer::Status {
            code,
            headers: Vec::new(),
        }
    }

    /// A status with one extra header.
    pub(crate) fn status_with(code: u16, name: &str, value: &str) -> Answer {
        Answer::Status {
            code,
            headers: vec![(name.to_string(), value.to_string())],
        }
    }

    /// `302` to `location`.
    pub(crate) fn redirect(location: &str) -> Answer {
        Answer::status_with(302, "Location", location)
    }
}

/// One request as the server saw it.
#[derive(Debug, Clone)]
pub(crate) struct Request {
    /// `GET`, `POST`, ….
    pub method: String,
    /// The path (query removed).
    pub path: String,
    /// The query (after `?`), empty when there is none.
    pub query: String,
    /// The body, read only for requests a mount answers ([`Server::mount_git_backend`]), and
    /// decoded from `Transfer-Encoding: chunked`.
    pub body: Vec<u8>,
    /// Header names lowercased, values trimmed.
    pub headers: Vec<(String, String)>,
    /// When its head had been read.
    pub at: Instant,
}

impl Request {
    /// The value of header `name` (any case).
    pub(crate) fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(k, _)| *k == name)
            .map(|(_, v)| v.as_str())
    }
}

#[derive(Debug, Default)]
struct Shared {
    scripts: Mutex<HashMap<String, Vec<Answer>>>,
    /// The bodies of the routes served with [`Server::serve`], for [`Server::set_mode`].
    bodies: Mutex<HashMap<String, Arc<Vec<u8>>>>,
    requests: Mutex<Vec<Request>>,
    seen: Condvar,
    /// Connections whose answer is still being written (or stalling).
    busy: AtomicUsize,
    /// Number of [`Answer::StallAfter`] answers whose bytes have been written.
    stalled: Mutex<usize>,
    stalled_cv: Condvar,
    /// Connections accepted (the one that wakes the acceptor to stop excluded).
    accepted: AtomicUsize,
    /// A header every request must carry (name lowercased, value compared in any case); the
    /// others get `401`.
    required: Mutex<Option<(String, String)>>,
    /// Directories served under a path prefix, when no script answers the path.
    mounts: Mutex<Vec<(String, Mount)>>,
    stop: AtomicBool,
}

/// How a directory is served under a path prefix.
#[derive(Debug, Clone)]
enum Mount {
    /// Static files (what a plain web server does; a bare repository after
    /// `git update-server-info` is then a dumb-HTTP git server).
    Static(PathBuf),
    /// `git http-backend` as CGI with this `GIT_PROJECT_ROOT` (git's smart HTTP protocol).
    GitBackend(PathBuf),
}

/// The server. Dropping it stops it.
#[derive(Debug)]
pub(crate) struct Server {
    addr: SocketAddr,
    shared: Arc<Shared>,
    acceptor: Option<JoinHandle<()>>,
}

impl Server {
    /// Binds a free port on `127.0.0.1` and starts serving.
    pub(crate) fn start() -> Server {
        Server::serve_on(TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0"))
    }

    /// Binds a free port on `[::1]` and starts serving; `None` when this machine has no IPv6
    /// loopback (a container without IPv6, say).
    pub(crate) fn start_ipv6() -> Option<Server> {
        TcpListener::bind("[::1]:0").ok().map(Server::serve_on)
    }

    fn serve_on(listener: TcpListener) -> Server {
        let addr = listener.local_addr().expect("local address");
        let shared = Arc::new(Shared::default());
        let s = Arc::clone(&shared);
        let acceptor = thread::spawn(move || {
            for conn in listener.incoming() {
                if s.stop.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(conn) = conn else { continue };
                s.accepted.fetch_add(1, Ordering::SeqCst);
                let s = Arc::clone(&s);
                s.busy.fetch_add(1, Ordering::SeqCst);
                thread::spawn(move || {
                    let _ = handle(conn, &s);
                    s.busy.fetch_sub(1, Ordering::SeqCst);
                });
            }
        });
        Server {
            addr,
            shared,
            acceptor: Some(acceptor),
        }
    }

    /// `http://127.0.0.1:<port>` (`http://[::1]:<port>` for [`Server::start_ipv6`]).
    pub(crate) fn url(&self) -> String {
        format!("http://{}", self.addr)
    }

    /// `127.0.0.1:<port>` (`[::1]:<port>` for [`Server::start_ipv6`]).
    pub(crate) fn authority(&self) -> String {
        self.addr.to_string()
    }

    /// Answers requests for `path` with `answers` in turn (the last repeats), replacing any
    /// earlier script.
    pub(crate) fn script(&self, path: &str, answers: Vec<Answer>) {
        assert!(!answers.is_empty(), "a script needs an answer");
        self.shared
            .scripts
            .lock()
            .unwrap()
            .insert(path.to_string(), answers);
    }

    /// Serves `body` at `path` (which starts with `/`) as `mode` says, replacing any earlier
    /// route or script.
    pub(crate) fn serve(&self, path: &str, body: Vec<u8>, mode: Mode) {
        let body = Arc::new(body);
        self.script(path, vec![mode.answer(&body)]);
        self.shared
            .bodies
            .lock()
            .unwrap()
            .insert(path.to_string(), body);
    }

    /// Changes how the route at `path` is answered from now on.
    pub(crate) fn set_mode(&self, path: &str, mode: Mode) {
        let body = Arc::clone(
            self.shared
                .bodies
                .lock()
                .unwrap()
                .get(path)
                .expect("no such route"),
        );
        self.script(path, vec![mode.answer(&body)]);
    }

    /// Changes how every route served with [`Server::serve`] is answered from now on.
    pub(crate) fn serve_all_mode(&self, mode: Mode) {
        let bodies = self.shared.bodies.lock().unwrap().clone();
        for (path, body) in bodies {
            self.script(&path, vec![mode.answer(&body)]);
        }
    }

    /// Answers `401` to every request that does not carry header `name` with `value` (in any
    /// case).
    pub(crate) fn require_header(&self, name: &str, value: &str) {
        *self.shared.required.lock().unwrap() =
            Some((name.to_ascii_lowercase(), value.to_string()));
    }

    /// Serves the files under `root` at `<prefix>/…` (`prefix` starts with `/`), as a static
    /// web server does: `200` with `text/plain` for a file, `404` for anything else. A bare
    /// repository under `root` after `git update-server-info` is a dumb-HTTP git server.
    pub(crate) fn mount_static(&self, prefix: &str, root: &Path) {
        self.mount(prefix, Mount::Static(root.to_path_buf()));
    }

    /// Serves the repositories under `root` at `<prefix>/<repo>` by running `git http-backend`
    /// as CGI for each request (`GIT_PROJECT_ROOT=root`, every repository exported): git's
    /// smart HTTP protocol, v0 and v2.
    pub(crate) fn mount_git_backend(&self, prefix: &str, root: &Path) {
        self.mount(prefix, Mount::GitBackend(root.to_path_buf()));
    }

    fn mount(&self, prefix: &str, m: Mount) {
        assert!(
            prefix.starts_with('/') && !prefix.ends_with('/'),
            "{prefix}"
        );
        self.shared
            .mounts
            .lock()
            .unwrap()
            .push((prefix.to_string(), m));
    }

    /// How many connections were accepted, whether or not a request came on them.
    pub(crate) fn connections(&self) -> usize {
        self.shared.accepted.load(Ordering::SeqCst)
    }

    /// Every path requested, with its count.
    pub(crate) fn counts(&self) -> HashMap<String, usize> {
        let mut counts = HashMap::new();
        for r in self.shared.requests.lock().unwrap().iter() {
            *counts.entry(r.path.clone()).or_default() += 1;
        }
        counts
    }

    /// Waits until `n` stalling answers have sent their bytes; false on timeout.
    pub(crate) fn wait_stalled(&self, n: usize, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        let mut got = self.shared.stalled.lock().unwrap();
        while *got < n {
            let left = deadline.saturating_duration_since(Instant::now());
            if left.is_zero() {
                return false;
            }
            got = self.shared.stalled_cv.wait_timeout(got, left).unwrap().0;
        }
        true
    }

    /// Stops accepting (the port is closed when this returns) and ends stalled answers.
    pub(crate) fn stop(&mut self) {
        self.shared.stop.store(true, Ordering::SeqCst);
        if let Some(a) = self.acceptor.take() {
            // Wake the acceptor so it sees the flag and drops the listener.
            let _ = TcpStream::connect_timeout(&self.addr, Duration::from_secs(2));
            let _ = a.join();
        }
    }

    /// Every request so far, in arrival order.
    pub(crate) fn requests(&self) -> Vec<Request> {
        self.shared.requests.lock().unwrap().clone()
    }

    /// The requests for `path`.
    pub(crate) fn requests_for(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|r| r.path == path)
            .collect()
    }

    /// How many requests for `path` arrived.
    pub(crate) fn count(&self, path: &str) -> usize {
        self.requests_for(path).len()
    }

    /// Waits until no answer is being written any more (every stalling or dripping answer has
    /// seen its client hang up); false after `timeout`.
    pub(crate) fn wait_idle(&self, timeout: Duration) -> bool {
        let deadline = Instant::now() + timeout;
        while self.shared.busy.load(Ordering::SeqCst) > 0 {
            if Instant::now() > deadline {
                return false;
            }
            thread::sleep(Duration::from_millis(10));
        }
        true
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        self.stop();
    }
}

/// A request's head: method, path, query, headers (names lowercased), and the bytes read past
/// the head (the start of its body).
struct Head {
    method: String,
    path: String,
    query: String,
    headers: Vec<(String, String)>,
    rest: Vec<u8>,
}

fn read_head(conn: &mut TcpStream) -> io::Result<Head> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 1024];
    let end = loop {
        if let Some(i) = buf.windows(4).position(|w| w == b"\r\n\r\n") {
            break i + 4;
        }
        let n = conn.read(&mut chunk)?;
        if n == 0 {
            return Err(io::ErrorKind::UnexpectedEof.into());
        }
        buf.extend_from_slice(&chunk[..n]);
        if buf.len() > 64 * 1024 {
            return Err(io::ErrorKind::InvalidData.into());
        }
    };
    let rest = buf[end..].to_vec();
    let head = String::from_utf8_lossy(&buf[..end]).into_owned();
    let mut lines = head.split("\r\n");
    let mut first = lines.next().unwrap_or_default().split_whitespace();
    let method = first.next().unwrap_or("GET").to_string();
    let target = first.next().unwrap_or("/").to_string();
    let (path, query) = match target.split_once('?') {
        Some((p, q)) => (p.to_string(), q.to_string()),
        None => (target.clone(), String::new()),
    };
    let headers = lines
        .take_while(|l| !l.is_empty())
        .filter_map(|l| l.split_once(':'))
        .map(|(k, v)| (k.trim().to_ascii_lowercase(), v.trim().to_string()))
        .collect();
    Ok(Head {
        method,
        path,
        query,
        headers,
        rest,
    })
}

impl Head {
    fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k == name)
            .map(|(_, v)| v.as_str())
    }

    /// Reads the body (Content-Length or chunked), answering `Expect: 100-continue` first.
    fn read_body(&mut self, conn: &mut TcpStream) -> io::Result<Vec<u8>> {
        if self
            .header("expect")
            .is_some_and(|v| v.eq_ignore_ascii_case("100-continue"))
        {
            conn.write_all(b"HTTP/1.1 100 Continue\r\n\r\n")?;
        }
        let mut raw = std::mem::take(&mut self.rest);
        if let Some(n) = self
            .header("content-length")
            .and_then(|v| v.parse::<usize>().ok())
        {
            while raw.len() < n {
                let mut chunk = vec![0u8; (n - raw.len()).min(64 * 1024)];
                let got = conn.read(&mut chunk)?;
                if got == 0 {
                    return Err(io::ErrorKind::UnexpectedEof.into());
                }
                raw.extend_from_slice(&chunk[..got]);
            }
            raw.truncate(n);
            return Ok(raw);
        }
        if !self
            .header("transfer-encoding")
            .is_some_and(|v| v.eq_ignore_ascii_case("chunked"))
        {
            return Ok(raw);
        }
        // Chunked: read until the terminating chunk, then decode.
        let mut body = Vec::new();
        let mut pos = 0;
        loop {
            let line_end = loop {
                if let Some(i) = raw[pos..].windows(2).position(|w| w == b"\r\n") {
                    break pos + i;
                }
                fill(conn, &mut raw)?;
            };
            let size_text = String::from_utf8_lossy(&raw[pos..line_end]).to_string();
            let size = usize::from_str_radix(size_text.split(';').next().unwrap_or("").trim(), 16)
                .map_err(|_| io::Error::from(io::ErrorKind::InvalidData))?;
            pos = line_end + 2;
            while raw.len() < pos + size + 2 {
                fill(conn, &mut raw)?;
            }
            if size == 0 {
                return Ok(body);
            }
            body.extend_from_slice(&raw[pos..pos + size]);
            pos += size + 2;
        }
    }
}

/// Reads more of the connection onto `raw`.
fn fill(conn: &mut TcpStream, raw: &mut Vec<u8>) -> io::Result<()> {
    let mut chunk = [0u8; 16 * 1024];
    let n = conn.read(&mut chunk)?;
    if n == 0 {
        return Err(io::ErrorKind::UnexpectedEof.into());
    }
    raw.extend_from_slice(&chunk[..n]);
    Ok(())
}

/// Answers a request for `rel` (the path below the mount's prefix) from a mount.
fn answer_mount(
    conn: &mut TcpStream,
    m: &Mount,
    head: &Head,
    rel: &str,
    body: &[u8],
) -> io::Result<()> {
    match m {
        Mount::Static(root) => {
            let safe = rel.split('/').all(|c| c != ".." && !c.contains('\\'));
            let file = root.join(rel.trim_start_matches('/'));
            match std::fs::read(&file) {
                Ok(bytes) if safe && head.method == "GET" => {
                    write!(
                        conn,
                        "HTTP/1.1 200 OK\r\nContent-Type: text/plain\r\nContent-Length: {}\r\n\
                         Connection: close\r\n\r\n",
                        bytes.len()
                    )?;
                    conn.write_all(&bytes)
                }
                _ => conn.write_all(
                    b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                ),
            }
        }
        Mount::GitBackend(root) => {
            let mut cmd = Command::new("git");
            cmd.arg("http-backend")
                .env("GIT_PROJECT_ROOT", root)
                .env("GIT_HTTP_EXPORT_ALL", "1")
                .env("REQUEST_METHOD", &head.method)
                .env("PATH_INFO", rel)
                .env("QUERY_STRING", &head.query)
                .env("REMOTE_ADDR", "127.0.0.1")
                .env("CONTENT_LENGTH", body.len().to_string())
                .stdin(Stdio::piped())
                .stdout(Stdio::piped())
                .stderr(Stdio::null());
            for (h, var) in [
                ("content-type", "CONTENT_TYPE"),
                ("content-encoding", "HTTP_CONTENT_ENCODING"),
                ("git-protocol", "GIT_PROTOCOL"),
            ] {
                if let Some(v) = head.header(h) {
                    cmd.env(var, v);
                }
            }
            let mut child = cmd.spawn()?;
            let mut stdin = child.stdin.take().expect("piped stdin");
            let body = body.to_vec();
            let writer = thread::spawn(move || {
                let _ = stdin.write_all(&body);
            });
            let out = child.wait_with_output()?;
            let _ = writer.join();
            // CGI: headers, an empty line, the body.
            let split = out
                .stdout
                .windows(4)
                .position(|w| w == b"\r\n\r\n")
                .map(|i| (i, 4))
                .or_else(|| {
                    out.stdout
                        .windows(2)
                        .position(|w| w == b"\n\n")
                        .map(|i| (i, 2))
                });
            let Some((at, sep)) = split else {
                return conn.write_all(
                    b"HTTP/1.1 500 CGI\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
                );
            };
            let cgi_head = String::from_utf8_lossy(&out.stdout[..at]).to_string();
            let cgi_body = &out.stdout[at + sep..];
            let mut status = "200 OK".to_string();
            let mut response = String::new();
            for line in cgi_head
                .lines()
                .map(str::trim_end)
                .filter(|l| !l.is_empty())
            {
                match line.split_once(':') {
                    Some((k, v)) if k.eq_ignore_ascii_case("status") => {
                        status = v.trim().to_string()
                    }
                    Some((k, v)) => response.push_str(&format!("{}: {}\r\n", k.trim(), v.trim())),
                    None => {}
                }
            }
            write!(
                conn,
                "HTTP/1.1 {status}\r\n{response}Content-Length: {}\r\nConnection: close\r\n\r\n",
                cgi_body.len()
            )?;
            conn.write_all(cgi_body)
        }
    }
}

/// Waits (without sending anything) until the client hangs up or the server stops.
fn hold(conn: &mut TcpStream, s: &Shared) {
    let _ = conn.set_read_timeout(Some(Duration::from_millis(20)));
    let mut b = [0u8; 64];
    let until = Instant::now() + Duration::from_secs(120);
    while !s.stop.load(Ordering::SeqCst) && Instant::now() < until {
        match conn.read(&mut b) {
            Ok(0) => return,
            Ok(_) => {}
            Err(e)
                if matches!(
                    e.kind(),
                    io::ErrorKind::WouldBlock | io::ErrorKind::TimedOut
                ) => {}
            Err(_) => return,
        }
    }
}

/// Sleeps `d` in small steps; false when the server stopped meanwhile.
fn nap(d: Duration, s: &Shared) -> bool {
    let end = Instant::now() + d;
    while Instant::now() < end {
        if s.stop.load(Ordering::SeqCst) {
            return false;
        }
        thread::sleep((end - Instant::now()).min(Duration::from_millis(20)));
    }
    true
}

fn handle(mut conn: TcpStream, s: &Shared) -> io::Result<()> {
    conn.set_read_timeout(Some(Duration::from_secs(10)))?;
    let mut head = read_head(&mut conn)?;
    let path = head.path.clone();
    let mount = {
        let scripted = s.scripts.lock().unwrap().contains_key(&path);
        let mounts = s.mounts.lock().unwrap();
        (!scripted)
            .then(|| {
                mounts.iter().find_map(|(prefix, m)| {
                    path.strip_prefix(prefix.as_str())
                        .filter(|rel| rel.starts_with('/'))
                        .map(|rel| (m.clone(), rel.to_string()))
                })
            })
            .flatten()
    };
    let body = match &mount {
        Some(_) => head.read_body(&mut conn)?,
        None => Vec::new(),
    };
    let headers = head.headers.clone();
    let authorized = s
        .required
        .lock()
        .unwrap()
        .as_ref()
        .is_none_or(|(name, value)| {
            headers
                .iter()
                .any(|(k, v)| k == name && v.eq_ignore_ascii_case(value))
        });
    let n = {
        let mut reqs = s.requests.lock().unwrap();
        let n = reqs.iter().filter(|r| r.path == path).count();
        reqs.push(Request {
            method: head.method.clone(),
            path: path.clone(),
            query: head.query.clone(),
            body: body.clone(),
            headers,
            at: Instant::now(),
        });
        s.seen.notify_all();
        n
    };
    let answer = s
        .scripts
        .lock()
        .unwrap()
        .get(&path)
        .map(|script| script[n.min(script.len() - 1)].clone());
    if !authorized {
        conn.write_all(
            b"HTTP/1.1 401 Unauthorized\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return conn.shutdown(Shutdown::Both);
    }
    if let Some((m, rel)) = &mount {
        answer_mount(&mut conn, m, &head, rel, &body)?;
        conn.flush()?;
        return conn.shutdown(Shutdown::Both);
    }
    let Some(answer) = answer else {
        conn.write_all(
            b"HTTP/1.1 404 Not Found\r\nContent-Length: 0\r\nConnection: close\r\n\r\n",
        )?;
        return conn.shutdown(Shutdown::Both);
    };
    match answer {
        Answer::Body { body, length, send } => {
            let mut head =
                String::from("HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n");
            match length {
                Length::Exact => head.push_str(&format!("Content-Length: {}\r\n", body.len())),
                Length::Says(n) => head.push_str(&format!("Content-Length: {n}\r\n")),
                Length::Absent => {}
            }
            head.push_str("Connection: close\r\n\r\n");
            conn.write_all(head.as_bytes())?;
            let send = send.unwrap_or(body.len()).min(body.len());
            conn.write_all(&body[..send])?;
        }
        Answer::StallBeforeHeaders => hold(&mut conn, s),
        Answer::StallAfter { body, send } => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            conn.write_all(&body[..send.min(body.len())])?;
            conn.flush()?;
            *s.stalled.lock().unwrap() += 1;
            s.stalled_cv.notify_all();
            hold(&mut conn, s);
        }
        Answer::Drip { body, every } => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            conn.flush()?;
            for b in body.iter() {
                if !nap(every, s) {
                    break;
                }
                // A write error means the client hung up: done.
                conn.write_all(&[*b])?;
                conn.flush()?;
            }
        }
        Answer::Paced { body, chunk, every } => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            conn.flush()?;
            for part in body.chunks(chunk.max(1)) {
                if !nap(every, s) {
                    break;
                }
                conn.write_all(part)?;
                conn.flush()?;
            }
        }
        Answer::Spread { body, over } => {
            write!(
                conn,
                "HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\n\
                 Content-Length: {}\r\nConnection: close\r\n\r\n",
                body.len()
            )?;
            const CHUNKS: usize = 20;
            let step = body.len().div_ceil(CHUNKS).max(1);
            for (i, part) in body.chunks(step).enumerate() {
                if i > 0 && !over.is_zero() && !nap(over / CHUNKS as u32, s) {
                    break;
                }
                conn.write_all(part)?;
            }
        }
        Answer::Chunked { body, complete } => {
            conn.write_all(
                b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\nConnection: close\r\n\r\n",
            )?;
            let chunks: Vec<&[u8]> = body.chunks(1024).collect();
            let n = if complete {
                chunks.len()
            } else {
                chunks.len() / 2
            };
            for c in &chunks[..n] {
                write!(conn, "{:x}\r\n", c.len())?;
                conn.write_all(c)?;
                conn.write_all(b"\r\n")?;
            }
            if complete {
                conn.write_all(b"0\r\n\r\n")?;
            }
        }
        Answer::DripHeaders { every } => {
            let head = b"HTTP/1.1 200 OK\r\nX-Padding: ";
            for b in head.iter().chain(std::iter::repeat(&b'a')) {
                if !nap(every, s) {
                    break;
                }
                conn.write_all(&[*b])?;
                conn.flush()?;
            }
        }
        Answer::Status { code, headers } => {
            let mut head = format!("HTTP/1.1 {code} Hostile\r\n");
            for (k, v) in headers {
                head.push_str(&format!("{k}: {v}\r\n"));
            }
            head.push_str("Content-Length: 0\r\nConnection: close\r\n\r\n");
            conn.write_all(head.as_bytes())?;
        }
    }
    conn.flush()?;
    conn.shutdown(Shutdown::Both)
}
