//! Bounds on the gRPC port's connections, below HTTP/2: how many may be open,
//! how soon a new one must start talking, and how long one may stay silent.
//!
//! Every accepted TCP stream is wrapped in a [`Guarded`] stream that holds a
//! slot of the connection limit (released when the connection closes) and
//! fails its reads once the peer has sent fewer than [`HANDSHAKE_BYTES`] bytes
//! within the handshake timeout (a connection that never speaks, or a
//! slowloris trickling its preface), or nothing at all for the idle timeout
//! (the server sends an HTTP/2 PING after half of it, so a live client always
//! answers in time). Refusals are counted in `altocast_grpc_refused_total{reason}`.

use std::{
    io,
    pin::Pin,
    sync::Arc,
    task::{Context, Poll},
    time::Duration,
};

use futures::{Stream, StreamExt as _};
use tokio::{
    io::{AsyncRead, AsyncWrite, ReadBuf},
    net::{TcpListener, TcpStream},
    sync::{OwnedSemaphorePermit, Semaphore},
    time::{Instant, Sleep},
};
use tonic::transport::server::{Connected, TcpConnectInfo};
use tracing::debug;

/// Bytes a new connection must send within the handshake timeout: the
/// HTTP/2 client preface is 24 bytes, a TLS ClientHello more.
pub const HANDSHAKE_BYTES: usize = 24;

/// The bounds (flags `--grpc-max-connections`, `--grpc-handshake-timeout-secs`,
/// `--grpc-idle-timeout-secs`).
#[derive(Debug, Clone, Copy)]
pub struct ConnLimits {
    /// Most open connections; more are accepted and closed at once.
    pub max_connections: usize,
    /// Time for a new connection's first [`HANDSHAKE_BYTES`] bytes.
    pub handshake_timeout: Duration,
    /// Longest silence from the peer on an established connection.
    pub idle_timeout: Duration,
}

impl Default for ConnLimits {
    fn default() -> Self {
        ConnLimits {
            max_connections: 10_000,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(120),
        }
    }
}

fn refused(reason: &'static str) {
    metrics::counter!("altocast_grpc_refused_total", "reason" => reason).increment(1);
}

/// The accepted connections of `listener`, bounded by `limits`.
pub fn incoming(listener: TcpListener, limits: ConnLimits) -> impl Stream<Item = io::Result<Guarded>> {
    let slots = Arc::new(Semaphore::new(limits.max_connections));
    tokio_stream::wrappers::TcpListenerStream::new(listener).filter_map(move |s| {
        let slots = slots.clone();
        async move {
            let s = match s {
                Ok(s) => s,
                // A failed accept (EMFILE, a reset) ends nothing: keep serving.
                Err(e) => {
                    debug!(error = %e, "accept failed");
                    return None;
                }
            };
            let Ok(permit) = slots.try_acquire_owned() else {
                refused("connections");
                drop(s);
                return None;
            };
            // Without it small updates wait ~40 ms for delayed ACKs.
            let _ = s.set_nodelay(true);
            Some(Ok(Guarded::new(s, permit, limits)))
        }
    })
}

/// An accepted connection under [`ConnLimits`].
#[derive(Debug)]
pub struct Guarded {
    inner: TcpStream,
    _slot: OwnedSemaphorePermit,
    limits: ConnLimits,
    received: usize,
    deadline: Pin<Box<Sleep>>,
}

impl Guarded {
    fn new(inner: TcpStream, slot: OwnedSemaphorePermit, limits: ConnLimits) -> Guarded {
        let deadline = Box::pin(tokio::time::sleep(limits.handshake_timeout));
        Guarded { inner, _slot: slot, limits, received: 0, deadline }
    }
}

impl Connected for Guarded {
    type ConnectInfo = TcpConnectInfo;
    fn connect_info(&self) -> TcpConnectInfo {
        self.inner.connect_info()
    }
}

impl AsyncRead for Guarded {
    fn poll_read(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &mut ReadBuf<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        let before = buf.filled().len();
        match Pin::new(&mut this.inner).poll_read(cx, buf) {
            Poll::Ready(Ok(())) => {
                let n = buf.filled().len() - before;
                if n > 0 {
                    this.received += n;
                    if this.received >= HANDSHAKE_BYTES {
                        let idle = this.limits.idle_timeout;
                        this.deadline.as_mut().reset(Instant::now() + idle);
                    }
                }
                Poll::Ready(Ok(()))
            }
            Poll::Ready(Err(e)) => Poll::Ready(Err(e)),
            Poll::Pending => match this.deadline.as_mut().poll(cx) {
                Poll::Ready(()) => {
                    let (reason, what) = if this.received < HANDSHAKE_BYTES {
                        ("handshake_timeout", "the connection did not start its handshake in time")
                    } else {
                        ("idle_timeout", "the peer was silent for too long")
                    };
                    refused(reason);
                    Poll::Ready(Err(io::Error::new(io::ErrorKind::TimedOut, what)))
                }
                Poll::Pending => Poll::Pending,
            },
        }
    }
}

impl AsyncWrite for Guarded {
    fn poll_write(mut self: Pin<&mut Self>, cx: &mut Context<'_>, buf: &[u8]) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write_vectored(cx, bufs)
    }
    fn is_write_vectored(&self) -> bool {
        self.inner.is_write_vectored()
    }
}
