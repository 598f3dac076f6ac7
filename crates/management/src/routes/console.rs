//! The web console: a small single-page app (plain JavaScript modules, no build step, no
//! framework, nothing from the internet) embedded in the binary and served behind the same
//! HTTP Basic login and tags as the API. The browser's own login dialog (or a URL with
//! credentials) logs in; its requests to the API then carry the same credentials.

use std::sync::Arc;

use axum::Router;
use axum::extract::Path;
use axum::http::header;
use axum::response::{IntoResponse, Response};
use axum::routing::get;

use super::Guarded;
use crate::Api;
use crate::error::ApiError;

/// (file, content type, contents).
const ASSETS: &[(&str, &str, &str)] = &[
    (
        "style.css",
        "text/css; charset=utf-8",
        include_str!("../../console/style.css"),
    ),
    (
        "app.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/app.js"),
    ),
    (
        "api.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/api.js"),
    ),
    (
        "overview.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/overview.js"),
    ),
    (
        "streams.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/streams.js"),
    ),
    (
        "admin.js",
        "text/javascript; charset=utf-8",
        include_str!("../../console/admin.js"),
    ),
];

const INDEX: &str = include_str!("../../console/index.html");

pub(super) fn routes() -> Router<Arc<Api>> {
    Router::new()
        .guarded("/", get(index))
        .guarded("/console/{file}", get(asset))
}

async fn index() -> Response {
    page("text/html; charset=utf-8", INDEX)
}

async fn asset(Path(file): Path<String>) -> Response {
    match ASSETS.iter().find(|(name, _, _)| *name == file) {
        Some((_, content_type, body)) => page(content_type, body),
        None => ApiError::NotFound.into_response(),
    }
}

fn page(content_type: &'static str, body: &'static str) -> Response {
    (
        [
            (header::CONTENT_TYPE, content_type),
            // Always the binary's own version after an upgrade.
            (header::CACHE_CONTROL, "no-cache"),
        ],
        body,
    )
        .into_response()
}
