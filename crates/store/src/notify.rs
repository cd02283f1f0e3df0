//! LISTEN/NOTIFY: the channels, sending, and a listener that reconnects by itself.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_postgres::{AsyncMessage, NoTls};

use crate::{Result, Store};

/// A pool or its issuers changed, or a list was provisioned. Payload: pool name.
pub const CHANNEL_CONFIG: &str = "statuslist_config";
/// A worker is running short of leases. Payload: pool name.
pub const CHANNEL_CAPACITY: &str = "statuslist_capacity";
/// A list was rendered and stored. Payload: `{list id}:{version}`.
pub const CHANNEL_PUBLISHED: &str = "statuslist_published";
/// A list's content changed (revocation). Payload: list id.
pub const CHANNEL_CHANGED: &str = "statuslist_changed";

pub const ALL_CHANNELS: [&str; 4] = [
    CHANNEL_CONFIG,
    CHANNEL_CAPACITY,
    CHANNEL_PUBLISHED,
    CHANNEL_CHANGED,
];

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Event {
    Notification {
        channel: String,
        payload: String,
    },
    /// The listener (re)connected: notifications may have been missed, resynchronise.
    Connected,
}

impl Store {
    /// Sends a notification.
    pub async fn notify(&self, channel: &str, payload: &str) -> Result<()> {
        self.bounded(async {
            let client = self.client().await?;
            client
                .execute("SELECT pg_notify($1, $2)", &[&channel, &payload])
                .await?;
            Ok(())
        })
        .await
    }

    /// Starts a task that LISTENs on `channels` on a dedicated connection and broadcasts
    /// what arrives. When the connection drops it reconnects with backoff and sends
    /// [`Event::Connected`] again. The task ends when every receiver is dropped.
    pub fn listen(&self, channels: &[&str]) -> (broadcast::Receiver<Event>, JoinHandle<()>) {
        let (tx, rx) = broadcast::channel(1024);
        let config = self.pg_config.clone();
        let listen_sql: String = channels
            .iter()
            .map(|c| format!("LISTEN \"{c}\";"))
            .collect();
        let handle = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            while tx.receiver_count() > 0 {
                match listen_once(&config, &listen_sql, &tx).await {
                    Ok(()) => backoff = Duration::from_millis(50),
                    Err(e) => {
                        tracing::warn!(error = %e, "notification listener disconnected; reconnecting");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
        });
        (rx, handle)
    }
}

/// One connection's lifetime: returns when it ends or every receiver is gone.
async fn listen_once(
    config: &tokio_postgres::Config,
    listen_sql: &str,
    tx: &broadcast::Sender<Event>,
) -> std::result::Result<(), tokio_postgres::Error> {
    let (client, mut connection) = config.connect(NoTls).await?;
    let (msg_tx, mut msg_rx) = tokio::sync::mpsc::unbounded_channel();
    // The connection must be polled for the client to work and for notifications to arrive.
    let driver = tokio::spawn(async move {
        let mut messages = futures_util::stream::poll_fn(move |cx| connection.poll_message(cx));
        while let Some(message) = messages.next().await {
            let end = message.is_err();
            if msg_tx.send(message).is_err() || end {
                break;
            }
        }
    });
    let result = async {
        client.batch_execute(listen_sql).await?;
        let _ = tx.send(Event::Connected);
        loop {
            tokio::select! {
                message = msg_rx.recv() => match message {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        let _ = tx.send(Event::Notification { channel: n.channel().to_owned(), payload: n.payload().to_owned() });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(e),
                    // The connection ended without an error (server closed it).
                    None => return Ok(()),
                },
                // Checks the connection every few seconds, and notices receivers leaving.
                _ = tokio::time::sleep(Duration::from_secs(5)) => {
                    if tx.receiver_count() == 0 {
                        return Ok(());
                    }
                    client.simple_query("SELECT 1").await?;
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}
