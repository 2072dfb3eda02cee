//! One raw HTTP/1.1 exchange on a new connection (`connection: close`), for
//! tests of the HTTP interfaces (RFC 7285, the tracker) that need to control
//! every header byte, `Host` included.

use std::{net::SocketAddr, time::Duration};

use tokio::{
    io::{AsyncReadExt as _, AsyncWriteExt as _},
    net::TcpStream,
};

/// An answer: its status, head (status line and headers) and body.
#[derive(Debug)]
pub struct Answer {
    /// The status code.
    pub status: u16,
    /// The status line and the headers.
    pub head: String,
    /// The body.
    pub body: String,
}

impl Answer {
    /// A header's value (case-insensitive name), or "".
    pub fn header(&self, name: &str) -> String {
        self.head
            .lines()
            .find_map(|l| {
                l.split_once(':').filter(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.trim().to_owned())
            })
            .unwrap_or_default()
    }
}

/// Sends `method path` with `extra` header lines (each ending in CRLF; a
/// `host:` among them replaces the default one) and a JSON `body`; reads the
/// whole answer within `within`. Panics on any transport failure.
pub async fn exchange(addr: SocketAddr, method: &str, path: &str, extra: &str, body: &str, within: Duration) -> Answer {
    let mut s = TcpStream::connect(addr).await.expect("connect");
    let host = if extra.to_ascii_lowercase().contains("host:") { String::new() } else { format!("host: {addr}\r\n") };
    let req = format!(
        "{method} {path} HTTP/1.1\r\n{host}{extra}content-type: application/json\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
        body.len()
    );
    s.write_all(req.as_bytes()).await.expect("write");
    let mut out = Vec::new();
    tokio::time::timeout(within, s.read_to_end(&mut out)).await.expect("answer in time").expect("read");
    let text = String::from_utf8(out).expect("utf-8");
    let (head, body) = text.split_once("\r\n\r\n").expect("head and body");
    let status = head.split_whitespace().nth(1).and_then(|s| s.parse().ok()).expect("status");
    Answer { status, head: head.to_owned(), body: body.to_owned() }
}
