//! A TCP proxy under the test's control, to partition a component from the broker
//! without touching the broker other tests share.

use std::net::SocketAddr;
use std::sync::Arc;
use std::sync::atomic::{AtomicBool, Ordering};

use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

/// Forwards connections to `upstream` while open; [`Proxy::cut`] drops every live
/// connection and refuses new ones until [`Proxy::restore`]. With several upstreams
/// ([`Proxy::balance`]) it is a load balancer: each new connection goes to the next.
#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    upstreams: Arc<std::sync::Mutex<Vec<SocketAddr>>>,
    open: Arc<AtomicBool>,
    /// Replaced on every cut: live connections watch the current token.
    generation: Arc<std::sync::Mutex<CancellationToken>>,
    stop: CancellationToken,
}

impl Proxy {
    pub async fn start(upstream: SocketAddr) -> Self {
        Self::balance(vec![upstream]).await
    }

    /// A proxy that hands each new connection to the next of `upstreams` in turn.
    pub async fn balance(upstreams: Vec<SocketAddr>) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("proxy bind");
        let addr = listener.local_addr().expect("proxy addr");
        let open = Arc::new(AtomicBool::new(true));
        let generation = Arc::new(std::sync::Mutex::new(CancellationToken::new()));
        let stop = CancellationToken::new();
        let upstreams = Arc::new(std::sync::Mutex::new(upstreams));
        let (open2, gen2, stop2) = (open.clone(), generation.clone(), stop.clone());
        let upstreams2 = upstreams.clone();
        let next = std::sync::atomic::AtomicUsize::new(0);
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop2.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((mut inbound, _)) = accepted else {
                    continue;
                };
                if !open2.load(Ordering::SeqCst) {
                    drop(inbound);
                    continue;
                }
                let token = gen2.lock().expect("proxy lock").clone();
                let upstream = {
                    let list = upstreams2.lock().expect("proxy lock");
                    if list.is_empty() {
                        continue;
                    }
                    list[next.fetch_add(1, Ordering::Relaxed) % list.len()]
                };
                tokio::spawn(async move {
                    let Ok(mut outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    tokio::select! {
                        () = token.cancelled() => {}
                        _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound) => {}
                    }
                });
            }
        });
        Self {
            addr,
            upstreams,
            open,
            generation,
            stop,
        }
    }

    /// Partitions: live connections are dropped, new ones refused.
    pub fn cut(&self) {
        self.open.store(false, Ordering::SeqCst);
        let mut current = self.generation.lock().expect("proxy lock");
        current.cancel();
        *current = CancellationToken::new();
    }

    /// Sends new connections to `upstreams` from now on; live ones stay where they
    /// are (cut them with [`Proxy::cut`] + [`Proxy::restore`]).
    pub fn set_upstreams(&self, upstreams: Vec<SocketAddr>) {
        *self.upstreams.lock().expect("proxy lock") = upstreams;
    }

    /// Heals the partition.
    pub fn restore(&self) {
        self.open.store(true, Ordering::SeqCst);
    }

    /// An AMQP URL through this proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.stop.cancel();
        if let Ok(current) = self.generation.lock() {
            current.cancel();
        }
    }
}
