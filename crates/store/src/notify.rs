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
/// A list's content changed (revocation). Payload: list id. Sent after the commit that
/// changed it, at most every [`CHANGES_INTERVAL`] per process (see [`Changes`]).
pub const CHANNEL_CHANGED: &str = "statuslist_changed";

/// How long changed lists gather before one notification statement names them all: the
/// publishers coalesce renders over 250 ms anyway, and a worker revoking thousands a
/// second sends at most this many statements a second (each a transaction of its own).
pub const CHANGES_INTERVAL: Duration = Duration::from_millis(20);

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

/// Change notifications sent after the commit (see `statuslist_revoke`: a notification sent
/// in the revoking transaction holds a database-wide lock through that transaction's WAL
/// flush, so every notifying commit waits for the one before it). Each changed list is
/// queued; one task sends what has gathered, in one statement whose transaction writes
/// nothing but its commit record (so it waits for no WAL flush), and then waits
/// [`CHANGES_INTERVAL`]. A process that stops before sending leaves the change to the
/// publishers' own pass, which runs every second whatever is notified. The task ends
/// when every [`Changes`] is dropped.
pub(crate) struct Changes {
    tx: tokio::sync::mpsc::UnboundedSender<String>,
}

impl Changes {
    pub(crate) fn start(pool: deadpool_postgres::Pool, timeout: Duration) -> Self {
        let (tx, rx) = tokio::sync::mpsc::unbounded_channel();
        tokio::spawn(send_changes(pool, rx, timeout));
        Self { tx }
    }

    /// Queues a notification that `list` changed (its change is committed).
    pub(crate) fn changed(&self, list: &str) {
        // The task ends only once every sender is gone, so this cannot fail while `self` lives.
        let _ = self.tx.send(list.to_owned());
    }
}

async fn send_changes(
    pool: deadpool_postgres::Pool,
    mut rx: tokio::sync::mpsc::UnboundedReceiver<String>,
    timeout: Duration,
) {
    while let Some(first) = rx.recv().await {
        let mut lists = std::collections::BTreeSet::from([first]);
        while let Ok(next) = rx.try_recv() {
            lists.insert(next);
        }
        let lists: Vec<String> = lists.into_iter().collect();
        let deadline = tokio::time::Instant::now() + timeout;
        let sent = tokio::time::timeout_at(deadline, async {
            let client = crate::Conn::get(&pool, deadline).await?;
            client
                .execute(
                    "SELECT pg_notify($1, l) FROM unnest($2::text[]) AS l",
                    &[&CHANNEL_CHANGED, &lists],
                )
                .await?;
            Ok::<_, crate::StoreError>(())
        })
        .await;
        match sent {
            Ok(Ok(())) => {}
            // The publishers' pass (every second) renders the change without it.
            Ok(Err(e)) => {
                tracing::debug!(error = %e, lists = lists.len(), "change notification not sent")
            }
            Err(_) => tracing::debug!(lists = lists.len(), "change notification timed out"),
        }
        tokio::time::sleep(CHANGES_INTERVAL).await;
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
                    let sent = std::time::Instant::now();
                    tokio::time::timeout(HEARTBEAT_TIMEOUT, client.simple_query("SELECT 1"))
                        .await
                        .map_err(|_| format!("no answer to the heartbeat within {HEARTBEAT_TIMEOUT:?}"))?
                        .map_err(text)?;
                    health.round_trip(sent.elapsed());
                    health.up();
                }
            }
        }
    }
    .await;
    driver.abort();
    result
}
