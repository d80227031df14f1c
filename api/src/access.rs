//! Access control in one place: every route's policy (who may call it, and whose data
//! it is about), the middleware that authenticates, rate-limits, authorizes, scopes
//! consumers to their own data, measures and audits each request.
//!
//! Invariants:
//! * Deny by default: a route without an entry in [`policy`] answers 403 (and a unit
//!   test fails), so a new route cannot be reachable by accident.
//! * A consumer asking for another tenant's meter, user or alert gets the same 404 as
//!   for one that does not exist: no existence leak.
//! * Tokens never reach a log line; the 401 says why (the code), not what was sent.

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::body::{BoxBody, MessageBody};
use actix_web::dev::{ServiceRequest, ServiceResponse};
use actix_web::http::Method;
use actix_web::middleware::Next;
use actix_web::{HttpMessage, web};
use gridpulse_domain::{MeterId, UserId};
use parking_lot::Mutex;
use rustc_hash::FxHashMap;

use crate::auth::{Principal, Role};
use crate::error::ApiError;
use crate::state::AppState;

/// Whose data a route is about (checked for consumers).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// Not tenant data, or the handler filters by the caller (lists).
    Any,
    /// `{id}` is a meter: a consumer must own it.
    Meter,
    /// `{id}` is a user: a consumer must be it.
    User,
    /// `{id}` is an alert: a consumer must own its meter.
    Alert,
}

/// Who may call a route.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Policy {
    /// Roles allowed; empty: public (no token needed).
    pub roles: &'static [Role],
    /// Tenant scope for consumers.
    pub scope: Scope,
}

const PUBLIC: Policy = Policy {
    roles: &[],
    scope: Scope::Any,
};
const READERS: &[Role] = &[Role::Ops, Role::Utility, Role::Consumer];
const OPS: &[Role] = &[Role::Ops];
const UTILITY: &[Role] = &[Role::Utility];
const INGEST: &[Role] = &[Role::Service, Role::Utility];

const fn allow(roles: &'static [Role], scope: Scope) -> Policy {
    Policy { roles, scope }
}

/// The policy of a route (`pattern` as registered), `None` for a method/route pair
/// that is not mapped.
pub fn policy(method: &Method, pattern: &str) -> Option<Policy> {
    use Scope::{Alert, Any, Meter, User};
    let read = method == Method::GET || method == Method::HEAD;
    let policy = match (read, pattern) {
        (true, "/" | "/healthz" | "/readyz" | "/metrics" | "/api/openapi.json") => PUBLIC,
        // Live events; the websocket scopes consumers to their own meters and user.
        (true, "/ws/alerts") => allow(READERS, Any),
        (false, "/api/readings") => allow(INGEST, Any),
        // Bulk history (and, on request, meter registration): the utility's, and ops'
        // for repairs; not `service`, whose tokens live in automated feeders.
        (false, "/api/import") => allow(&[Role::Utility, Role::Ops], Any),
        // Lists filter by the caller.
        (true, "/api/meters" | "/api/users" | "/api/alerts") => allow(READERS, Any),
        (true, "/api/tariffs" | "/api/tariffs/{id}") => allow(READERS, Any),
        (true, "/api/sessions" | "/api/sessions/{id}") => allow(READERS, Any),
        (true, "/api/audit") => allow(OPS, Any),
        // The dashboard's system figures: staff only.
        (true, "/api/overview") => allow(&[Role::Ops, Role::Utility], Any),
        (true, "/api/mqtt/status") => allow(&[Role::Ops, Role::Utility], Any),
        (true, pattern) if pattern.starts_with("/api/meters/{id}") => allow(READERS, Meter),
        (true, pattern) if pattern.starts_with("/api/users/{id}") => allow(READERS, User),
        (true, "/api/alerts/{id}") => allow(READERS, Alert),
        // Meters, users, tariffs, saving sessions: the utility's back office.
        (false, "/api/meters" | "/api/meters/{id}" | "/api/meters/{id}/thresholds") => {
            allow(UTILITY, Any)
        }
        (false, "/api/users" | "/api/users/{id}" | "/api/tariffs" | "/api/sessions") => {
            allow(UTILITY, Any)
        }
        // A consumer sets their own budget, tops up their own meter and opts in to a
        // saving session themselves (the handler checks the body's user).
        (false, "/api/users/{id}/budget") => allow(&[Role::Utility, Role::Consumer], User),
        (false, "/api/meters/{id}/topups") => allow(&[Role::Utility, Role::Consumer], Meter),
        (false, "/api/sessions/{id}/participants") => allow(&[Role::Utility, Role::Consumer], Any),
        // The payment provider's callbacks.
        (false, "/api/topups/{id}/confirm" | "/api/topups/{id}/fail") => {
            allow(&[Role::Service, Role::Utility], Any)
        }
        // The alert workflow is the ops team's.
        (false, pattern) if pattern.starts_with("/api/alerts/{id}/") => allow(OPS, Any),
        _ => return None,
    };
    Some(policy)
}

/// Whether `pattern` has a policy for some method (so a miss for this method is the
/// router's 404/405, not a forgotten route).
fn mapped_for_any_method(pattern: &str) -> bool {
    [
        Method::GET,
        Method::POST,
        Method::PUT,
        Method::DELETE,
        Method::PATCH,
    ]
    .iter()
    .any(|method| policy(method, pattern).is_some())
}

/// Per-caller token buckets: `rate` requests per second, bursts of `burst`.
#[derive(Debug)]
pub struct RateLimiter {
    rate_per_s: f64,
    burst: f64,
    buckets: Mutex<FxHashMap<Arc<str>, Bucket>>,
}

#[derive(Debug, Clone, Copy)]
struct Bucket {
    tokens: f64,
    at: Instant,
}

/// Callers remembered before idle buckets are swept.
const MAX_BUCKETS: usize = 100_000;

impl RateLimiter {
    /// A limiter allowing `rate_per_s` requests per second per caller, bursts of
    /// `burst`; `rate_per_s == 0` disables limiting.
    pub fn new(rate_per_s: f64, burst: f64) -> RateLimiter {
        RateLimiter {
            rate_per_s,
            burst: burst.max(1.0),
            buckets: Mutex::new(FxHashMap::default()),
        }
    }

    /// Takes one token for `caller`, or says how long to wait for one.
    pub fn check(&self, caller: &Arc<str>, now: Instant) -> Result<(), Duration> {
        if self.rate_per_s <= 0.0 {
            return Ok(());
        }
        let mut buckets = self.buckets.lock();
        if buckets.len() >= MAX_BUCKETS {
            // Full buckets carry no state worth keeping.
            let (rate, burst) = (self.rate_per_s, self.burst);
            buckets.retain(|_, bucket| {
                bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * rate < burst
            });
        }
        let bucket = buckets.entry(Arc::clone(caller)).or_insert(Bucket {
            tokens: self.burst,
            at: now,
        });
        let refilled =
            bucket.tokens + now.duration_since(bucket.at).as_secs_f64() * self.rate_per_s;
        bucket.tokens = refilled.min(self.burst);
        bucket.at = now;
        if bucket.tokens >= 1.0 {
            bucket.tokens -= 1.0;
            Ok(())
        } else {
            Err(Duration::from_secs_f64(
                (1.0 - bucket.tokens) / self.rate_per_s,
            ))
        }
    }
}

/// The segment of `path` at the position of `{id}` in `pattern`.
fn path_id<'a>(pattern: &str, path: &'a str) -> Option<&'a str> {
    let position = pattern.split('/').position(|segment| segment == "{id}")?;
    path.split('/').nth(position)
}

/// 404 unless the consumer `tenant` owns what the request is about.
async fn check_scope(
    state: &AppState,
    tenant: UserId,
    scope: Scope,
    id: Option<&str>,
) -> Result<(), ApiError> {
    let owns_meter = |meter: MeterId| async move {
        match state.meters.meter_config(meter).await {
            Ok(config) => Ok(config.owner == Some(tenant)),
            Err(gridpulse_actors::SystemError::MeterNotFound) => Ok(false),
            Err(error) => Err(ApiError::from(error)),
        }
    };
    match scope {
        Scope::Any => Ok(()),
        Scope::User => match id {
            Some(id) if id == tenant.as_str() => Ok(()),
            _ => Err(ApiError::NotFound("user")),
        },
        Scope::Meter => {
            let meter = id
                .and_then(|id| MeterId::new(id).ok())
                .ok_or(ApiError::NotFound("meter"))?;
            if owns_meter(meter).await? {
                Ok(())
            } else {
                Err(ApiError::NotFound("meter"))
            }
        }
        Scope::Alert => {
            let id = id.ok_or(ApiError::NotFound("alert"))?;
            let meter = match state.meters.hub().get(id) {
                Some(alert) => Some(alert.meter),
                None => match &state.store {
                    Some(store) => store.get_alert(id).await?.map(|stored| stored.alert.meter),
                    None => None,
                },
            };
            match meter {
                Some(meter) if owns_meter(meter).await? => Ok(()),
                _ => Err(ApiError::NotFound("alert")),
            }
        }
    }
}

/// The meters `user` owns, in id order (from the stored meter configurations; a
/// consumer owns a handful, but finding them reads every meter's configuration).
pub async fn owned_meters(state: &AppState, user: UserId) -> Result<Vec<MeterId>, ApiError> {
    let Some(store) = &state.store else {
        return Ok(Vec::new());
    };
    let mut meters = Vec::new();
    for (id, json) in store
        .list_config(gridpulse_store::ConfigKind::Meter)
        .await?
    {
        let Ok(config) = serde_json::from_slice::<gridpulse_actors::system::MeterConfig>(&json)
        else {
            tracing::warn!(meter = %id, "stored meter configuration is unreadable");
            continue;
        };
        if config.owner == Some(user)
            && let Ok(meter) = MeterId::new(&id)
        {
            meters.push(meter);
        }
    }
    meters.sort_by(|a, b| a.as_str().cmp(b.as_str()));
    Ok(meters)
}

/// The authenticated caller of a request, if the middleware found one.
pub fn caller_if_any(request: &actix_web::HttpRequest) -> Option<Principal> {
    request.extensions().get::<Principal>().cloned()
}

/// The caller of a request, put there by the middleware.
pub fn caller(request: &actix_web::HttpRequest) -> Principal {
    request
        .extensions()
        .get::<Principal>()
        .cloned()
        // Unreachable behind the middleware; the least privilege otherwise.
        .unwrap_or_else(|| Principal {
            subject: Arc::from("unauthenticated"),
            role: Role::Service,
            user: None,
            expires_at: None,
        })
}

/// Authenticates, rate-limits, authorizes and scopes a request before its handler;
/// measures it and records writes in the audit log after.
pub async fn guard(
    request: ServiceRequest,
    next: Next<impl MessageBody + 'static>,
) -> Result<ServiceResponse<BoxBody>, actix_web::Error> {
    let started = Instant::now();
    let pattern = request.match_pattern();
    let route = pattern.clone().unwrap_or_else(|| "unmatched".to_owned());
    let method = request.method().clone();
    let Some(state) = request.app_data::<web::Data<AppState>>().cloned() else {
        return Ok(next.call(request).await?.map_into_boxed_body());
    };
    let principal = match authorize(&request, &state, pattern.as_deref(), &method).await {
        Ok(principal) => principal,
        Err(error) => {
            let response = request.error_response(error);
            crate::metrics::record_request(
                &route,
                method.as_str(),
                response.status().as_u16(),
                started.elapsed(),
            );
            return Ok(response);
        }
    };
    let audited = principal
        .as_ref()
        .filter(|_| is_audited_write(&method, &route))
        .cloned();
    let path = request.path().to_owned();
    if let Some(principal) = principal {
        request.extensions_mut().insert(principal);
    }
    let response = next.call(request).await?.map_into_boxed_body();
    let status = response.status().as_u16();
    crate::metrics::record_request(&route, method.as_str(), status, started.elapsed());
    if let Some(principal) = audited {
        crate::audit::record(&state, &principal, &method, &path, status).await;
    }
    Ok(response)
}

/// Writes that go to the audit log: everything but reading ingestion (its volume is
/// the product; its provenance is the `source` of each reading).
fn is_audited_write(method: &Method, route: &str) -> bool {
    !(method == Method::GET || method == Method::HEAD || route == "/api/readings")
}

/// The caller, when the route needs one; `Ok(None)` for public and unmapped routes.
async fn authorize(
    request: &ServiceRequest,
    state: &AppState,
    pattern: Option<&str>,
    method: &Method,
) -> Result<Option<Principal>, ApiError> {
    let Some(pattern) = pattern else {
        // No route: the router answers 404.
        return Ok(None);
    };
    let policy = match policy(method, pattern) {
        Some(policy) => policy,
        None if mapped_for_any_method(pattern) => return Ok(None),
        None => {
            return Err(ApiError::Forbidden(format!(
                "{method} {pattern} has no access policy"
            )));
        }
    };
    if policy.roles.is_empty() {
        return Ok(None);
    }
    let header = request
        .headers()
        .get(actix_web::http::header::AUTHORIZATION)
        .map(|value| value.as_bytes());
    let principal = match state.auth.authenticate_header(header) {
        Ok(principal) => principal,
        // Browsers cannot set headers on a websocket: it authenticates in its first
        // message instead.
        Err(crate::auth::AuthError::Missing) if pattern == "/ws/alerts" => return Ok(None),
        Err(error) => {
            crate::metrics::record_auth_failure(error.code());
            return Err(ApiError::Unauthorized(error));
        }
    };
    if !state.auth.is_insecure()
        && let Err(wait) = state.rate_limiter.check(&principal.subject, Instant::now())
    {
        crate::metrics::record_rate_limited(principal.role.as_str());
        return Err(ApiError::RateLimited {
            retry_after_s: wait.as_secs_f64().ceil().max(1.0) as u64,
        });
    }
    // The insecure development caller may do anything.
    if !state.auth.is_insecure() && !policy.roles.contains(&principal.role) {
        crate::metrics::record_auth_failure("forbidden_role");
        return Err(ApiError::Forbidden(format!(
            "the {} role may not {method} {pattern}",
            principal.role.as_str()
        )));
    }
    if let Some(tenant) = principal.tenant() {
        check_scope(
            state,
            tenant,
            policy.scope,
            path_id(pattern, request.path()),
        )
        .await?;
    }
    Ok(Some(principal))
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Every route the handlers declare, read from their sources.
    fn declared_routes() -> Vec<(Method, String)> {
        let sources = [
            include_str!("routes/alerts.rs"),
            include_str!("routes/audit.rs"),
            include_str!("routes/credit.rs"),
            include_str!("routes/import.rs"),
            include_str!("routes/meters.rs"),
            include_str!("routes/money.rs"),
            include_str!("routes/mqtt.rs"),
            include_str!("routes/overview.rs"),
            include_str!("routes/readings.rs"),
            include_str!("routes/sessions.rs"),
            include_str!("routes/system.rs"),
            include_str!("routes/tariffs.rs"),
            include_str!("routes/usage.rs"),
            include_str!("routes/users.rs"),
            include_str!("ws/mod.rs"),
        ];
        let mut routes = Vec::new();
        for source in sources {
            for (macro_name, method) in [
                ("#[get(\"", Method::GET),
                ("#[post(\"", Method::POST),
                ("#[put(\"", Method::PUT),
                ("#[delete(\"", Method::DELETE),
            ] {
                for (index, _) in source.match_indices(macro_name) {
                    let rest = &source[index + macro_name.len()..];
                    if let Some(end) = rest.find('"') {
                        routes.push((method.clone(), rest[..end].to_owned()));
                    }
                }
            }
        }
        routes
    }

    #[test]
    fn every_declared_route_has_a_policy() {
        let routes = declared_routes();
        assert!(routes.len() > 30, "found only {} routes", routes.len());
        for (method, pattern) in routes {
            assert!(
                policy(&method, &pattern).is_some(),
                "{method} {pattern} has no access policy"
            );
        }
    }

    #[test]
    fn roles_and_scopes_follow_the_table() {
        let get =
            |pattern| policy(&Method::GET, pattern).map(|policy| (policy.roles, policy.scope));
        assert_eq!(get("/api/meters/{id}/cost"), Some((READERS, Scope::Meter)));
        assert_eq!(get("/api/users/{id}/bill"), Some((READERS, Scope::User)));
        assert_eq!(get("/api/audit"), Some((OPS, Scope::Any)));
        assert_eq!(get("/healthz"), Some((PUBLIC.roles, Scope::Any)));
        let post = |pattern| policy(&Method::POST, pattern).map(|policy| policy.roles);
        assert_eq!(post("/api/readings"), Some(INGEST));
        let import = post("/api/import").unwrap_or_default();
        assert!(import.contains(&Role::Utility) && import.contains(&Role::Ops));
        assert!(!import.contains(&Role::Service) && !import.contains(&Role::Consumer));
        assert_eq!(post("/api/alerts/{id}/ack"), Some(OPS));
        assert_eq!(post("/api/meters"), Some(UTILITY));
        assert!(
            !post("/api/alerts/{id}/ack")
                .unwrap_or_default()
                .contains(&Role::Consumer)
        );
        assert_eq!(policy(&Method::DELETE, "/api/unknown"), None);
    }

    #[test]
    fn ids_come_from_the_pattern_position() {
        assert_eq!(
            path_id("/api/meters/{id}/cost", "/api/meters/m-1/cost"),
            Some("m-1")
        );
        assert_eq!(path_id("/api/users/{id}", "/api/users/u-9"), Some("u-9"));
        assert_eq!(path_id("/api/meters", "/api/meters"), None);
    }

    #[test]
    fn buckets_refill_at_the_rate() {
        let limiter = RateLimiter::new(10.0, 2.0);
        let caller: Arc<str> = Arc::from("a");
        let start = Instant::now();
        assert!(limiter.check(&caller, start).is_ok());
        assert!(limiter.check(&caller, start).is_ok());
        let wait = limiter.check(&caller, start).err();
        assert!(
            wait.is_some_and(|wait| wait <= Duration::from_millis(100)),
            "{wait:?}"
        );
        assert!(
            limiter
                .check(&caller, start + Duration::from_millis(100))
                .is_ok()
        );
        // Another caller has its own bucket.
        assert!(limiter.check(&Arc::from("b"), start).is_ok());
        assert!(RateLimiter::new(0.0, 1.0).check(&caller, start).is_ok());
    }
}
