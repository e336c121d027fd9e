//! HTTP clients for end-to-end tests.
//!
//! [`RawRequest`] is an HTTP/1.1 client over a plain `TcpStream` that writes
//! the request line and headers exactly as given: paths such as
//! `/api/v1/../x` or `%2F`, duplicate headers, absolute-form targets and
//! `OPTIONS *` reach the proxy byte for byte, which a normal client library
//! would "fix" first. [`H2Request`] speaks HTTP/2 with prior knowledge (h2c)
//! and can send a body in several DATA frames followed by trailers.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpStream;
use std::time::Duration;

use anyhow::{bail, Context};

/// How long a client waits for the proxy before giving up.
const IO_TIMEOUT: Duration = Duration::from_secs(20);

/// A response as the client received it.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    /// Every header line in order; names lower-cased, values as sent.
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
    /// HTTP/2 trailers (and HTTP/1.1 chunked trailers), if any.
    pub trailers: Vec<(String, String)>,
}

/// The first value of a header in a list of pairs (case-insensitive name).
pub fn header_value<'a>(headers: &'a [(String, String)], name: &str) -> Option<&'a str> {
    header_values(headers, name).into_iter().next()
}

/// Every value of a header in a list of pairs, in order (case-insensitive name).
pub fn header_values<'a>(headers: &'a [(String, String)], name: &str) -> Vec<&'a str> {
    headers
        .iter()
        .filter(|(key, _)| key.eq_ignore_ascii_case(name))
        .map(|(_, value)| value.as_str())
        .collect()
}

impl Response {
    /// The first value of a header (case-insensitive name).
    pub fn header(&self, name: &str) -> Option<&str> {
        header_value(&self.headers, name)
    }

    /// Every value of a header, in order.
    pub fn header_all(&self, name: &str) -> Vec<&str> {
        header_values(&self.headers, name)
    }

    /// The body as (lossy) UTF-8.
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }

    /// The body parsed as JSON.
    pub fn json(&self) -> anyhow::Result<serde_json::Value> {
        serde_json::from_slice(&self.body).with_context(|| {
            format!(
                "response body (status {}) is not JSON: {:?}",
                self.status,
                self.text()
            )
        })
    }
}

/// How a [`RawRequest`] sends its body.
#[derive(Debug, Clone)]
enum RawBody {
    None,
    /// Sent in one piece with a `content-length` header (unless one was given).
    Whole(Vec<u8>),
    /// `transfer-encoding: chunked`, one HTTP chunk per element.
    Chunked(Vec<Vec<u8>>),
}

/// An HTTP/1.1 request written exactly as given.
#[derive(Debug, Clone)]
pub struct RawRequest {
    method: String,
    target: String,
    headers: Vec<(String, String)>,
    body: RawBody,
}

impl RawRequest {
    /// `METHOD target HTTP/1.1` with a `host: localhost` header. `target` is
    /// written verbatim (origin-form, absolute-form or `*`).
    pub fn new(method: &str, target: &str) -> Self {
        Self {
            method: method.to_owned(),
            target: target.to_owned(),
            headers: vec![("host".to_owned(), "localhost".to_owned())],
            body: RawBody::None,
        }
    }

    /// `GET target`.
    pub fn get(target: &str) -> Self {
        Self::new("GET", target)
    }

    /// `POST target` with a body.
    pub fn post(target: &str, body: impl Into<Vec<u8>>) -> Self {
        Self::new("POST", target).body(body)
    }

    /// Appends a header line (a second call with the same name sends a
    /// duplicate header, on purpose).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// `authorization: Bearer <token>`.
    pub fn bearer(self, token: &str) -> Self {
        self.header("authorization", &format!("Bearer {token}"))
    }

    /// Removes every header of that name (e.g. the default `host`).
    pub fn without_header(mut self, name: &str) -> Self {
        self.headers
            .retain(|(key, _)| !key.eq_ignore_ascii_case(name));
        self
    }

    /// Sends `body` with a `content-length` header.
    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Self {
        self.body = RawBody::Whole(body.into());
        self
    }

    /// Sends the body with `transfer-encoding: chunked`, one chunk per element.
    pub fn chunked(mut self, chunks: Vec<Vec<u8>>) -> Self {
        self.body = RawBody::Chunked(chunks);
        self
    }

    /// The exact bytes this request puts on the wire.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut head = format!("{} {} HTTP/1.1\r\n", self.method, self.target);
        for (name, value) in &self.headers {
            head.push_str(&format!("{name}: {value}\r\n"));
        }
        let has = |wanted: &str| {
            self.headers
                .iter()
                .any(|(name, _)| name.eq_ignore_ascii_case(wanted))
        };
        let mut body = Vec::new();
        match &self.body {
            RawBody::None => {}
            RawBody::Whole(bytes) => {
                if !has("content-length") {
                    head.push_str(&format!("content-length: {}\r\n", bytes.len()));
                }
                body.extend_from_slice(bytes);
            }
            RawBody::Chunked(chunks) => {
                if !has("transfer-encoding") {
                    head.push_str("transfer-encoding: chunked\r\n");
                }
                for chunk in chunks.iter().filter(|chunk| !chunk.is_empty()) {
                    body.extend_from_slice(format!("{:x}\r\n", chunk.len()).as_bytes());
                    body.extend_from_slice(chunk);
                    body.extend_from_slice(b"\r\n");
                }
                body.extend_from_slice(b"0\r\n\r\n");
            }
        }
        head.push_str("\r\n");
        let mut bytes = head.into_bytes();
        bytes.extend_from_slice(&body);
        bytes
    }

    /// Sends the request to 127.0.0.1:`port` on a new connection and reads
    /// one response.
    pub fn send(&self, port: u16) -> anyhow::Result<Response> {
        let expect_body = !self.method.eq_ignore_ascii_case("HEAD");
        send_bytes(port, &self.to_bytes(), expect_body)
    }
}

/// Writes `bytes` as they are to 127.0.0.1:`port` and reads one HTTP/1.1
/// response. `expect_body` is false for a HEAD request.
pub fn send_bytes(port: u16, bytes: &[u8], expect_body: bool) -> anyhow::Result<Response> {
    let mut stream = TcpStream::connect(("127.0.0.1", port))
        .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
    stream.set_read_timeout(Some(IO_TIMEOUT))?;
    stream.set_write_timeout(Some(IO_TIMEOUT))?;
    stream.set_nodelay(true)?;
    stream
        .write_all(bytes)
        .with_context(|| format!("writing the request to 127.0.0.1:{port}"))?;
    stream.flush()?;
    let mut reader = BufReader::new(stream);
    read_response(&mut reader, expect_body)
}

/// Reads one HTTP/1.x response, skipping interim 1xx responses.
fn read_response(reader: &mut impl BufRead, expect_body: bool) -> anyhow::Result<Response> {
    loop {
        let status_line = read_line(reader)?.context("connection closed before a response")?;
        let mut parts = status_line.splitn(3, ' ');
        let version = parts.next().unwrap_or_default();
        if !version.starts_with("HTTP/1.") {
            bail!("not an HTTP/1.x status line: {status_line:?}");
        }
        let status: u16 = parts
            .next()
            .unwrap_or_default()
            .parse()
            .with_context(|| format!("bad status line {status_line:?}"))?;
        let headers = read_header_block(reader)?;
        if (100..200).contains(&status) {
            continue;
        }
        let mut response = Response {
            status,
            headers,
            body: Vec::new(),
            trailers: Vec::new(),
        };
        if !expect_body || status == 204 || status == 304 {
            return Ok(response);
        }
        let chunked = response
            .header("transfer-encoding")
            .is_some_and(|value| value.to_ascii_lowercase().contains("chunked"));
        if chunked {
            let (body, trailers) = read_chunked(reader)?;
            response.body = body;
            response.trailers = trailers;
        } else if let Some(length) = response.header("content-length") {
            let length: usize = length
                .trim()
                .parse()
                .with_context(|| format!("bad content-length {length:?}"))?;
            let mut body = vec![0; length];
            reader.read_exact(&mut body).context("reading the body")?;
            response.body = body;
        } else {
            reader
                .read_to_end(&mut response.body)
                .context("reading the body until close")?;
        }
        return Ok(response);
    }
}

/// One CRLF- (or LF-) terminated line without its terminator; `None` at EOF.
fn read_line(reader: &mut impl BufRead) -> anyhow::Result<Option<String>> {
    let mut line = Vec::new();
    let read = reader
        .read_until(b'\n', &mut line)
        .context("reading from the connection")?;
    if read == 0 {
        return Ok(None);
    }
    while matches!(line.last(), Some(b'\n' | b'\r')) {
        line.pop();
    }
    Ok(Some(String::from_utf8_lossy(&line).into_owned()))
}

fn read_header_block(reader: &mut impl BufRead) -> anyhow::Result<Vec<(String, String)>> {
    let mut headers = Vec::new();
    loop {
        let line = read_line(reader)?.context("connection closed inside the headers")?;
        if line.is_empty() {
            return Ok(headers);
        }
        let (name, value) = line
            .split_once(':')
            .with_context(|| format!("bad header line {line:?}"))?;
        headers.push((name.trim().to_ascii_lowercase(), value.trim().to_owned()));
    }
}

type BodyAndTrailers = (Vec<u8>, Vec<(String, String)>);

fn read_chunked(reader: &mut impl BufRead) -> anyhow::Result<BodyAndTrailers> {
    let mut body = Vec::new();
    loop {
        let size_line = read_line(reader)?.context("connection closed inside a chunked body")?;
        let size_hex = size_line.split(';').next().unwrap_or_default().trim();
        let size = usize::from_str_radix(size_hex, 16)
            .with_context(|| format!("bad chunk size line {size_line:?}"))?;
        if size == 0 {
            let trailers = read_header_block(reader)?;
            return Ok((body, trailers));
        }
        let start = body.len();
        body.resize(start + size, 0);
        reader
            .read_exact(&mut body[start..])
            .context("reading a chunk")?;
        read_line(reader)?;
    }
}

/// An HTTP/2 request over cleartext with prior knowledge (h2c).
#[derive(Debug, Clone)]
pub struct H2Request {
    method: String,
    path: String,
    headers: Vec<(String, String)>,
    data_frames: Vec<Vec<u8>>,
    trailers: Vec<(String, String)>,
}

impl H2Request {
    pub fn new(method: &str, path: &str) -> Self {
        Self {
            method: method.to_owned(),
            path: path.to_owned(),
            headers: Vec::new(),
            data_frames: Vec::new(),
            trailers: Vec::new(),
        }
    }

    /// Adds a request header (lower-case names, as HTTP/2 requires).
    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends the body as these pieces, each in its own DATA frame(s).
    pub fn data_frames(mut self, frames: Vec<Vec<u8>>) -> Self {
        self.data_frames = frames;
        self
    }

    /// Sends `body` split into `pieces` roughly equal DATA frames.
    pub fn body_in_pieces(self, body: &[u8], pieces: usize) -> Self {
        let size = body.len().div_ceil(pieces.max(1)).max(1);
        let frames = body.chunks(size).map(<[u8]>::to_vec).collect();
        self.data_frames(frames)
    }

    /// Ends the request with a trailers HEADERS frame.
    pub fn trailer(mut self, name: &str, value: &str) -> Self {
        self.trailers.push((name.to_owned(), value.to_owned()));
        self
    }

    /// Sends on a new connection from a private runtime (for synchronous
    /// tests).
    pub fn send_blocking(&self, port: u16) -> anyhow::Result<Response> {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .context("building a runtime for the HTTP/2 client")?;
        runtime.block_on(self.send(port))
    }

    /// Sends on a new HTTP/2 connection to 127.0.0.1:`port`.
    pub async fn send(&self, port: u16) -> anyhow::Result<Response> {
        tokio::time::timeout(IO_TIMEOUT, self.exchange(port))
            .await
            .with_context(|| format!("HTTP/2 exchange with 127.0.0.1:{port} timed out"))?
    }

    async fn exchange(&self, port: u16) -> anyhow::Result<Response> {
        let tcp = tokio::net::TcpStream::connect(("127.0.0.1", port))
            .await
            .with_context(|| format!("connecting to 127.0.0.1:{port}"))?;
        tcp.set_nodelay(true)?;
        let (client, connection) = h2::client::handshake(tcp)
            .await
            .context("HTTP/2 handshake")?;
        let driver = tokio::spawn(connection);
        let mut client = client
            .ready()
            .await
            .context("HTTP/2 connection not ready")?;

        let mut request = http::Request::builder()
            .method(self.method.as_str())
            .uri(format!("http://localhost{}", self.path));
        for (name, value) in &self.headers {
            request = request.header(name.as_str(), value.as_str());
        }
        let request = request.body(()).context("building the HTTP/2 request")?;
        let ends_at_headers = self.data_frames.is_empty() && self.trailers.is_empty();
        let (response, mut stream) = client
            .send_request(request, ends_at_headers)
            .context("sending HTTP/2 headers")?;

        let frame_count = self.data_frames.len();
        for (index, frame) in self.data_frames.iter().enumerate() {
            let last = index + 1 == frame_count && self.trailers.is_empty();
            send_respecting_flow_control(&mut stream, frame, last).await?;
        }
        if !self.trailers.is_empty() {
            let mut trailers = http::HeaderMap::new();
            for (name, value) in &self.trailers {
                trailers.append(
                    http::HeaderName::from_bytes(name.as_bytes())?,
                    http::HeaderValue::from_str(value)?,
                );
            }
            stream
                .send_trailers(trailers)
                .context("sending HTTP/2 trailers")?;
        }

        let response = response.await.context("waiting for the HTTP/2 response")?;
        let (parts, mut body) = response.into_parts();
        let mut bytes = Vec::new();
        while let Some(chunk) = body.data().await {
            let chunk = chunk.context("reading the HTTP/2 response body")?;
            let _ = body.flow_control().release_capacity(chunk.len());
            bytes.extend_from_slice(&chunk);
        }
        let trailers = body
            .trailers()
            .await
            .context("reading HTTP/2 response trailers")?
            .map(|map| header_pairs(&map))
            .unwrap_or_default();
        driver.abort();
        Ok(Response {
            status: parts.status.as_u16(),
            headers: header_pairs(&parts.headers),
            body: bytes,
            trailers,
        })
    }
}

/// Sends one body piece, waiting for the peer's flow-control window instead
/// of buffering the whole body inside h2.
async fn send_respecting_flow_control(
    stream: &mut h2::SendStream<bytes::Bytes>,
    piece: &[u8],
    end_of_stream: bool,
) -> anyhow::Result<()> {
    let mut rest = bytes::Bytes::copy_from_slice(piece);
    if rest.is_empty() {
        stream
            .send_data(rest, end_of_stream)
            .context("sending an HTTP/2 DATA frame")?;
        return Ok(());
    }
    while !rest.is_empty() {
        stream.reserve_capacity(rest.len());
        let granted = std::future::poll_fn(|cx| stream.poll_capacity(cx))
            .await
            .context("the peer closed the stream while we were sending the body")?
            .context("waiting for HTTP/2 send capacity")?;
        let now = rest.split_to(granted.min(rest.len()));
        stream
            .send_data(now, end_of_stream && rest.is_empty())
            .context("sending an HTTP/2 DATA frame")?;
    }
    Ok(())
}

fn header_pairs(map: &http::HeaderMap) -> Vec<(String, String)> {
    map.iter()
        .map(|(name, value)| {
            (
                name.as_str().to_owned(),
                String::from_utf8_lossy(value.as_bytes()).into_owned(),
            )
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::io::Read;
    use std::net::TcpListener;

    /// A one-shot server that records the raw request bytes and answers with
    /// `reply`.
    fn one_shot_server(reply: &'static [u8]) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut stream, _) = listener.accept().unwrap();
            stream
                .set_read_timeout(Some(Duration::from_millis(300)))
                .unwrap();
            let mut received = Vec::new();
            let mut buffer = [0u8; 4096];
            while let Ok(read) = stream.read(&mut buffer) {
                if read == 0 {
                    break;
                }
                received.extend_from_slice(&buffer[..read]);
            }
            stream.write_all(reply).unwrap();
            received
        });
        (port, handle)
    }

    #[test]
    fn request_line_and_duplicate_headers_are_sent_verbatim() {
        let bytes = RawRequest::get("/api/v1/../x%2F;y")
            .header("X-Avb-Subject", "one")
            .header("x-avb-subject", "two")
            .to_bytes();
        assert_eq!(
            String::from_utf8(bytes).unwrap(),
            "GET /api/v1/../x%2F;y HTTP/1.1\r\nhost: localhost\r\nX-Avb-Subject: one\r\n\
             x-avb-subject: two\r\n\r\n"
        );
    }

    #[test]
    fn chunked_body_is_framed_with_hex_sizes_and_a_final_zero_chunk() {
        let bytes = RawRequest::new("POST", "/w")
            .chunked(vec![b"hello".to_vec(), vec![b'x'; 17]])
            .to_bytes();
        let text = String::from_utf8(bytes).unwrap();
        assert!(text.contains("transfer-encoding: chunked\r\n"));
        assert!(text.ends_with(&format!(
            "5\r\nhello\r\n11\r\n{}\r\n0\r\n\r\n",
            "x".repeat(17)
        )));
    }

    #[test]
    fn whole_body_gets_a_content_length() {
        let text = String::from_utf8(RawRequest::post("/p", "abc").to_bytes()).unwrap();
        assert!(text.contains("content-length: 3\r\n"));
        assert!(text.ends_with("\r\n\r\nabc"));
    }

    #[test]
    fn response_with_content_length_and_repeated_headers_is_parsed() {
        let (port, server) = one_shot_server(
            b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 403 Forbidden\r\nContent-Type: application/json\r\n\
              Set-Cookie: a=1\r\nSet-Cookie: b=2\r\ncontent-length: 2\r\n\r\n{}",
        );
        let response = RawRequest::new("OPTIONS", "*").send(port).unwrap();
        assert_eq!(response.status, 403);
        assert_eq!(response.header("content-type"), Some("application/json"));
        assert_eq!(response.header_all("set-cookie"), vec!["a=1", "b=2"]);
        assert_eq!(response.json().unwrap(), serde_json::json!({}));
        let sent = server.join().unwrap();
        assert!(sent.starts_with(b"OPTIONS * HTTP/1.1\r\n"));
    }

    #[test]
    fn chunked_response_with_trailers_is_parsed() {
        let (port, _server) = one_shot_server(
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\nx-t: 1\r\n\r\n",
        );
        let response = RawRequest::get("/").send(port).unwrap();
        assert_eq!(response.body, b"abcde");
        assert_eq!(response.trailers, vec![("x-t".to_owned(), "1".to_owned())]);
    }

    #[test]
    fn garbage_instead_of_a_status_line_is_an_error() {
        let (port, _server) = one_shot_server(b"SSH-2.0-OpenSSH\r\n\r\n");
        let err = RawRequest::get("/").send(port).unwrap_err();
        assert!(err.to_string().contains("status line"));
    }

    #[test]
    fn non_json_body_is_reported_with_its_status() {
        let response = Response {
            status: 502,
            headers: Vec::new(),
            body: b"upstream connect error".to_vec(),
            trailers: Vec::new(),
        };
        assert!(response.json().unwrap_err().to_string().contains("502"));
    }

    #[test]
    fn connecting_to_a_closed_port_is_an_error() {
        let port = crate::procs::free_port();
        assert!(RawRequest::get("/").send(port).is_err());
        assert!(H2Request::new("GET", "/").send_blocking(port).is_err());
    }
}
