//! An echo upstream: answers every request with what it received, and
//! remembers every request so a test can assert that a denied request never
//! reached it.
//!
//! Speaks HTTP/1.1 and HTTP/2 cleartext (prior knowledge) on one port. The
//! reply is `200` with a JSON body
//! `{"method","path","version","headers":[[name,value],...],"body_sha256","body_len","trailers":[[name,value],...]}`.
//! A request header `x-echo-status: <code>` makes it answer with that status
//! instead (tests use it to play an upstream that fails, e.g. for webhook
//! retries). Credentials (`authorization`, `x-lago-signature`, cookies) are
//! redacted in the reply, so transcripts never show tokens; the in-memory
//! record that tests read keeps every value.

use std::convert::Infallible;
use std::future::Future;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use anyhow::Context;
use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use serde::Serialize;
use sha2::{Digest, Sha256};

/// The header that asks the echo server for a specific status code.
pub const STATUS_OVERRIDE_HEADER: &str = "x-echo-status";

/// Headers whose values the reply shows only as their length.
const REDACTED_HEADERS: &[&str] = &[
    "authorization",
    "proxy-authorization",
    "cookie",
    "x-lago-signature",
];

/// The headers as shown in the reply: credentials replaced by their length.
fn redacted(headers: &[(String, String)]) -> Vec<(String, String)> {
    headers
        .iter()
        .map(|(name, value)| {
            if REDACTED_HEADERS.contains(&name.as_str()) {
                (name.clone(), format!("<redacted: {} bytes>", value.len()))
            } else {
                (name.clone(), value.clone())
            }
        })
        .collect()
}

/// One request as the upstream saw it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Received {
    pub method: String,
    /// Path and query as received (`:path`).
    pub path: String,
    /// `HTTP/1.1` or `HTTP/2.0`.
    pub version: String,
    /// Every header in order; names lower-case.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    pub trailers: Vec<(String, String)>,
}

impl Received {
    /// The first value of a header.
    pub fn header(&self, name: &str) -> Option<&str> {
        crate::http::header_value(&self.headers, name)
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        crate::http::header_values(&self.headers, name)
    }

    /// Lower-case hex SHA-256 of the body.
    pub fn body_sha256(&self) -> String {
        sha256_hex(&self.body)
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    Sha256::digest(bytes)
        .iter()
        .map(|byte| format!("{byte:02x}"))
        .collect()
}

/// Shared list of the requests a server received.
#[derive(Debug, Clone, Default)]
pub struct Recorder {
    requests: Arc<Mutex<Vec<Received>>>,
    /// Print one line per request (method and path only) to stdout.
    log_requests: bool,
}

impl Recorder {
    /// A recorder that also prints `METHOD path` per request (for `avb-echo`).
    pub fn logging() -> Self {
        Self {
            requests: Arc::default(),
            log_requests: true,
        }
    }

    fn record(&self, request: Received) {
        if self.log_requests {
            println!("{} {} {}", request.version, request.method, request.path);
        }
        self.lock().push(request);
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Vec<Received>> {
        self.requests
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner())
    }

    pub fn requests(&self) -> Vec<Received> {
        self.lock().clone()
    }

    pub fn clear(&self) {
        self.lock().clear();
    }
}

/// Serves the echo protocol on `listener` until `shutdown` completes.
pub async fn serve(
    listener: tokio::net::TcpListener,
    recorder: Recorder,
    shutdown: impl Future<Output = ()>,
) {
    tokio::pin!(shutdown);
    loop {
        let accepted = tokio::select! {
            () = &mut shutdown => return,
            accepted = listener.accept() => accepted,
        };
        let Ok((stream, _peer)) = accepted else {
            continue;
        };
        let _ = stream.set_nodelay(true);
        let recorder = recorder.clone();
        tokio::spawn(async move {
            let service = hyper::service::service_fn(move |request| {
                let recorder = recorder.clone();
                async move { Ok::<_, Infallible>(echo(request, &recorder).await) }
            });
            // A connection error (client reset, bad preface) ends only that connection.
            let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                .serve_connection(TokioIo::new(stream), service)
                .await;
        });
    }
}

async fn echo(request: Request<Incoming>, recorder: &Recorder) -> Response<Full<Bytes>> {
    let (parts, body) = request.into_parts();
    let (body, trailers) = match body.collect().await {
        Ok(collected) => {
            let trailers = collected.trailers().map(header_pairs).unwrap_or_default();
            (collected.to_bytes().to_vec(), trailers)
        }
        Err(_) => {
            return plain_response(StatusCode::BAD_REQUEST, "could not read the request body");
        }
    };
    let received = Received {
        method: parts.method.as_str().to_owned(),
        path: parts
            .uri
            .path_and_query()
            .map(|path| path.as_str().to_owned())
            .unwrap_or_else(|| parts.uri.to_string()),
        version: format!("{:?}", parts.version),
        headers: header_pairs(&parts.headers),
        body,
        trailers,
    };
    let status = received
        .header(STATUS_OVERRIDE_HEADER)
        .and_then(|code| code.parse::<u16>().ok())
        .and_then(|code| StatusCode::from_u16(code).ok())
        .unwrap_or(StatusCode::OK);
    let reply = serde_json::json!({
        "method": received.method,
        "path": received.path,
        "version": received.version,
        "headers": redacted(&received.headers),
        "body_sha256": received.body_sha256(),
        "body_len": received.body.len(),
        "trailers": received.trailers,
    });
    recorder.record(received);
    let mut response = Response::new(Full::new(Bytes::from(reply.to_string())));
    *response.status_mut() = status;
    response.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    response
}

fn plain_response(status: StatusCode, text: &'static str) -> Response<Full<Bytes>> {
    let mut response = Response::new(Full::new(Bytes::from_static(text.as_bytes())));
    *response.status_mut() = status;
    response
}

fn header_pairs(map: &hyper::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

/// An echo server on its own thread and runtime, stopped on drop. Usable
/// from synchronous and asynchronous tests alike.
pub struct EchoServer {
    address: SocketAddr,
    recorder: Recorder,
    shutdown: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl EchoServer {
    /// Starts on a free port of 127.0.0.1.
    pub fn start() -> anyhow::Result<Self> {
        Self::start_on(SocketAddr::from(([127, 0, 0, 1], 0)), Recorder::default())
    }

    /// Starts on `address` (port 0 picks a free one).
    pub fn start_on(address: SocketAddr, recorder: Recorder) -> anyhow::Result<Self> {
        let listener = std::net::TcpListener::bind(address)
            .with_context(|| format!("binding the echo server to {address}"))?;
        listener.set_nonblocking(true)?;
        let address = listener.local_addr()?;
        let runtime = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .build()
            .context("building the echo server runtime")?;
        let (shutdown, stop) = tokio::sync::oneshot::channel::<()>();
        let server_recorder = recorder.clone();
        let thread = std::thread::Builder::new()
            .name(format!("echo-{}", address.port()))
            .spawn(move || {
                runtime.block_on(async move {
                    let Ok(listener) = tokio::net::TcpListener::from_std(listener) else {
                        return;
                    };
                    serve(listener, server_recorder, async {
                        let _ = stop.await;
                    })
                    .await;
                });
                runtime.shutdown_background();
            })
            .context("starting the echo server thread")?;
        Ok(Self {
            address,
            recorder,
            shutdown: Some(shutdown),
            thread: Some(thread),
        })
    }

    pub fn port(&self) -> u16 {
        self.address.port()
    }

    pub fn address(&self) -> SocketAddr {
        self.address
    }

    /// Every request received so far, oldest first.
    pub fn requests(&self) -> Vec<Received> {
        self.recorder.requests()
    }

    /// Forgets the requests received so far.
    pub fn clear(&self) {
        self.recorder.clear();
    }
}

impl Drop for EchoServer {
    fn drop(&mut self) {
        if let Some(shutdown) = self.shutdown.take() {
            let _ = shutdown.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::http::{H2Request, RawRequest};

    #[test]
    fn http1_request_is_echoed_and_recorded() {
        let echo = EchoServer::start().unwrap();
        let response = RawRequest::post("/api/v1/x?q=1", "hello")
            .bearer("secret-token")
            .header("x-one", "a")
            .header("x-one", "b")
            .send(echo.port())
            .unwrap();
        assert_eq!(response.status, 200);
        let body = response.json().unwrap();
        assert_eq!(body["method"], "POST");
        assert_eq!(body["path"], "/api/v1/x?q=1");
        assert_eq!(body["body_len"], 5);
        assert_eq!(body["body_sha256"], sha256_hex(b"hello"));
        assert!(!response.text().contains("secret-token"));
        assert!(response.text().contains("<redacted: 19 bytes>"));
        let requests = echo.requests();
        assert_eq!(requests.len(), 1);
        assert_eq!(requests[0].header_all("x-one"), vec!["a", "b"]);
        assert_eq!(
            requests[0].header("authorization"),
            Some("Bearer secret-token")
        );
        assert_eq!(requests[0].body, b"hello");
        echo.clear();
        assert!(echo.requests().is_empty());
    }

    #[test]
    fn http2_body_in_many_frames_and_trailers_are_echoed() {
        let echo = EchoServer::start().unwrap();
        let body = vec![7u8; 200_000];
        let response = H2Request::new("POST", "/hook")
            .header("content-type", "application/json")
            .body_in_pieces(&body, 9)
            .trailer("x-checksum", "abc")
            .send_blocking(echo.port())
            .unwrap();
        assert_eq!(response.status, 200, "{}", response.text());
        let requests = echo.requests();
        assert_eq!(requests[0].version, "HTTP/2.0");
        assert_eq!(requests[0].body, body);
        assert_eq!(
            requests[0].trailers,
            vec![("x-checksum".to_owned(), "abc".to_owned())]
        );
        assert_eq!(response.json().unwrap()["trailers"][0][1], "abc");
    }

    #[test]
    fn status_override_header_sets_the_reply_status() {
        let echo = EchoServer::start().unwrap();
        let response = RawRequest::get("/")
            .header(STATUS_OVERRIDE_HEADER, "503")
            .send(echo.port())
            .unwrap();
        assert_eq!(response.status, 503);
        assert_eq!(echo.requests().len(), 1);
    }

    #[test]
    fn chunked_http1_body_is_reassembled() {
        let echo = EchoServer::start().unwrap();
        RawRequest::new("PUT", "/c")
            .chunked(vec![b"ab".to_vec(), b"cd".to_vec()])
            .send(echo.port())
            .unwrap();
        assert_eq!(echo.requests()[0].body, b"abcd");
    }

    #[test]
    fn start_on_a_taken_address_fails() {
        let echo = EchoServer::start().unwrap();
        assert!(EchoServer::start_on(echo.address(), Recorder::default()).is_err());
    }
}
