//! A real HTTP/1.1 server on 127.0.0.1 (a free port, a background thread, std only) whose routes
//! the test scripts: a fixed sequence of replies per path (503, 503, then 200; the last one
//! repeats), or a closure that answers from the request. Every request is logged (method, path,
//! query, lower-case headers, body, arrival time) for the test to read; a reply can also hang
//! (accept and never answer) or be delayed. Connections are kept alive like a real server's.
//!
//! ```ignore
//! let server = HttpServer::start();
//! server.route("/health", [Reply::status(503), Reply::status(503), Reply::json(200, json!({"ok": true}))]);
//! // ... run glow-run against server.url("/health") ...
//! assert_eq!(server.requests_to("/health").len(), 3);
//! ```

use std::collections::HashMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::thread;
use std::time::{Duration, Instant};

/// A request as the server received it.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: String,
    pub path: String,
    /// The raw query string (without `?`), empty when there was none.
    pub query: String,
    /// Header names in lower case, in arrival order.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub at: Instant,
}

impl Request {
    pub fn header(&self, name: &str) -> Option<&str> {
        let name = name.to_ascii_lowercase();
        self.headers
            .iter()
            .find(|(key, _)| *key == name)
            .map(|(_, value)| value.as_str())
    }

    pub fn body_text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body)
            .unwrap_or_else(|e| panic!("request body is not JSON ({e}): {}", self.body_text()))
    }

    /// The first value of a query parameter (percent-decoding `%XX` and `+`).
    pub fn query_param(&self, name: &str) -> Option<String> {
        self.query
            .split('&')
            .filter_map(|pair| pair.split_once('='))
            .find(|(key, _)| *key == name)
            .map(|(_, value)| decode(value))
    }
}

fn decode(text: &str) -> String {
    let bytes = text.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        match bytes[i] {
            b'+' => out.push(b' '),
            b'%' if i + 2 < bytes.len() => {
                let hex = std::str::from_utf8(&bytes[i + 1..i + 3])
                    .ok()
                    .and_then(|h| u8::from_str_radix(h, 16).ok());
                match hex {
                    Some(byte) => {
                        out.push(byte);
                        i += 2;
                    }
                    None => out.push(b'%'),
                }
            }
            byte => out.push(byte),
        }
        i += 1;
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// What the server answers.
#[derive(Debug, Clone)]
pub struct Reply {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// Accept the request and never answer (until the server is dropped).
    pub hang: bool,
    /// Wait this long before answering.
    pub delay: Option<Duration>,
}

impl Reply {
    pub fn status(status: u16) -> Self {
        Self {
            status,
            headers: Vec::new(),
            body: Vec::new(),
            hang: false,
            delay: None,
        }
    }

    pub fn text(status: u16, body: &str) -> Self {
        Self::status(status)
            .header("content-type", "text/plain; charset=utf-8")
            .body(body.as_bytes())
    }

    pub fn json(status: u16, value: serde_json::Value) -> Self {
        Self::status(status)
            .header("content-type", "application/json")
            .body(value.to_string().as_bytes())
    }

    pub fn hang() -> Self {
        Self {
            hang: true,
            ..Self::status(200)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    pub fn body(mut self, body: &[u8]) -> Self {
        self.body = body.to_vec();
        self
    }

    pub fn delay(mut self, delay: Duration) -> Self {
        self.delay = Some(delay);
        self
    }
}

type Handler = Arc<dyn Fn(&Request) -> Reply + Send + Sync>;

enum Route {
    /// Replies in order; the last one repeats.
    Sequence {
        replies: Vec<Reply>,
        next: usize,
    },
    Handler(Handler),
}

#[derive(Default)]
struct State {
    /// Keyed by "METHOD /path" or "* /path".
    routes: Mutex<HashMap<String, Route>>,
    log: Mutex<Vec<Request>>,
    connections: AtomicUsize,
    shutdown: AtomicBool,
}

impl State {
    fn reply_for(&self, request: &Request) -> Reply {
        let mut routes = self.routes.lock().unwrap();
        let exact = format!("{} {}", request.method, request.path);
        let any = format!("* {}", request.path);
        let key = if routes.contains_key(&exact) {
            exact
        } else {
            any
        };
        match routes.get_mut(&key) {
            Some(Route::Sequence { replies, next }) => {
                let reply = replies[(*next).min(replies.len() - 1)].clone();
                *next += 1;
                reply
            }
            Some(Route::Handler(handler)) => {
                let handler = handler.clone();
                drop(routes);
                handler(request)
            }
            None => Reply::json(
                404,
                serde_json::json!({ "error": "no route", "path": request.path }),
            ),
        }
    }
}

/// The server; stops accepting (and releases hanging requests) when dropped.
pub struct HttpServer {
    pub addr: SocketAddr,
    state: Arc<State>,
}

impl HttpServer {
    pub fn start() -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind 127.0.0.1:0");
        let addr = listener.local_addr().unwrap();
        let state = Arc::new(State::default());
        let shared = state.clone();
        thread::spawn(move || {
            for stream in listener.incoming() {
                if shared.shutdown.load(Ordering::SeqCst) {
                    break;
                }
                let Ok(stream) = stream else { continue };
                shared.connections.fetch_add(1, Ordering::SeqCst);
                let state = shared.clone();
                thread::spawn(move || serve(stream, &state));
            }
        });
        Self { addr, state }
    }

    /// `http://127.0.0.1:PORT` + path.
    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }

    /// Replies for `path` (any method), in order; the last one repeats.
    pub fn route(&self, path: &str, replies: impl IntoIterator<Item = Reply>) -> &Self {
        self.route_method("*", path, replies)
    }

    /// Replies for `METHOD path` (takes precedence over `route`).
    pub fn route_method(
        &self,
        method: &str,
        path: &str,
        replies: impl IntoIterator<Item = Reply>,
    ) -> &Self {
        let replies: Vec<Reply> = replies.into_iter().collect();
        assert!(!replies.is_empty(), "a route needs at least one reply");
        self.state.routes.lock().unwrap().insert(
            format!("{method} {path}"),
            Route::Sequence { replies, next: 0 },
        );
        self
    }

    /// A closure answers every request to `path` (any method).
    pub fn handle(
        &self,
        path: &str,
        handler: impl Fn(&Request) -> Reply + Send + Sync + 'static,
    ) -> &Self {
        self.state
            .routes
            .lock()
            .unwrap()
            .insert(format!("* {path}"), Route::Handler(Arc::new(handler)));
        self
    }

    /// Every request received so far, in arrival order.
    pub fn requests(&self) -> Vec<Request> {
        self.state.log.lock().unwrap().clone()
    }

    pub fn requests_to(&self, path: &str) -> Vec<Request> {
        self.requests()
            .into_iter()
            .filter(|request| request.path == path)
            .collect()
    }

    /// TCP connections accepted so far (a refused-by-policy call must leave this at zero).
    pub fn connections(&self) -> usize {
        self.state.connections.load(Ordering::SeqCst)
    }

    /// Waits until `count` requests have arrived (panics after `timeout`).
    pub fn wait_for_requests(&self, count: usize, timeout: Duration) -> Vec<Request> {
        super::poll(timeout, || {
            let requests = self.requests();
            (requests.len() >= count).then_some(requests)
        })
        .unwrap_or_else(|| {
            panic!(
                "expected {count} requests within {timeout:?}, got {:?}",
                self.requests()
            )
        })
    }
}

impl Drop for HttpServer {
    fn drop(&mut self) {
        self.state.shutdown.store(true, Ordering::SeqCst);
        // Wake the accept loop so it sees the flag.
        let _ = TcpStream::connect_timeout(&self.addr, Duration::from_millis(200));
    }
}

/// Serves requests on one connection until the client closes it or asks to.
fn serve(stream: TcpStream, state: &State) {
    let Ok(mut writer) = stream.try_clone() else {
        return;
    };
    let mut reader = BufReader::new(stream);
    while let Some(request) = read_request(&mut reader) {
        state.log.lock().unwrap().push(request.clone());
        let reply = state.reply_for(&request);
        if reply.hang {
            while !state.shutdown.load(Ordering::SeqCst) {
                thread::sleep(Duration::from_millis(20));
            }
            return;
        }
        if let Some(delay) = reply.delay {
            thread::sleep(delay);
        }
        let close = request
            .header("connection")
            .is_some_and(|v| v.eq_ignore_ascii_case("close"));
        if write_reply(&mut writer, &reply, &request.method, close).is_err() || close {
            return;
        }
    }
}

fn read_request(reader: &mut BufReader<TcpStream>) -> Option<Request> {
    let mut line = String::new();
    if reader.read_line(&mut line).ok()? == 0 {
        return None;
    }
    let mut parts = line.split_whitespace();
    let method = parts.next()?.to_owned();
    let target = parts.next()?.to_owned();
    let (path, query) = match target.split_once('?') {
        Some((path, query)) => (path.to_owned(), query.to_owned()),
        None => (target, String::new()),
    };
    let mut headers = Vec::new();
    loop {
        let mut line = String::new();
        if reader.read_line(&mut line).ok()? == 0 {
            return None;
        }
        let line = line.trim_end();
        if line.is_empty() {
            break;
        }
        if let Some((name, value)) = line.split_once(':') {
            headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
        }
    }
    let mut body = Vec::new();
    let length = headers
        .iter()
        .find(|(k, _)| k == "content-length")
        .and_then(|(_, v)| v.parse::<usize>().ok());
    let chunked = headers
        .iter()
        .any(|(k, v)| k == "transfer-encoding" && v.to_ascii_lowercase().contains("chunked"));
    if let Some(length) = length {
        body.resize(length, 0);
        reader.read_exact(&mut body).ok()?;
    } else if chunked {
        loop {
            let mut size = String::new();
            reader.read_line(&mut size).ok()?;
            let size =
                usize::from_str_radix(size.trim().split(';').next().unwrap_or("0"), 16).ok()?;
            let mut chunk = vec![0; size + 2];
            reader.read_exact(&mut chunk).ok()?;
            if size == 0 {
                break;
            }
            body.extend_from_slice(&chunk[..size]);
        }
    }
    Some(Request {
        method,
        path,
        query,
        headers,
        body,
        at: Instant::now(),
    })
}

fn write_reply(
    writer: &mut TcpStream,
    reply: &Reply,
    method: &str,
    close: bool,
) -> std::io::Result<()> {
    let reason = match reply.status {
        200 => "OK",
        201 => "Created",
        204 => "No Content",
        400 => "Bad Request",
        401 => "Unauthorized",
        403 => "Forbidden",
        404 => "Not Found",
        418 => "I'm a teapot",
        429 => "Too Many Requests",
        500 => "Internal Server Error",
        502 => "Bad Gateway",
        503 => "Service Unavailable",
        _ => "Status",
    };
    let mut head = format!("HTTP/1.1 {} {reason}\r\n", reply.status);
    for (name, value) in &reply.headers {
        head.push_str(&format!("{name}: {value}\r\n"));
    }
    head.push_str(&format!("content-length: {}\r\n", reply.body.len()));
    if close {
        head.push_str("connection: close\r\n");
    }
    head.push_str("\r\n");
    writer.write_all(head.as_bytes())?;
    if method != "HEAD" {
        writer.write_all(&reply.body)?;
    }
    writer.flush()
}
