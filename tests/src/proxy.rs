//! A TCP proxy that can black-hole: while paused it accepts connections and keeps the open
//! ones, but forwards nothing in either direction and closes nothing — what a failover, a
//! dropped NAT entry or a partition looks like from the client. Resumed, it forwards again
//! (what was sent meanwhile arrives late, as after a healed partition).

use std::net::SocketAddr;

use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug)]
pub struct Proxy {
    pub addr: SocketAddr,
    paused: watch::Sender<bool>,
    task: JoinHandle<()>,
}

impl Proxy {
    /// Listens on a free loopback port and forwards to `upstream`.
    pub async fn start(upstream: SocketAddr) -> Self {
        let listener = TcpListener::bind("127.0.0.1:0").await.expect("bind proxy");
        let addr = listener.local_addr().expect("proxy address");
        let (paused, _) = watch::channel(false);
        let tx = paused.clone();
        let task = tokio::spawn(async move {
            while let Ok((client, _)) = listener.accept().await {
                let rx = tx.subscribe();
                tokio::spawn(async move {
                    // Like a SYN into the void: no upstream connection while paused.
                    if !wait_running(&mut rx.clone()).await {
                        return;
                    }
                    let Ok(server) = TcpStream::connect(upstream).await else {
                        return;
                    };
                    let (cr, cw) = client.into_split();
                    let (sr, sw) = server.into_split();
                    tokio::spawn(pipe(cr, sw, rx.clone()));
                    tokio::spawn(pipe(sr, cw, rx));
                });
            }
        });
        Self { addr, paused, task }
    }

    /// Stops forwarding, without closing anything.
    pub fn pause(&self) {
        self.paused.send_replace(true);
    }

    pub fn resume(&self) {
        self.paused.send_replace(false);
    }
}

impl Drop for Proxy {
    fn drop(&mut self) {
        self.task.abort();
    }
}

/// Waits while paused; false when the proxy is gone (its connections then close).
async fn wait_running(rx: &mut watch::Receiver<bool>) -> bool {
    rx.wait_for(|paused| !*paused).await.is_ok()
}

async fn pipe(
    mut from: tokio::net::tcp::OwnedReadHalf,
    mut to: tokio::net::tcp::OwnedWriteHalf,
    mut paused: watch::Receiver<bool>,
) {
    let mut buf = vec![0u8; 16 * 1024];
    while wait_running(&mut paused).await {
        let n = tokio::select! {
            read = from.read(&mut buf) => match read {
                Ok(0) | Err(_) => break,
                Ok(n) => n,
            },
            // Paused while waiting to read: stop reading until resumed.
            changed = paused.wait_for(|p| *p) => match changed {
                Ok(_) => continue,
                Err(_) => break,
            },
        };
        if !wait_running(&mut paused).await || to.write_all(&buf[..n]).await.is_err() {
            break;
        }
    }
    let _ = to.shutdown().await;
}
