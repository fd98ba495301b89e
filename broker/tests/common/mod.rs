//! Real loopback servers for the http.fetch tests.
#![allow(
    dead_code,
    unreachable_pub,
    missing_docs,
    clippy::unwrap_used,
    clippy::indexing_slicing
)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicUsize, Ordering};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// A loopback HTTP/1.1 server that counts accepted connections and answers
/// each request with `response` (then closes).
pub struct Server {
    pub addr: SocketAddr,
    count: Arc<AtomicUsize>,
}

impl Server {
    /// A server whose accept loop counts into `count`.
    pub fn from_parts(addr: SocketAddr, count: Arc<AtomicUsize>) -> Server {
        Server { addr, count }
    }

    pub fn port(&self) -> u16 {
        self.addr.port()
    }
    pub fn accepted(&self) -> usize {
        self.count.load(Ordering::SeqCst)
    }
}

/// Reads a request head (up to the blank line), at most 64 KiB.
pub async fn read_head(s: &mut TcpStream) -> Vec<u8> {
    let mut buf = Vec::new();
    let mut chunk = [0u8; 4096];
    while !buf.windows(4).any(|w| w == b"\r\n\r\n") && buf.len() < 65536 {
        match s.read(&mut chunk).await {
            Ok(0) | Err(_) => break,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
    buf
}

pub async fn serve(response: Vec<u8>) -> Server {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let count = Arc::new(AtomicUsize::new(0));
    let c = Arc::clone(&count);
    let response = Arc::new(response);
    tokio::spawn(async move {
        while let Ok((mut s, _)) = listener.accept().await {
            c.fetch_add(1, Ordering::SeqCst);
            let response = Arc::clone(&response);
            tokio::spawn(async move {
                read_head(&mut s).await;
                let _ = s.write_all(&response).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Server { addr, count }
}

/// A server answering `200 ok`.
pub async fn sink() -> Server {
    serve(b"HTTP/1.1 200 OK\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok".to_vec()).await
}
