//! The routes, one module per resource, and what every route shares: the state, the
//! authenticated caller, RabbitMQ's status codes for writes.

mod access;
mod connections;
mod console;
mod exchanges;
mod messages;
mod overview;
mod queues;
mod stream_members;
mod tracking;

pub(crate) use access::{UserBody, user_from};

use std::sync::Arc;

use axum::Router;
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodRouter, any, get};

use crate::Api;
use crate::auth;
use crate::error::ApiError;

pub(crate) type Ctx = axum::extract::State<Arc<Api>>;
pub(crate) type Who = axum::Extension<auth::Caller>;

pub(crate) fn router(api: Arc<Api>) -> Router {
    let routes = Router::new()
        .merge(overview::routes())
        .merge(access::routes())
        .merge(queues::routes())
        .merge(exchanges::routes())
        .merge(connections::routes())
        .merge(tracking::routes())
        .merge(stream_members::routes())
        .merge(messages::routes())
        .merge(console::routes())
        .guarded(
            "/api/definitions",
            get(crate::definitions::export).post(crate::definitions::import),
        )
        .guarded(
            "/api/all-configuration",
            get(crate::definitions::export).post(crate::definitions::import),
        );
    let metrics = brook_metrics::router(api.metrics.clone());
    routes
        .fallback(any(fallback))
        .layer(axum::Extension(api.clone()))
        .with_state(api)
        .merge(metrics)
}

/// Adding a route behind authentication.
pub(crate) trait Guarded {
    fn guarded(self, path: &str, methods: MethodRouter<Arc<Api>>) -> Self;
}

impl Guarded for Router<Arc<Api>> {
    /// Authentication runs only for the route's own methods: a wrong method is a 405 before
    /// any credentials are looked at, as in RabbitMQ (cowboy checks the method first).
    fn guarded(self, path: &str, methods: MethodRouter<Arc<Api>>) -> Self {
        self.route(
            path,
            methods.route_layer(axum::middleware::from_fn(auth::authenticate)),
        )
    }
}

/// Paths that are no route: RabbitMQ's static file handler answers them, 404 for GET (with the
/// generic body), 405 for other methods.
async fn fallback(method: Method) -> Response {
    if method == Method::GET || method == Method::HEAD {
        ApiError::NotFound.into_response()
    } else {
        (
            StatusCode::METHOD_NOT_ALLOWED,
            [(header::ALLOW, "HEAD, GET, OPTIONS")],
        )
            .into_response()
    }
}

/// PUT's answer: 201 when it created the object, 204 when it replaced one.
pub(crate) fn put_status(created: bool) -> Response {
    if created {
        StatusCode::CREATED.into_response()
    } else {
        StatusCode::NO_CONTENT.into_response()
    }
}

/// The `{vhost}` of a listing served both across vhosts (`None`) and per vhost, where the
/// caller must have access to the vhost and it must exist.
pub(crate) fn listed_vhost(
    api: &Api,
    caller: &auth::Caller,
    vhost: Option<axum::extract::Path<String>>,
) -> Result<Option<String>, ApiError> {
    let Some(axum::extract::Path(vhost)) = vhost else {
        return Ok(None);
    };
    caller.require_vhost(api, &vhost)?;
    api.access.vhost(&vhost).ok_or(ApiError::NotFound)?;
    Ok(Some(vhost))
}

pub(crate) fn deleted() -> Response {
    StatusCode::NO_CONTENT.into_response()
}

/// A broker error as RabbitMQ's management API reports the channel error behind it.
pub(crate) fn broker_error(e: brook_broker::Error) -> ApiError {
    use brook_broker::Error;
    match e {
        Error::StreamDoesNotExist(_) => ApiError::NotFound,
        Error::AccessRefused(_) => ApiError::NotAuthorised("Access refused."),
        Error::Internal(reason) => ApiError::Internal(reason),
        other => ApiError::BadRequest(other.to_string()),
    }
}
