//! The portal's end of the relay: the WebSocket agents connect to (their credentials are checked
//! in [`super::auth`]).

pub use super::auth::{authenticate, AuthenticatedAgent, RelayState};
use super::hub::Refusal;
use super::protocol::{self, AgentStatus, SyncChunk, Wire};
use super::{enroll, AGENT_PATH, CHECK_PATH, ENROLL_PATH, ROTATE_PATH};
use crate::envelope::FrameKind;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade};
use axum::extract::State;
use axum::http::{HeaderMap, StatusCode};
use axum::response::{IntoResponse, Response};
use axum::routing::{get, post};
use axum::Router;
use futures_util::{SinkExt, StreamExt};
use std::time::Duration;
use tokio::sync::mpsc;

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
    let (conn, mut killed) = hub.register(&agent_id, agent.directories, tx);
    tracing::info!(agent = %agent_id, conn, "agent connected");
    let ping_every = Duration::from_secs(hub.cfg.ping_interval_secs);

    let writer = tokio::spawn(async move {
        let mut ping = tokio::time::interval(ping_every);
        loop {
            tokio::select! {
                out = rx.recv() => match out {
                    Some(Wire(bytes)) => if sink.send(Message::Binary(bytes.into())).await.is_err() { break },
                    None => break,
                },
                _ = ping.tick() => if sink.send(Message::Ping(Vec::new().into())).await.is_err() { break },
            }
        }
        let _ = sink.close().await;
    });

    loop {
        let msg = tokio::select! {
            msg = stream.next() => msg,
            // The hub dropped this connection (the agent was revoked): read nothing more from it.
            _ = &mut killed => {
                tracing::warn!(agent = %agent_id, conn, "agent connection dropped: the agent was revoked");
                break;
            }
        };
        let Some(Ok(msg)) = msg else { break };
        let refused = match msg {
            Message::Binary(bytes) => {
                hub.touch(conn);
                handle_frame(&state, &agent_id, conn, &bytes).await.err()
            }
            Message::Text(_) => Some(Refusal::Unsealed),
            Message::Pong(_) | Message::Ping(_) => {
                hub.touch(conn);
                None
            }
            Message::Close(_) => break,
        };
        if let Some(why) = refused {
            hub.metrics.refused_frame(why.reason());
            tracing::warn!(agent = %agent_id, conn, reason = why.reason(), "refused a frame: {why}");
        }
    }
    hub.unregister(conn);
    writer.abort();
    tracing::info!(agent = %agent_id, conn, "agent disconnected");
}

/// One binary message from an agent. Nothing in it is acted on before it was authenticated as
/// sealed by this agent, for its kind, and (for reports) fresh and never seen before.
async fn handle_frame(state: &RelayState, agent_id: &str, conn: u64, bytes: &[u8]) -> Result<(), Refusal> {
    let frame = protocol::parse_binary(bytes)?;
    let hub = &state.hub;
    match frame.kind {
        FrameKind::Result => hub.deliver_result(agent_id, &frame).await,
        FrameKind::Hello | FrameKind::Heartbeat => {
            let status: AgentStatus = hub.open_report(agent_id, &frame).await?;
            hub.set_status(conn, status);
            Ok(())
        }
        FrameKind::Sync => {
            let chunk: SyncChunk = hub.open_report(agent_id, &frame).await?;
            if !hub.may_serve(conn, &chunk.directory) {
                return Err(Refusal::NotEnrolled);
            }
            if let Err(e) = super::sync::store(state, agent_id, chunk).await {
                tracing::error!(agent = %agent_id, error = %e, "storing a sync chunk failed");
            }
            Ok(())
        }
        FrameKind::Request | FrameKind::Rotate => Err(Refusal::Kind),
    }
}
