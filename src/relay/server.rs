//! The portal's end of the relay: the WebSocket agents connect to, and their authentication.

use super::hub::Hub;
use super::protocol::{Frame, Wire};
use super::{enroll, AGENT_PATH, CHECK_PATH, ENROLL_PATH, ROTATE_PATH};
use crate::domain::DirectoryId;
use crate::store::{self, DataKey, Db};
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

#[derive(Clone)]
pub struct RelayState {
    pub hub: Arc<Hub>,
    pub db: Db,
    pub data_key: DataKey,
    pub clock: crate::Clock,
}

/// Largest frame an agent may send (a sync chunk of a few hundred people).
const MAX_FRAME: usize = 1 << 20;

pub fn router(state: RelayState) -> Router {
    Router::new()
        .route(AGENT_PATH, get(agent_socket))
        .route(ENROLL_PATH, post(enroll::enroll))
        .route(ROTATE_PATH, post(enroll::rotate))
        .route(CHECK_PATH, get(agent_check))
        .layer(axum::extract::DefaultBodyLimit::max(16 * 1024))
        .with_state(state)
}

/// An agent that proved its relay secret, and the directories it was enrolled for.
pub struct AuthenticatedAgent {
    pub id: String,
    pub directories: Vec<DirectoryId>,
}

/// Checks `Authorization: Bearer <agent-id>.<secret>` against the stored hash, in constant time.
pub async fn authenticate(db: &Db, headers: &HeaderMap) -> Option<AuthenticatedAgent> {
    let value = headers.get(axum::http::header::AUTHORIZATION)?.to_str().ok()?;
    let token = value.strip_prefix("Bearer ")?;
    let (agent_id, secret) = token.split_once('.')?;
    if agent_id.len() > 64 || secret.len() > 128 {
        return None;
    }
    let stored = store::agents::get(db, agent_id).await.ok().flatten();
    let presented = store::token_hash(secret);
    // Compare against a dummy when the agent is unknown, so both paths cost the same.
    let expected = stored.as_ref().map(|a| a.secret_hash.clone()).unwrap_or_else(|| vec![0u8; presented.len()]);
    if !store::hashes_equal(&expected, &presented) {
        return None;
    }
    let agent = stored?;
    let directories = agent.directories.0.iter().filter_map(|d| DirectoryId::parse(d).ok()).collect();
    Some(AuthenticatedAgent { id: agent.id, directories })
}

async fn agent_socket(State(state): State<RelayState>, headers: HeaderMap, ws: WebSocketUpgrade) -> Response {
    let Some(agent) = authenticate(&state.db, &headers).await else {
        tracing::warn!("relay: refused a connection with bad or missing credentials");
        return (StatusCode::UNAUTHORIZED, "unauthorized").into_response();
    };
    ws.max_message_size(MAX_FRAME).on_upgrade(move |socket| serve_agent(state, agent, socket))
}

/// 204 when the bearer is an agent's, as the WebSocket upgrade would accept it; 401 otherwise.
/// Nothing is registered with the hub, so a running agent is not disturbed.
async fn agent_check(State(state): State<RelayState>, headers: HeaderMap) -> Response {
    match authenticate(&state.db, &headers).await {
        Some(_) => StatusCode::NO_CONTENT.into_response(),
        None => {
            tracing::warn!("relay: refused a credentials check with bad or missing credentials");
            (StatusCode::UNAUTHORIZED, "unauthorized").into_response()
        }
    }
}

async fn serve_agent(state: RelayState, agent: AuthenticatedAgent, socket: WebSocket) {
    let (mut sink, mut stream) = socket.split();
    let (tx, mut rx) = mpsc::channel::<Wire>(256);
    let hub = state.hub.clone();
    let agent_id = agent.id;
    let conn = hub.register(&agent_id, agent.directories, tx);
    tracing::info!(agent = %agent_id, conn, "agent connected");
    let ping_every = Duration::from_secs(hub.cfg.ping_interval_secs);

    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(ping_every);
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(out) => if sink.send(to_message(out)).await.is_err() { break },
                    None => break,
                },
                _ = ping.tick() => if sink.send(Message::Ping(Vec::new().into())).await.is_err() { break },
            }
        }
        let _ = sink.close().await;
    });

    while let Some(msg) = stream.next().await {
        let Ok(msg) = msg else { break };
        match msg {
            Message::Text(text) => {
                hub.touch(conn);
                handle_frame(&state, &agent_id, conn, Frame::parse(text.as_str())).await;
            }
            Message::Binary(bytes) => {
                hub.touch(conn);
                handle_frame(&state, &agent_id, conn, Frame::parse_binary(&bytes)).await;
            }
            Message::Pong(_) | Message::Ping(_) => hub.touch(conn),
            Message::Close(_) => break,
        }
    }
    hub.unregister(conn);
    writer.abort();
    tracing::info!(agent = %agent_id, conn, "agent disconnected");
}

fn to_message(out: Wire) -> Message {
    match out {
        Wire::Text(t) => Message::Text(t.into()),
        Wire::Binary(b) => Message::Binary(b.into()),
    }
}

async fn handle_frame(
    state: &RelayState,
    agent_id: &str,
    conn: u64,
    parsed: Result<Frame, super::protocol::FrameError>,
) {
    let frame = match parsed {
        Ok(f) => f,
        Err(e) => {
            tracing::warn!(agent = %agent_id, error = %e, "refused a frame");
            return;
        }
    };
    match frame {
        Frame::Hello(status) | Frame::Heartbeat(status) => state.hub.set_status(conn, status),
        Frame::Result(sealed) => state.hub.deliver_result(agent_id, &sealed).await,
        Frame::Sync(chunk) if !state.hub.may_serve(conn, &chunk.directory) => {
            tracing::warn!(agent = %agent_id, directory = %chunk.directory, "sync for a directory this agent was not enrolled for; ignored");
        }
        Frame::Sync(chunk) => {
            if let Err(e) = super::sync::store(state, agent_id, chunk).await {
                tracing::error!(agent = %agent_id, error = %e, "storing a sync chunk failed");
            }
        }
        Frame::Request(_) => tracing::warn!(agent = %agent_id, "an agent may not send requests"),
    }
}
