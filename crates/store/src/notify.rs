//! LISTEN/NOTIFY: the channels, sending, and a listener that reconnects by itself.

use std::time::Duration;

use futures_util::StreamExt;
use tokio::sync::broadcast;
use tokio::task::JoinHandle;
use tokio_postgres::AsyncMessage;

use crate::health::Health;
use crate::tls::Tls;
use crate::{Result, Store};

/// How often the listener checks its connection with a query.
const HEARTBEAT: Duration = Duration::from_secs(1);
/// How long the heartbeat query, or opening the connection, may take before the
/// connection is given up and the database considered unreachable.
const HEARTBEAT_TIMEOUT: Duration = Duration::from_secs(2);

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
    /// what arrives. The connection is checked every second (a query that must answer
    /// within 2 s); when it drops or stops answering, the task reconnects with backoff
    /// and sends [`Event::Connected`] again. Meanwhile the store's [`Health`] says the
    /// database is unreachable. The task ends when every receiver is dropped.
    pub fn listen(&self, channels: &[&str]) -> (broadcast::Receiver<Event>, JoinHandle<()>) {
        let (tx, rx) = broadcast::channel(1024);
        let config = self.pg_config.clone();
        let tls = self.tls.clone();
        let health = self.health.clone();
        let listen_sql: String = channels
            .iter()
            .map(|c| format!("LISTEN \"{c}\";"))
            .collect();
        let handle = tokio::spawn(async move {
            let mut backoff = Duration::from_millis(50);
            while tx.receiver_count() > 0 {
                match listen_once(&config, &tls, &listen_sql, &tx, &health).await {
                    Ok(()) => backoff = Duration::from_millis(50),
                    Err(e) => {
                        health.down(&e);
                        tracing::debug!(error = %e, "notification listener disconnected; reconnecting");
                        tokio::time::sleep(backoff).await;
                        backoff = (backoff * 2).min(Duration::from_secs(2));
                    }
                }
            }
            health.unknown();
        });
        (rx, handle)
    }
}

/// One connection's lifetime: returns when it ends or every receiver is gone.
async fn listen_once(
    config: &tokio_postgres::Config,
    tls: &Tls,
    listen_sql: &str,
    tx: &broadcast::Sender<Event>,
    health: &Health,
) -> std::result::Result<(), String> {
    let text = |e: tokio_postgres::Error| crate::error::chain(&e);
    let (client, mut connection) =
        tokio::time::timeout(HEARTBEAT_TIMEOUT, config.connect(tls.clone()))
            .await
            .map_err(|_| "connecting timed out".to_owned())?
            .map_err(text)?;
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
        tokio::time::timeout(HEARTBEAT_TIMEOUT, client.batch_execute(listen_sql))
            .await
            .map_err(|_| "LISTEN timed out".to_owned())?
            .map_err(text)?;
        health.up();
        let _ = tx.send(Event::Connected);
        let mut heartbeat = tokio::time::interval(HEARTBEAT);
        heartbeat.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tokio::select! {
                message = msg_rx.recv() => match message {
                    Some(Ok(AsyncMessage::Notification(n))) => {
                        let _ = tx.send(Event::Notification { channel: n.channel().to_owned(), payload: n.payload().to_owned() });
                    }
                    Some(Ok(_)) => {}
                    Some(Err(e)) => return Err(text(e)),
                    // The connection ended without an error (server closed it).
                    None => return Err("the server closed the connection".to_owned()),
                },
                // Checks the connection, and notices receivers leaving.
                _ = heartbeat.tick() => {
                    if tx.receiver_count() == 0 {
                        return Ok(());
                    }
                    tokio::time::timeout(HEARTBEAT_TIMEOUT, client.simple_query("SELECT 1"))
                        .await
                        .map_err(|_| format!("no answer to the heartbeat within {HEARTBEAT_TIMEOUT:?}"))?
                        .map_err(text)?;
                    health.up();
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}
