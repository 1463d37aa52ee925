//! The HTTP client behind `host.http`: HTTP/1.1 over a plain TCP connection,
//! with timeouts and size caps, performed by the host so that a plugin
//! never holds a socket.

use std::fmt::Write as _;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::time::{Duration, Instant};

use super::manifest::Origin;

/// Limits on one call.
#[derive(Debug, Clone, Copy)]
pub(crate) struct HttpLimits {
    pub connect_timeout: Duration,
    /// Whole exchange, from connect to the last byte.
    pub total_timeout: Duration,
    pub max_request_body: usize,
    pub max_response_body: usize,
    pub max_headers: usize,
}

impl Default for HttpLimits {
    fn default() -> Self {
        HttpLimits {
            connect_timeout: Duration::from_secs(3),
            total_timeout: Duration::from_secs(10),
            max_request_body: 1 << 20,
            max_response_body: 1 << 20,
            max_headers: 64,
        }
    }
}

pub(crate) struct HttpRequest<'a> {
    pub method: &'a str,
    pub url: &'a str,
    pub headers: &'a [(String, String)],
    pub body: &'a [u8],
}

#[derive(Debug)]
pub(crate) struct HttpResponse {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

fn is_token(s: &str) -> bool {
    !s.is_empty()
        && s.bytes()
            .all(|b| b.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&b))
}

/// Performs `req` if its origin is in `allowed`; every refusal and failure
/// is an `Err` with a reason the plugin (and the plugin log) can read.
pub(crate) fn perform(
    req: &HttpRequest<'_>,
    allowed: &[Origin],
    limits: &HttpLimits,
) -> Result<HttpResponse, String> {
    let (origin, path) = Origin::split_url(req.url)?;
    if !allowed.contains(&origin) {
        return Err(format!("{origin} is not in this plugin's allowed_hosts"));
    }
    if origin.scheme != "http" {
        return Err(format!("{origin}: https is not supported by this host yet"));
    }
    if !is_token(req.method) {
        return Err(format!("bad method {:?}", req.method));
    }
    if req.body.len() > limits.max_request_body {
        return Err(format!(
            "request body over {} bytes",
            limits.max_request_body
        ));
    }
    if req.headers.len() > limits.max_headers {
        return Err(format!("more than {} request headers", limits.max_headers));
    }
    let head = request_head(req, &origin, &path)?;

    let deadline = Instant::now() + limits.total_timeout;
    let host_for_dns = origin.host.trim_start_matches('[').trim_end_matches(']');
    let addr = (host_for_dns, origin.port)
        .to_socket_addrs()
        .map_err(|e| format!("{origin}: cannot resolve: {e}"))?
        .next()
        .ok_or_else(|| format!("{origin}: no address"))?;
    let stream = TcpStream::connect_timeout(&addr, limits.connect_timeout)
        .map_err(|e| format!("{origin}: connect failed: {e}"))?;
    let remaining = deadline
        .saturating_duration_since(Instant::now())
        .max(Duration::from_millis(1));
    stream
        .set_write_timeout(Some(remaining))
        .and_then(|()| stream.set_read_timeout(Some(remaining)))
        .map_err(|e| e.to_string())?;
    let mut writer = &stream;
    writer
        .write_all(head.as_bytes())
        .and_then(|()| writer.write_all(req.body))
        .map_err(|e| format!("{origin}: sending failed: {e}"))?;
    read_response(&stream, &origin, deadline, limits)
}

/// The request line and headers; refuses header injection.
fn request_head(req: &HttpRequest<'_>, origin: &Origin, path: &str) -> Result<String, String> {
    let mut head = format!("{} {path} HTTP/1.1\r\n", req.method.to_ascii_uppercase());
    let host_header = if origin.port == 80 {
        origin.host.clone()
    } else {
        format!("{}:{}", origin.host, origin.port)
    };
    let _ = write!(
        head,
        "Host: {host_header}\r\nConnection: close\r\nContent-Length: {}\r\n",
        req.body.len()
    );
    for (name, value) in req.headers {
        if !is_token(name) || value.contains(['\r', '\n']) {
            return Err(format!("bad request header {name:?}"));
        }
        let lower = name.to_ascii_lowercase();
        if matches!(
            lower.as_str(),
            "host" | "connection" | "content-length" | "transfer-encoding"
        ) {
            continue;
        }
        let _ = write!(head, "{name}: {value}\r\n");
    }
    head.push_str("\r\n");
    Ok(head)
}

/// Reads the status line, headers and body (by length, chunked, or to EOF).
fn read_response(
    stream: &TcpStream,
    origin: &Origin,
    deadline: Instant,
    limits: &HttpLimits,
) -> Result<HttpResponse, String> {
    let mut reader = BufReader::new(stream);
    let mut line = String::new();
    let read_line = |reader: &mut BufReader<&TcpStream>, line: &mut String| -> Result<(), String> {
        line.clear();
        if Instant::now() > deadline {
            return Err(format!("{origin}: timed out"));
        }
        let n = reader
            .by_ref()
            .take(8192)
            .read_line(line)
            .map_err(|e| format!("{origin}: reading failed: {e}"))?;
        if n == 0 {
            return Err(format!("{origin}: connection closed early"));
        }
        Ok(())
    };
    read_line(&mut reader, &mut line)?;
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .filter(|_| line.starts_with("HTTP/1."))
        .ok_or_else(|| format!("{origin}: not an HTTP response"))?;
    let mut headers = Vec::new();
    loop {
        read_line(&mut reader, &mut line)?;
        let l = line.trim_end_matches(['\r', '\n']);
        if l.is_empty() {
            break;
        }
        if headers.len() >= limits.max_headers {
            return Err(format!("{origin}: too many response headers"));
        }
        if let Some((k, v)) = l.split_once(':') {
            headers.push((k.trim().to_string(), v.trim().to_string()));
        }
    }
    let header = |name: &str| {
        headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    };
    let cap = limits.max_response_body;
    let too_big = || format!("{origin}: response body over {cap} bytes");
    let reading = |e: std::io::Error| format!("{origin}: reading failed: {e}");
    let mut body = Vec::new();
    if header("transfer-encoding").is_some_and(|v| v.to_ascii_lowercase().contains("chunked")) {
        loop {
            read_line(&mut reader, &mut line)?;
            let size = usize::from_str_radix(line.trim().split(';').next().unwrap_or(""), 16)
                .map_err(|_| format!("{origin}: bad chunk size"))?;
            if size == 0 {
                break;
            }
            if body.len() + size > cap {
                return Err(too_big());
            }
            let start = body.len();
            body.resize(start + size, 0);
            reader.read_exact(&mut body[start..]).map_err(reading)?;
            read_line(&mut reader, &mut line)?; // the CRLF after the chunk
        }
    } else if let Some(len) = header("content-length") {
        let len: usize = len
            .parse()
            .map_err(|_| format!("{origin}: bad content-length"))?;
        if len > cap {
            return Err(too_big());
        }
        body.resize(len, 0);
        reader.read_exact(&mut body).map_err(reading)?;
    } else {
        reader
            .take(cap as u64 + 1)
            .read_to_end(&mut body)
            .map_err(reading)?;
        if body.len() > cap {
            return Err(too_big());
        }
    }
    Ok(HttpResponse {
        status,
        headers,
        body,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::net::TcpListener;

    fn serve_once(response: &'static [u8]) -> (u16, std::thread::JoinHandle<Vec<u8>>) {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        let handle = std::thread::spawn(move || {
            let (mut s, _) = listener.accept().unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            let mut got = Vec::new();
            let mut buf = [0u8; 4096];
            while !got.windows(4).any(|w| w == b"\r\n\r\n") {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            let body_len = 5; // the tests send "hello"
            while got.len() < got.windows(4).position(|w| w == b"\r\n\r\n").unwrap() + 4 + body_len
            {
                let n = s.read(&mut buf).unwrap();
                got.extend_from_slice(&buf[..n]);
            }
            s.write_all(response).unwrap();
            got
        });
        (port, handle)
    }

    fn origin(port: u16) -> Origin {
        Origin {
            scheme: "http".into(),
            host: "127.0.0.1".into(),
            port,
        }
    }

    #[test]
    fn posts_and_reads_content_length_and_chunked_responses() {
        for (response, want) in [
            (&b"HTTP/1.1 201 Created\r\nContent-Length: 2\r\nX-A: b\r\n\r\nok"[..], &b"ok"[..]),
            (&b"HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2\r\nde\r\n0\r\n\r\n"[..], &b"abcde"[..]),
        ] {
            let response: &'static [u8] = Box::leak(response.to_vec().into_boxed_slice());
            let (port, server) = serve_once(response);
            let url = format!("http://127.0.0.1:{port}/hook?x=1");
            let headers = vec![("Authorization".to_string(), "Bearer t".to_string())];
            let req = HttpRequest { method: "POST", url: &url, headers: &headers, body: b"hello" };
            let resp = perform(&req, &[origin(port)], &HttpLimits::default()).unwrap();
            assert_eq!(resp.body, want);
            let sent = String::from_utf8(server.join().unwrap()).unwrap();
            assert!(sent.starts_with("POST /hook?x=1 HTTP/1.1\r\n"), "{sent}");
            assert!(sent.contains("Authorization: Bearer t\r\n") && sent.ends_with("\r\n\r\nhello"));
        }
    }

    #[test]
    fn origins_outside_the_allowlist_are_refused_before_connecting() {
        let req = HttpRequest {
            method: "GET",
            url: "http://127.0.0.1:1/x",
            headers: &[],
            body: b"",
        };
        let e = perform(&req, &[origin(2)], &HttpLimits::default()).unwrap_err();
        assert!(e.contains("not in this plugin's allowed_hosts"), "{e}");
        let bad = vec![("X".to_string(), "a\r\nInjected: 1".to_string())];
        let req = HttpRequest {
            method: "GET",
            url: "http://127.0.0.1:2/x",
            headers: &bad,
            body: b"",
        };
        assert!(
            perform(&req, &[origin(2)], &HttpLimits::default())
                .unwrap_err()
                .contains("header")
        );
    }

    #[test]
    fn a_closed_port_is_an_error_not_a_hang() {
        let listener = TcpListener::bind("127.0.0.1:0").unwrap();
        let port = listener.local_addr().unwrap().port();
        drop(listener);
        let url = format!("http://127.0.0.1:{port}/");
        let req = HttpRequest {
            method: "GET",
            url: &url,
            headers: &[],
            body: b"",
        };
        let e = perform(&req, &[origin(port)], &HttpLimits::default()).unwrap_err();
        assert!(e.contains("connect failed"), "{e}");
    }
}
