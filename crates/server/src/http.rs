//! The management HTTP API: the subset of RabbitMQ's that the official clients' test suites and
//! operators use. Basic authentication with the broker's users.
//!
//! Routes are added here as the API grows; each handler is a thin read of broker or registry
//! state, with RabbitMQ's field names.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use axum::Router;
use axum::extract::{ConnectInfo, Path, Request, State};
use axum::http::{HeaderMap, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::get;
use base64::Engine;

use crate::config::ServerConfig;
use crate::registry::Connections;

#[derive(Debug)]
pub(crate) struct HttpState {
    pub config: ServerConfig,
    pub connections: Arc<Connections>,
}

pub(crate) fn router(state: Arc<HttpState>) -> Router {
    Router::new()
        .route("/api/connections", get(list_connections))
        .route("/api/connections/", get(list_connections))
        .route(
            "/api/connections/{name}",
            get(get_connection).delete(close_connection),
        )
        .layer(middleware::from_fn_with_state(state.clone(), authenticate))
        .with_state(state)
}

/// Basic authentication against the broker's users (loopback-only users from loopback only).
async fn authenticate(
    State(state): State<Arc<HttpState>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    request: Request,
    next: Next,
) -> Response {
    if credentials(request.headers()).is_some_and(|(user, pass)| {
        state.config.password_ok(&user, &pass) && state.config.may_connect_from(&user, peer.ip())
    }) {
        return next.run(request).await;
    }
    (
        StatusCode::UNAUTHORIZED,
        [(header::WWW_AUTHENTICATE, "Basic realm=\"brook\"")],
        "authentication required",
    )
        .into_response()
}

fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let encoded = value.strip_prefix("Basic ")?;
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

async fn list_connections(State(state): State<Arc<HttpState>>) -> Response {
    axum::Json(state.connections.list()).into_response()
}

async fn get_connection(State(state): State<Arc<HttpState>>, Path(name): Path<String>) -> Response {
    match state.connections.get(&name) {
        Some(c) => axum::Json(c).into_response(),
        None => not_found(),
    }
}

/// Closes a connection from the server side and answers once its socket is closed.
async fn close_connection(
    State(state): State<Arc<HttpState>>,
    Path(name): Path<String>,
) -> Response {
    if !state.connections.close(&name) {
        return not_found();
    }
    let deadline = Instant::now() + Duration::from_secs(5);
    while state.connections.contains(&name) && Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
    StatusCode::NO_CONTENT.into_response()
}

fn not_found() -> Response {
    (
        StatusCode::NOT_FOUND,
        axum::Json(serde_json::json!({"error": "Object Not Found", "reason": "Not Found"})),
    )
        .into_response()
}
