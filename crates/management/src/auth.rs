//! HTTP Basic authentication against the broker's users, and the management tags that decide
//! what a user may see and do, as `rabbit_mgmt_util` decides it.

use std::net::SocketAddr;
use std::sync::Arc;

use axum::Extension;
use axum::extract::{ConnectInfo, Request};
use axum::http::{HeaderMap, Method, header};
use axum::middleware::Next;
use axum::response::{IntoResponse, Response};
use base64::Engine;
use brook_auth::{Perm, Refused, User};

use crate::Api;
use crate::error::{ApiError, ApiResult};

/// The authenticated user of a request.
#[derive(Debug, Clone)]
pub(crate) struct Caller {
    pub user: User,
}

/// Runs before every API route (after method matching, so a wrong method is a 405 even
/// without credentials, as in RabbitMQ). OPTIONS needs no credentials.
pub(crate) async fn authenticate(
    Extension(api): Extension<Arc<Api>>,
    ConnectInfo(peer): ConnectInfo<SocketAddr>,
    mut request: Request,
    next: Next,
) -> Response {
    if request.method() == Method::OPTIONS {
        return next.run(request).await;
    }
    let Some((name, password)) = credentials(request.headers()) else {
        return ApiError::Unauthenticated.into_response();
    };
    if password.is_empty() {
        return ApiError::LoginFailed.into_response();
    }
    let user = match api.access.authenticate(&name, &password, peer.ip()) {
        Ok(user) => user,
        Err(Refused::BadCredentials) => return ApiError::LoginFailed.into_response(),
        Err(Refused::NotLoopback) => {
            return ApiError::NotAuthorised("User can only log in via localhost").into_response();
        }
    };
    if !user.is_management_user() {
        return ApiError::NotAuthorised("Not management user").into_response();
    }
    request.extensions_mut().insert(Caller { user });
    next.run(request).await
}

fn credentials(headers: &HeaderMap) -> Option<(String, String)> {
    let value = headers.get(header::AUTHORIZATION)?.to_str().ok()?;
    let (scheme, encoded) = value.split_once(' ')?;
    if !scheme.eq_ignore_ascii_case("basic") {
        return None;
    }
    let decoded = base64::engine::general_purpose::STANDARD
        .decode(encoded.trim())
        .ok()?;
    let text = String::from_utf8(decoded).ok()?;
    let (user, pass) = text.split_once(':')?;
    Some((user.to_owned(), pass.to_owned()))
}

impl Caller {
    pub fn name(&self) -> &str {
        &self.user.name
    }

    pub fn is_admin(&self) -> bool {
        self.user.is_administrator()
    }

    /// administrator or monitoring: sees every vhost's objects and every connection.
    pub fn is_monitor(&self) -> bool {
        self.user.is_monitor()
    }

    pub fn require_admin(&self) -> ApiResult<()> {
        if self.is_admin() {
            Ok(())
        } else {
            Err(ApiError::NotAuthorised("Not administrator user"))
        }
    }

    pub fn require_monitor(&self) -> ApiResult<()> {
        if self.is_monitor() {
            Ok(())
        } else {
            Err(ApiError::NotAuthorised("Not monitor user"))
        }
    }

    /// RabbitMQ's `is_authorized_vhost`: administrators, users with permissions there, and —
    /// so that the route can answer 404 — anyone when the vhost does not exist.
    pub fn require_vhost(&self, api: &Api, vhost: &str) -> ApiResult<()> {
        if self.is_admin()
            || api.access.vhost(vhost).is_none()
            || api.access.permission(self.name(), vhost).is_some()
        {
            Ok(())
        } else {
            Err(ApiError::NotAuthorised(
                "User not authorised to access virtual host",
            ))
        }
    }

    /// RabbitMQ's `filter_vhost`: objects of every vhost for administrators, of the vhosts
    /// they have permissions in for everyone else (monitoring users included).
    pub fn sees_objects_in(&self, api: &Api, vhost: &str) -> bool {
        self.is_admin() || api.access.permission(self.name(), vhost).is_some()
    }

    /// RabbitMQ's `list_visible_vhosts`: all for monitoring users, else their login vhosts.
    pub fn sees_vhost(&self, api: &Api, vhost: &str) -> bool {
        self.is_monitor() || api.access.permission(self.name(), vhost).is_some()
    }

    /// Whether a connection of `owner` is visible (monitoring users see all, others their own).
    pub fn sees_connection_of(&self, owner: Option<&str>) -> bool {
        self.is_monitor() || owner == Some(self.name())
    }

    /// The AMQP permission check the HTTP API applies to declarations, deletions and
    /// bindings; refused as RabbitMQ's channel refuses it.
    pub fn require_permission(
        &self,
        api: &Api,
        vhost: &str,
        perm: Perm,
        resource: &str,
    ) -> ApiResult<()> {
        if api.access.permitted(self.name(), vhost, perm, resource) {
            Ok(())
        } else {
            Err(ApiError::NotAuthorised("Access refused."))
        }
    }
}
