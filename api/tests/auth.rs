//! Authentication and authorization against the whole embedded system: every attack on
//! the token is refused with its reason, roles gate routes, a consumer sees only their
//! own data (another tenant's is a 404 like a missing one), writes are audited and
//! tokens are rate limited.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::path::PathBuf;
use std::sync::Arc;

use base64::Engine as _;
use gridpulse_api::auth::{Auth, Claims, SigningKey, Verifier, issue, unix_now};
use serde_json::{Value, json};
use support::{fresh_data_dir, http, http_as, http_with, with_config};

const SECRET: &[u8] = b"auth-test-secret-0123456789abcdef";

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures")
        .join(name)
}

fn claims(sub: &str, role: &str, user: Option<&str>) -> Claims {
    let now = unix_now();
    Claims {
        sub: sub.into(),
        role: role.into(),
        user: user.map(str::to_owned),
        exp: now + 600,
        nbf: None,
        iat: Some(now),
        iss: "gridpulse".into(),
        aud: "gridpulse".into(),
    }
}

fn hs(claims: &Claims) -> String {
    issue(claims, &SigningKey::Hs256(SECRET.to_vec()), None).unwrap()
}

fn rs(claims: &Claims, kid: Option<&str>) -> String {
    let pem = std::fs::read(fixture("rsa-private.pem")).unwrap();
    issue(claims, &SigningKey::Rs256Pem(pem), kid).unwrap()
}

fn es(claims: &Claims, kid: Option<&str>) -> String {
    let pem = std::fs::read(fixture("ec-private.pem")).unwrap();
    issue(claims, &SigningKey::Es256Pem(pem), kid).unwrap()
}

fn code(body: &Value) -> &str {
    body["error"]["code"].as_str().unwrap_or("<none>")
}

/// A token with the same header and signature but another payload.
fn tampered(token: &str) -> String {
    let parts: Vec<&str> = token.split('.').collect();
    let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
    let mut payload: Value = serde_json::from_slice(&engine.decode(parts[1]).unwrap()).unwrap();
    payload["role"] = json!("ops");
    payload["sub"] = json!("mallory");
    let payload = engine.encode(serde_json::to_vec(&payload).unwrap());
    format!("{}.{payload}.{}", parts[0], parts[2])
}

#[test]
fn attacks_on_the_token_are_refused_with_their_reason() {
    let verifier = Verifier::new("gridpulse", "gridpulse")
        .with_public_key_file(&fixture("rsa-public.pem"))
        .unwrap()
        .with_jwks_file(&fixture("jwks.json"))
        .unwrap();
    with_config(
        None,
        Arc::new(gridpulse_actors::SystemClock),
        move |config| config.auth = Auth::Tokens(Arc::new(verifier)),
        |addr| async move {
            let ops = claims("olivia", "ops", None);
            // Valid: RS256 by the PEM key, by the JWKS key (kid), ES256 by the JWKS key.
            for token in [
                rs(&ops, None),
                rs(&ops, Some("rsa-1")),
                es(&ops, Some("ec-1")),
            ] {
                let (status, body) = http_as(addr, &token, "GET", "/api/alerts", "").await;
                assert_eq!(status, 200, "{body}");
            }
            let engine = base64::engine::general_purpose::URL_SAFE_NO_PAD;
            let payload = engine.encode(serde_json::to_vec(&ops).unwrap());
            let alg_none = format!(
                "{}.{payload}.",
                engine.encode(br#"{"alg":"none","typ":"JWT"}"#)
            );
            // HS256 "signed" with the server's RSA public key as the HMAC secret.
            let public_pem = std::fs::read(fixture("rsa-public.pem")).unwrap();
            let confused = issue(&ops, &SigningKey::Hs256(public_pem), None).unwrap();
            let mut expired = ops.clone();
            expired.exp = unix_now() - 3600;
            let mut early = ops.clone();
            early.nbf = Some(unix_now() + 3600);
            let mut wrong_aud = ops.clone();
            wrong_aud.aud = "billing".into();
            let mut wrong_iss = ops.clone();
            wrong_iss.iss = "someone-else".into();
            let consumer = rs(&claims("carol", "consumer", Some("u-carol")), None);
            let cases = [
                ("alg none", alg_none, "algorithm_not_allowed"),
                ("HS/RS confusion", confused, "algorithm_not_allowed"),
                ("expired", rs(&expired, None), "expired"),
                ("not yet valid", rs(&early, None), "not_yet_valid"),
                ("wrong audience", rs(&wrong_aud, None), "wrong_audience"),
                ("wrong issuer", rs(&wrong_iss, None), "wrong_issuer"),
                ("tampered payload", tampered(&consumer), "bad_signature"),
                ("unknown kid", es(&ops, Some("ec-404")), "unknown_key"),
                ("garbage", "not.a.jwt".to_owned(), "malformed_token"),
            ];
            for (what, token, expected) in &cases {
                let (status, body) = http_as(addr, token, "GET", "/api/alerts", "").await;
                assert_eq!((status, code(&body)), (401, *expected), "{what}: {body}");
                assert!(
                    !body.to_string().contains(token.as_str()),
                    "{what}: the token is echoed"
                );
            }
            let (status, head, body) = http_with(addr, "GET", "/api/meters", &[], "").await;
            assert_eq!((status, code(&body)), (401, "missing_token"), "{body}");
            assert!(head.contains("www-authenticate: bearer"), "{head}");
            let (status, _, body) = http_with(
                addr,
                "GET",
                "/api/meters",
                &[("Authorization", "Basic b3BzOm9wcw==")],
                "",
            )
            .await;
            assert_eq!((status, code(&body)), (401, "malformed_token"), "{body}");
            // Public routes need no token.
            assert_eq!(http(addr, "GET", "/healthz", "").await.0, 200);
            // Failures are counted by reason.
            let (_, metrics) = http(addr, "GET", "/metrics", "").await;
            let metrics = metrics.as_str().unwrap().to_owned();
            for reason in [
                "algorithm_not_allowed",
                "expired",
                "bad_signature",
                "missing_token",
            ] {
                assert!(
                    metrics.contains(&format!(
                        "gridpulse_api_auth_failures_total{{reason=\"{reason}\"}}"
                    )),
                    "no failure count for {reason}"
                );
            }
        },
    );
}

#[test]
fn roles_gate_routes_and_consumers_see_only_their_own_data() {
    let dir = fresh_data_dir("auth", "tenants");
    let verifier = Verifier::new("gridpulse", "gridpulse")
        .with_hs256_secret(SECRET)
        .unwrap();
    with_config(
        Some(dir),
        Arc::new(gridpulse_actors::SystemClock),
        move |config| config.auth = Auth::Tokens(Arc::new(verifier)),
        |addr| async move {
            let utility = hs(&claims("uma", "utility", None));
            let ops = hs(&claims("olivia", "ops", None));
            let service = hs(&claims("head-end", "service", None));
            let alice = hs(&claims("alice", "consumer", Some("u-alice")));
            for user in ["u-alice", "u-bob"] {
                let account = json!({"id": user, "name": user});
                let (status, body) =
                    http_as(addr, &utility, "POST", "/api/users", &account.to_string()).await;
                assert_eq!(status, 201, "{body}");
            }
            for (meter, owner) in [("m-alice", "u-alice"), ("m-bob", "u-bob")] {
                let registration = json!({"id": meter, "owner": owner});
                let (status, body) = http_as(
                    addr,
                    &utility,
                    "POST",
                    "/api/meters",
                    &registration.to_string(),
                )
                .await;
                assert_eq!(status, 201, "{body}");
            }
            // Roles: meters are the utility's, alert actions ops', ingest the service's.
            let registration = json!({"id": "m-x"}).to_string();
            for (token, role) in [(&ops, "ops"), (&alice, "consumer"), (&service, "service")] {
                let (status, body) =
                    http_as(addr, token, "POST", "/api/meters", &registration).await;
                assert_eq!((status, code(&body)), (403, "forbidden"), "{role}: {body}");
            }
            let (status, body) = http_as(addr, &service, "GET", "/api/meters", "").await;
            assert_eq!(status, 403, "{body}");
            // An over-voltage reading for each meter, ingested by the service.
            let now = gridpulse_actors::Clock::now_ms(&gridpulse_actors::SystemClock);
            let readings: Vec<Value> = ["m-alice", "m-bob"]
                .iter()
                .map(|meter| {
                    json!({"meter": meter, "ts_ms": now - 1000, "voltage": 270.0,
                           "current": 5.0, "power_w": 1200.0, "energy_wh": 100.0})
                })
                .collect();
            let (status, body) = http_as(
                addr,
                &service,
                "POST",
                "/api/readings",
                &Value::Array(readings).to_string(),
            )
            .await;
            assert_eq!(status, 202, "{body}");
            let deadline = std::time::Instant::now() + std::time::Duration::from_secs(10);
            let bob_alert = loop {
                let (_, body) = http_as(addr, &ops, "GET", "/api/alerts?meter=m-bob", "").await;
                if let Some(id) = body["alerts"][0]["id"].as_str() {
                    break id.to_owned();
                }
                assert!(std::time::Instant::now() < deadline, "no alert for m-bob");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
            };
            // Alice: her own meter, user and alerts; another tenant's look like nothing.
            let (status, body) = http_as(addr, &alice, "GET", "/api/meters/m-alice", "").await;
            assert_eq!(status, 200, "{body}");
            let (status, theirs) = http_as(addr, &alice, "GET", "/api/meters/m-bob", "").await;
            let (_, missing) = http_as(addr, &alice, "GET", "/api/meters/m-nobody", "").await;
            assert_eq!(status, 404, "{theirs}");
            assert_eq!(theirs, missing, "another tenant's meter must look missing");
            for path in [
                "/api/meters/m-bob/readings",
                "/api/meters/m-bob/cost",
                "/api/users/u-bob",
                "/api/users/u-bob/cost",
            ] {
                let (status, body) = http_as(addr, &alice, "GET", path, "").await;
                assert_eq!((status, code(&body)), (404, "not_found"), "{path}: {body}");
            }
            let (status, body) =
                http_as(addr, &alice, "GET", &format!("/api/alerts/{bob_alert}"), "").await;
            assert_eq!(status, 404, "{body}");
            let (status, body) = http_as(addr, &alice, "GET", "/api/users/u-alice", "").await;
            assert_eq!(status, 200, "{body}");
            let (_, meters) = http_as(addr, &alice, "GET", "/api/meters", "").await;
            let ids: Vec<&str> = meters["meters"]
                .as_array()
                .unwrap()
                .iter()
                .map(|meter| meter["meter"].as_str().or(meter["id"].as_str()).unwrap())
                .collect();
            assert_eq!(ids, ["m-alice"], "{meters}");
            let (_, users) = http_as(addr, &alice, "GET", "/api/users", "").await;
            assert_eq!(users["users"].as_array().unwrap().len(), 1, "{users}");
            let (_, alerts) = http_as(addr, &alice, "GET", "/api/alerts", "").await;
            let alert_meters: Vec<&str> = alerts["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|alert| alert["meter"].as_str().unwrap())
                .collect();
            assert!(
                !alert_meters.is_empty() && alert_meters.iter().all(|meter| *meter == "m-alice"),
                "{alerts}"
            );
            let (_, alerts) = http_as(addr, &alice, "GET", "/api/alerts?meter=m-bob", "").await;
            assert_eq!(alerts["alerts"], json!([]), "{alerts}");
            // Ops read everything and act on alerts; a consumer may not.
            let (status, body) = http_as(
                addr,
                &alice,
                "POST",
                &format!("/api/alerts/{bob_alert}/ack"),
                "",
            )
            .await;
            assert_eq!(status, 403, "{body}");
            let (status, body) = http_as(
                addr,
                &ops,
                "POST",
                &format!("/api/alerts/{bob_alert}/ack"),
                "",
            )
            .await;
            assert_eq!(status, 200, "{body}");
            // Who acted comes from the token, not from the body.
            assert_eq!(body["acknowledged_by"], "olivia", "{body}");
            let (status, body) = http_as(
                addr,
                &ops,
                "POST",
                &format!("/api/alerts/{bob_alert}/assign"),
                &json!({"to": "u-bob", "by": "mallory"}).to_string(),
            )
            .await;
            assert_eq!((status, body["error"]["field"].as_str()), (400, Some("by")));

            // Cursor pages of alerts: every alert once, newest first.
            let (_, everything) = http_as(addr, &ops, "GET", "/api/alerts", "").await;
            let mut paged = Vec::new();
            let mut path = "/api/alerts?limit=1".to_owned();
            loop {
                let (status, page) = http_as(addr, &ops, "GET", &path, "").await;
                assert_eq!(status, 200, "{page}");
                assert!(page["alerts"].as_array().unwrap().len() <= 1, "{page}");
                paged.extend(
                    page["alerts"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .map(|a| a["id"].clone()),
                );
                match page["next"].as_str() {
                    Some(next) => path = format!("/api/alerts?limit=1&before={next}"),
                    None => break,
                }
                assert!(paged.len() < 100, "pages never end");
            }
            let all: Vec<Value> = everything["alerts"]
                .as_array()
                .unwrap()
                .iter()
                .map(|a| a["id"].clone())
                .collect();
            assert_eq!(paged, all, "pages of one");
            assert!(paged.len() >= 2, "{everything}");
            let (status, body) =
                http_as(addr, &ops, "GET", "/api/alerts?before=yesterday", "").await;
            assert_eq!(
                (status, body["error"]["field"].as_str()),
                (400, Some("before"))
            );

            // The audit log: ops only; every write with who did it, newest first.
            for (token, role) in [
                (&utility, "utility"),
                (&alice, "consumer"),
                (&service, "service"),
            ] {
                let (status, body) = http_as(addr, token, "GET", "/api/audit", "").await;
                assert_eq!((status, code(&body)), (403, "forbidden"), "{role}: {body}");
            }
            let (status, log) = http_as(addr, &ops, "GET", "/api/audit", "").await;
            assert_eq!(status, 200, "{log}");
            let entries: Vec<(String, String, String, u64)> = log["entries"]
                .as_array()
                .unwrap()
                .iter()
                .map(|e| {
                    (
                        e["subject"].as_str().unwrap().to_owned(),
                        e["method"].as_str().unwrap().to_owned(),
                        e["path"].as_str().unwrap().to_owned(),
                        e["status"].as_u64().unwrap(),
                    )
                })
                .collect();
            let entry = |subject: &str, method: &str, path: &str, status: u64| {
                (
                    subject.to_owned(),
                    method.to_owned(),
                    path.to_owned(),
                    status,
                )
            };
            let ack = format!("/api/alerts/{bob_alert}/ack");
            let assign = format!("/api/alerts/{bob_alert}/assign");
            assert_eq!(
                entries,
                vec![
                    entry("olivia", "POST", &assign, 400),
                    entry("olivia", "POST", &ack, 200),
                    entry("uma", "POST", "/api/meters", 201),
                    entry("uma", "POST", "/api/meters", 201),
                    entry("uma", "POST", "/api/users", 201),
                    entry("uma", "POST", "/api/users", 201),
                ],
                "writes newest first; refused roles and reading ingest are not in it: {log}"
            );
            assert_eq!(log["entries"][1]["role"], "ops");
            // Pages of two, and one subject's entries.
            let mut paged = 0;
            let mut path = "/api/audit?limit=2".to_owned();
            loop {
                let (_, page) = http_as(addr, &ops, "GET", &path, "").await;
                paged += page["entries"].as_array().unwrap().len();
                match page["next"].as_str() {
                    Some(next) => path = format!("/api/audit?limit=2&before={next}"),
                    None => break,
                }
                assert!(paged < 100, "pages never end");
            }
            assert_eq!(paged, entries.len());
            let (_, uma) = http_as(addr, &ops, "GET", "/api/audit?subject=uma", "").await;
            assert_eq!(uma["entries"].as_array().unwrap().len(), 4, "{uma}");
            let (status, body) = http_as(addr, &ops, "GET", "/api/audit?before=7", "").await;
            assert_eq!(
                (status, body["error"]["field"].as_str()),
                (400, Some("before"))
            );
        },
    );
}

#[test]
fn tokens_are_rate_limited_with_retry_after() {
    let verifier = Verifier::new("gridpulse", "gridpulse")
        .with_hs256_secret(SECRET)
        .unwrap();
    with_config(
        None,
        Arc::new(gridpulse_actors::SystemClock),
        move |config| {
            config.auth = Auth::Tokens(Arc::new(verifier));
            config.rate_limit = (2.0, 5.0);
        },
        |addr| async move {
            let hasty = hs(&claims("hasty", "ops", None));
            let calm = hs(&claims("calm", "ops", None));
            let header = format!("Bearer {hasty}");
            let mut statuses = Vec::new();
            let mut retry_after = None;
            for _ in 0..12 {
                let (status, head, body) = http_with(
                    addr,
                    "GET",
                    "/api/alerts",
                    &[("Authorization", &header)],
                    "",
                )
                .await;
                if status == 429 {
                    assert_eq!(code(&body), "rate_limited", "{body}");
                    retry_after = head
                        .lines()
                        .find_map(|line| line.strip_prefix("retry-after: "))
                        .map(|value| value.trim().parse::<u64>().unwrap());
                }
                statuses.push(status);
            }
            let limited = statuses.iter().filter(|status| **status == 429).count();
            // A burst of 5 (plus what 2/s refills while the loop runs) passes.
            assert!(
                (5..12).contains(&(12 - limited)) && limited > 0,
                "{statuses:?}"
            );
            assert!(
                retry_after.is_some_and(|seconds| seconds >= 1),
                "{retry_after:?}"
            );
            // Another token is not affected.
            let (status, _) = http_as(addr, &calm, "GET", "/api/alerts", "").await;
            assert_eq!(status, 200);
        },
    );
}
