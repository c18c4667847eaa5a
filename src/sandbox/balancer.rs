//! A TCP load balancer on 127.0.0.1 for several portal instances, as HAProxy in TCP mode would
//! be: each new connection goes to a backend that accepts it, and its bytes (TLS, WebSocket)
//! pass through untouched. A backend that is down is skipped as soon as it refuses a connection;
//! one that dies cuts the connections it had.
//!
//! [`Balancer::start`] tries the backends in order (HAProxy's `balance first`: a test knows where
//! a connection lands); [`Balancer::round_robin`] starts each connection at the next backend
//! (`balance roundrobin`: load spreads over the instances).

use std::net::{Ipv4Addr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use tokio::net::{TcpListener, TcpStream};

/// A running balancer; dropping it stops it (connections it passed on end with their ends).
pub struct Balancer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    /// Each connection to the first backend, in order, that accepts it.
    pub async fn start(backends: Vec<SocketAddr>) -> std::io::Result<Balancer> {
        Self::spawn(backends, false).await
    }

    /// Each connection to the backend after the last one's, or the next that accepts it.
    pub async fn round_robin(backends: Vec<SocketAddr>) -> std::io::Result<Balancer> {
        Self::spawn(backends, true).await
    }

    async fn spawn(backends: Vec<SocketAddr>, rotate: bool) -> std::io::Result<Balancer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let next = Arc::new(AtomicUsize::new(0));
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let mut order = backends.clone();
                if rotate && !order.is_empty() {
                    let first = next.fetch_add(1, Ordering::Relaxed) % order.len();
                    order.rotate_left(first);
                }
                tokio::spawn(async move {
                    for addr in order {
                        if let Ok(mut backend) = TcpStream::connect(addr).await {
                            let _ = client.set_nodelay(true);
                            let _ = backend.set_nodelay(true);
                            let _ = tokio::io::copy_bidirectional(&mut client, &mut backend).await;
                            return;
                        }
                    }
                    // No backend is up: the client sees its connection closed.
                });
            }
        });
        Ok(Balancer { port, task })
    }
}

impl Drop for Balancer {
    fn drop(&mut self) {
        self.task.abort();
    }
}
