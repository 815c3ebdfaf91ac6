//! A TCP proxy whose link can be *frozen*: connections stay open but no byte moves in
//! either direction (what a network partition that drops packets looks like to both
//! ends until TCP gives up), then *thawed*: the held bytes flow again. Unlike
//! [`payhook_testkit::proxy::Proxy::cut`], nobody sees a connection close: publisher confirms
//! and deliveries just stop coming, so the receiver's ack deadline is what answers
//! the provider.

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt as _, AsyncWriteExt as _};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;

#[derive(Debug)]
pub struct FreezingProxy {
    pub addr: SocketAddr,
    frozen: watch::Sender<bool>,
    stop: CancellationToken,
}

impl FreezingProxy {
    pub async fn start(upstream: SocketAddr) -> std::io::Result<Self> {
        let listener = TcpListener::bind("127.0.0.1:0").await?;
        let addr = listener.local_addr()?;
        let (frozen, _) = watch::channel(false);
        let stop = CancellationToken::new();
        let (frozen2, stop2) = (frozen.clone(), stop.clone());
        tokio::spawn(async move {
            loop {
                let accepted = tokio::select! {
                    () = stop2.cancelled() => return,
                    accepted = listener.accept() => accepted,
                };
                let Ok((inbound, _)) = accepted else { continue };
                let (frozen, stop) = (frozen2.subscribe(), stop2.clone());
                tokio::spawn(async move {
                    // A new connection during the freeze waits too (SYN retransmits).
                    if !thawed(&mut frozen.clone()).await {
                        return;
                    }
                    let Ok(outbound) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (ri, wi) = inbound.into_split();
                    let (ro, wo) = outbound.into_split();
                    tokio::select! {
                        () = stop.cancelled() => {}
                        () = pump(ri, wo, frozen.clone()) => {}
                        () = pump(ro, wi, frozen) => {}
                    }
                });
            }
        });
        Ok(Self { addr, frozen, stop })
    }

    /// No byte moves any more (connections stay open).
    pub fn freeze(&self) {
        self.frozen.send_replace(true);
    }

    /// Bytes flow again, the held ones first.
    pub fn thaw(&self) {
        self.frozen.send_replace(false);
    }

    /// An AMQP URL through this proxy.
    pub fn amqp_url(&self) -> String {
        format!("amqp://guest:guest@{}/%2f", self.addr)
    }
}

impl Drop for FreezingProxy {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

/// Waits until not frozen; `false` if the proxy is gone.
async fn thawed(frozen: &mut watch::Receiver<bool>) -> bool {
    frozen.wait_for(|f| !*f).await.is_ok()
}

async fn pump(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut frozen: watch::Receiver<bool>,
) {
    let mut buf = vec![0_u8; 16 * 1024];
    loop {
        if !thawed(&mut frozen).await {
            return;
        }
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => return,
                Ok(n) => n,
            },
            // Frozen while waiting to read: stop reading (the sender's buffers fill).
            changed = frozen.changed() => {
                if changed.is_err() {
                    return;
                }
                continue;
            }
        };
        // Bytes read just as the link froze are held until it thaws.
        if !thawed(&mut frozen).await {
            return;
        }
        if to.write_all(&buf[..n]).await.is_err() {
            return;
        }
    }
}
