//! A TCP load balancer on 127.0.0.1 for several portal instances, as HAProxy's `balance first`
//! in TCP mode would be: each new connection goes to the first backend, in order, that accepts
//! it, and its bytes (TLS, WebSocket) pass through untouched. A backend that is down is skipped
//! as soon as it refuses a connection; one that dies cuts the connections it had.

use std::net::{Ipv4Addr, SocketAddr};
use tokio::net::{TcpListener, TcpStream};

/// A running balancer; dropping it stops it (connections it passed on end with their ends).
pub struct Balancer {
    pub port: u16,
    task: tokio::task::JoinHandle<()>,
}

impl Balancer {
    pub async fn start(backends: Vec<SocketAddr>) -> std::io::Result<Balancer> {
        let listener = TcpListener::bind((Ipv4Addr::LOCALHOST, 0)).await?;
        let port = listener.local_addr()?.port();
        let task = tokio::spawn(async move {
            while let Ok((mut client, _)) = listener.accept().await {
                let backends = backends.clone();
                tokio::spawn(async move {
                    for addr in backends {
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
