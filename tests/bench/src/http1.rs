//! A lean HTTP/1.1 keep-alive client for the load generators: one request at a time
//! on one plain TCP connection, the request pre-serialised by the caller, and a
//! minimal response parser (status line, `Content-Length`, `Connection`, body).
//!
//! It measures the same thing as the reqwest client ([`crate::client`]) for a
//! fraction of its CPU: it sends the request bytes, reads until the whole answer
//! (head and `Content-Length` bytes of body) is in, and hands back the status and the
//! body for the caller to check. Like the reqwest client it closes a connection that
//! has been idle for [`IDLE_TIMEOUT`], below actix-web's 5 s keep-alive, so it never
//! reuses a connection the server is closing; it opens a new connection whenever it
//! has none. Anything it does not understand (another protocol version, chunked
//! transfer coding, a body without a length, bytes after the answer) is an error,
//! never a guess.

use std::net::SocketAddr;
use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::TcpStream;

/// Idle connections are closed after this long (as the reqwest client's pool does).
pub const IDLE_TIMEOUT: Duration = Duration::from_secs(4);

/// How long one request may take, connect included (the reqwest client's timeout).
pub const REQUEST_TIMEOUT: Duration = Duration::from_secs(10);

/// Answers larger than this are refused (the receiver's answers are a few hundred
/// bytes).
const MAX_RESPONSE: usize = 64 * 1024;

/// A complete request: head and body, ready to write.
///
/// `headers` are written in order after the request line, then `accept`, `host` and
/// (when there is a body) `content-length`, as reqwest writes them.
pub fn request_bytes(
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
    body: &[u8],
) -> Vec<u8> {
    let mut head = format!("{method} {path} HTTP/1.1\r\n");
    for (name, value) in headers {
        head.push_str(name);
        head.push_str(": ");
        head.push_str(value);
        head.push_str("\r\n");
    }
    head.push_str("accept: */*\r\nhost: ");
    head.push_str(host);
    head.push_str("\r\n");
    if !body.is_empty() || method == "POST" {
        head.push_str(&format!("content-length: {}\r\n", body.len()));
    }
    head.push_str("\r\n");
    let mut out = head.into_bytes();
    out.extend_from_slice(body);
    out
}

/// One answer: its status and body (borrowed from the connection's buffer).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Answer<'a> {
    pub status: u16,
    pub body: &'a [u8],
}

/// One keep-alive connection to `addr`, opened on first use.
#[derive(Debug)]
pub struct Conn {
    addr: SocketAddr,
    stream: Option<TcpStream>,
    buf: Vec<u8>,
    last_used: Instant,
}

impl Conn {
    pub fn new(addr: SocketAddr) -> Self {
        Self {
            addr,
            stream: None,
            buf: Vec::with_capacity(4096),
            last_used: Instant::now(),
        }
    }

    /// Sends `request` (from [`request_bytes`]) and reads the whole answer. On any
    /// error the connection is dropped; the next request opens a new one.
    pub async fn send(&mut self, request: &[u8]) -> Result<Answer<'_>, String> {
        if self.stream.is_some() && self.last_used.elapsed() >= IDLE_TIMEOUT {
            self.stream = None;
        }
        let exchange = tokio::time::timeout(REQUEST_TIMEOUT, self.exchange(request)).await;
        let outcome = match exchange {
            Ok(result) => result,
            Err(_elapsed) => Err("transport error (timeout): no answer in time".into()),
        };
        self.last_used = Instant::now();
        match outcome {
            Ok(parsed) => {
                if !parsed.keep_alive {
                    self.stream = None;
                }
                Ok(Answer {
                    status: parsed.status,
                    body: &self.buf[parsed.body_start..parsed.body_end],
                })
            }
            Err(e) => {
                self.stream = None;
                Err(e)
            }
        }
    }

    async fn exchange(&mut self, request: &[u8]) -> Result<Head, String> {
        if self.stream.is_none() {
            let stream = TcpStream::connect(self.addr)
                .await
                .map_err(|e| format!("transport error (connect): {e}"))?;
            stream
                .set_nodelay(true)
                .map_err(|e| format!("transport error (connect): {e}"))?;
            self.stream = Some(stream);
        }
        let Some(stream) = self.stream.as_mut() else {
            return Err("transport error (connect): no connection".into());
        };
        stream
            .write_all(request)
            .await
            .map_err(|e| format!("transport error (request): {e}"))?;
        self.buf.clear();
        let head = loop {
            if let Some(head) = parse_head(&self.buf)? {
                break head;
            }
            read_more(stream, &mut self.buf).await?;
        };
        let end = head.body_end;
        while self.buf.len() < end {
            read_more(stream, &mut self.buf).await?;
        }
        if self.buf.len() > end {
            // One request at a time: the server has nothing else to say.
            return Err("transport error (body): bytes after the answer".into());
        }
        Ok(head)
    }
}

async fn read_more(stream: &mut TcpStream, buf: &mut Vec<u8>) -> Result<(), String> {
    if buf.len() >= MAX_RESPONSE {
        return Err("transport error (body): answer too large".into());
    }
    if buf.capacity() - buf.len() < 1024 {
        buf.reserve(4096);
    }
    match stream.read_buf(buf).await {
        Ok(0) => {
            Err("transport error (request): connection closed before message completed".into())
        }
        Ok(_) => Ok(()),
        Err(e) => Err(format!("transport error (request): {e}")),
    }
}

/// A parsed answer head: status, where the body is in the buffer, and whether the
/// connection stays open.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
struct Head {
    status: u16,
    body_start: usize,
    body_end: usize,
    keep_alive: bool,
}

/// Parses the answer head at the start of `buf`: `Ok(None)` until it is complete.
fn parse_head(buf: &[u8]) -> Result<Option<Head>, String> {
    let Some(head_len) = buf.windows(4).position(|w| w == b"\r\n\r\n") else {
        return Ok(None);
    };
    let bad = |what: &str| Err(format!("transport error (body): {what}"));
    let head = &buf[..head_len];
    let mut lines = head
        .split(|&b| b == b'\n')
        .map(|l| l.strip_suffix(b"\r").unwrap_or(l));
    let status_line = lines.next().unwrap_or_default();
    let Some(rest) = status_line.strip_prefix(b"HTTP/1.1 ") else {
        return bad("not an HTTP/1.1 status line");
    };
    let status = match rest.get(..3) {
        Some(code)
            if code.iter().all(u8::is_ascii_digit) && rest.get(3).is_none_or(|&b| b == b' ') =>
        {
            code.iter().fold(0u16, |n, d| n * 10 + u16::from(d - b'0'))
        }
        _ => return bad("malformed status code"),
    };
    let mut length: Option<usize> = None;
    let mut keep_alive = true;
    for line in lines {
        let Some(colon) = line.iter().position(|&b| b == b':') else {
            return bad("malformed header line");
        };
        let (name, value) = (&line[..colon], line[colon + 1..].trim_ascii());
        if name.eq_ignore_ascii_case(b"content-length") {
            let parsed = std::str::from_utf8(value)
                .ok()
                .filter(|v| !v.is_empty() && v.bytes().all(|b| b.is_ascii_digit()))
                .and_then(|v| v.parse::<usize>().ok());
            match (parsed, length) {
                (Some(n), None) => length = Some(n),
                (Some(n), Some(m)) if n == m => {}
                _ => return bad("bad or conflicting content-length"),
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") {
            return bad("transfer-encoding is not supported by this client");
        } else if name.eq_ignore_ascii_case(b"connection")
            && value
                .split(|&b| b == b',')
                .any(|t| t.trim_ascii().eq_ignore_ascii_case(b"close"))
        {
            keep_alive = false;
        }
    }
    let body_start = head_len + 4;
    let length = match status {
        100..=199 => return bad("interim answers are not expected"),
        204 | 304 => 0,
        _ => match length {
            Some(n) => n,
            None => return bad("answer without content-length"),
        },
    };
    if length > MAX_RESPONSE {
        return bad("answer too large");
    }
    Ok(Some(Head {
        status,
        body_start,
        body_end: body_start + length,
        keep_alive,
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn request_bytes_are_a_complete_http11_request() {
        let r = request_bytes(
            "POST",
            "127.0.0.1:8080",
            "/notify/alipay/m1",
            &[("content-type", "text/xml")],
            b"<xml/>",
        );
        assert_eq!(
            r,
            b"POST /notify/alipay/m1 HTTP/1.1\r\ncontent-type: text/xml\r\naccept: */*\r\n\
              host: 127.0.0.1:8080\r\ncontent-length: 6\r\n\r\n<xml/>"
        );
        let g = request_bytes("GET", "h", "/healthz", &[], b"");
        assert_eq!(
            g,
            b"GET /healthz HTTP/1.1\r\naccept: */*\r\nhost: h\r\n\r\n"
        );
    }

    #[test]
    fn heads_parse_with_their_body_bounds() {
        let a = b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\nContent-Type: text/plain\r\n\r\nsuccess";
        let h = parse_head(a).expect("valid").expect("complete");
        assert_eq!(
            (h.status, &a[h.body_start..h.body_end], h.keep_alive),
            (200, &b"success"[..], true)
        );
        let b = b"HTTP/1.1 204 No Content\r\nx-request-id: 1\r\n\r\n";
        let h = parse_head(b).expect("valid").expect("complete");
        assert_eq!((h.status, h.body_end - h.body_start), (204, 0));
        let c = b"HTTP/1.1 503 Service Unavailable\r\nConnection: close\r\nContent-Length: 4\r\n\r\nfail";
        let h = parse_head(c).expect("valid").expect("complete");
        assert_eq!((h.status, h.keep_alive), (503, false));
        assert_eq!(parse_head(b"HTTP/1.1 200 OK\r\ncontent-le"), Ok(None));
    }

    #[test]
    fn what_the_client_does_not_understand_is_an_error() {
        for bad in [
            &b"HTTP/1.0 200 OK\r\ncontent-length: 1\r\n\r\nx"[..],
            b"HTTP/1.1 2x0 OK\r\ncontent-length: 1\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\ntransfer-encoding: chunked\r\n\r\n",
            b"HTTP/1.1 200 OK\r\n\r\n",
            b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\nx",
            b"HTTP/1.1 200 OK\r\ncontent-length: -1\r\n\r\n",
            b"HTTP/1.1 200 OK\r\nno colon\r\n\r\n",
        ] {
            assert!(parse_head(bad).is_err(), "{}", String::from_utf8_lossy(bad));
        }
    }

    #[tokio::test]
    async fn a_connection_carries_requests_one_after_the_other() {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0")
            .await
            .expect("bind");
        let addr = listener.local_addr().expect("addr");
        let server = tokio::spawn(async move {
            let (mut s, _) = listener.accept().await.expect("accept");
            let mut buf = vec![0u8; 4096];
            for answer in [
                &b"HTTP/1.1 200 OK\r\ncontent-length: 7\r\n\r\nsuccess"[..],
                b"HTTP/1.1 204 No Content\r\n\r\n",
            ] {
                let mut got = Vec::new();
                while !got.ends_with(b"hello") {
                    let n = s.read(&mut buf).await.expect("read");
                    assert!(n > 0, "client closed early");
                    got.extend_from_slice(&buf[..n]);
                }
                // The head in two writes: the client must wait for the rest.
                s.write_all(&answer[..10]).await.expect("write");
                s.flush().await.expect("flush");
                s.write_all(&answer[10..]).await.expect("write");
            }
        });
        let mut conn = Conn::new(addr);
        let req = request_bytes("POST", "x", "/", &[], b"hello");
        let a = conn.send(&req).await.expect("first answer");
        assert_eq!((a.status, a.body), (200, &b"success"[..]));
        let b = conn
            .send(&req)
            .await
            .expect("second answer, same connection");
        assert_eq!((b.status, b.body), (204, &b""[..]));
        server.await.expect("server");
        assert!(conn.send(&req).await.is_err(), "the server has gone");
    }
}
