//! The OpenAPI document: valid, the same routes as the server's, and every operation
//! answers as documented — a property-style check that calls each operation as each
//! role with good, missing and hostile inputs (path ids, query values, bodies) and
//! asserts the status is one the document lists, that errors have the documented body,
//! and that nothing is ever a 500.

#![allow(clippy::unwrap_used, clippy::expect_used)]

mod support;

use std::collections::BTreeSet;
use std::sync::Arc;

use gridpulse_api::auth::{Auth, Claims, SigningKey, Verifier, issue, unix_now};
use serde_json::{Value, json};
use support::{fresh_data_dir, http, http_as, with_config};

const SECRET: &[u8] = b"openapi-test-secret-0123456789ab";

fn token(role: &str, user: Option<&str>) -> String {
    let now = unix_now();
    let claims = Claims {
        sub: format!("spec-{role}"),
        role: role.into(),
        user: user.map(str::to_owned),
        exp: now + 600,
        nbf: None,
        iat: Some(now),
        iss: "gridpulse".into(),
        aud: "gridpulse".into(),
    };
    issue(&claims, &SigningKey::Hs256(SECRET.to_vec()), None).unwrap()
}

/// Every route the handlers declare (actix macros in the sources).
fn declared_routes() -> BTreeSet<(String, String)> {
    let sources = [
        include_str!("../src/routes/alerts.rs"),
        include_str!("../src/routes/audit.rs"),
        include_str!("../src/routes/credit.rs"),
        include_str!("../src/routes/import.rs"),
        include_str!("../src/routes/meters.rs"),
        include_str!("../src/routes/money.rs"),
        include_str!("../src/routes/mqtt.rs"),
        include_str!("../src/routes/overview.rs"),
        include_str!("../src/routes/readings.rs"),
        include_str!("../src/routes/sessions.rs"),
        include_str!("../src/routes/system.rs"),
        include_str!("../src/routes/tariffs.rs"),
        include_str!("../src/routes/usage.rs"),
        include_str!("../src/routes/users.rs"),
        include_str!("../src/ws/mod.rs"),
    ];
    let mut routes = BTreeSet::new();
    for source in sources {
        for method in ["get", "post", "put", "delete"] {
            let prefix = format!("#[{method}(\"");
            for (index, _) in source.match_indices(&prefix) {
                let rest = &source[index + prefix.len()..];
                routes.insert((
                    method.to_owned(),
                    rest[..rest.find('"').unwrap()].to_owned(),
                ));
            }
        }
    }
    routes
}

/// A tiny deterministic generator (no dependency): xorshift.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 << 13;
        self.0 ^= self.0 >> 7;
        self.0 ^= self.0 << 17;
        self.0
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[(self.next() % items.len() as u64) as usize]
    }
}

/// Path ids and query values a client might send, good and hostile (URL-encoded).
const VALUES: [&str; 12] = [
    "m-doc",
    "u-doc",
    "0",
    "-1",
    "abc",
    "%00",
    "..%2F..%2Fetc",
    "%E2%9C%93",
    "9999999999999999999999",
    "a%20b",
    "2026-13",
    "xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx",
];

const BODIES: [&str; 5] = ["", "{}", "not json", "[1,2", r#"{"id":"x","unknown":1}"#];

fn documented_statuses(operation: &Value) -> BTreeSet<u16> {
    operation["responses"]
        .as_object()
        .unwrap()
        .keys()
        .map(|status| status.parse().unwrap())
        .collect()
}

fn resolve_refs(document: &Value, value: &Value, unresolved: &mut Vec<String>) {
    match value {
        Value::Object(map) => {
            if let Some(Value::String(reference)) = map.get("$ref") {
                let pointer = reference.trim_start_matches('#');
                if document.pointer(pointer).is_none() {
                    unresolved.push(reference.clone());
                }
            }
            for child in map.values() {
                resolve_refs(document, child, unresolved);
            }
        }
        Value::Array(items) => {
            for item in items {
                resolve_refs(document, item, unresolved);
            }
        }
        _ => {}
    }
}

#[test]
fn the_document_covers_every_route_and_every_operation_answers_as_documented() {
    let dir = fresh_data_dir("openapi", "conformance");
    let verifier = Verifier::new("gridpulse", "gridpulse")
        .with_hs256_secret(SECRET)
        .unwrap();
    with_config(
        Some(dir),
        Arc::new(gridpulse_actors::SystemClock),
        move |config| {
            config.auth = Auth::Tokens(Arc::new(verifier));
            config.rate_limit = (0.0, 1.0);
        },
        |addr| async move {
            let (status, document) = http(addr, "GET", "/api/openapi.json", "").await;
            assert_eq!(status, 200, "{document}");
            // Structurally valid OpenAPI 3.
            assert!(
                document["openapi"].as_str().unwrap().starts_with("3."),
                "{document}"
            );
            assert!(document["info"]["title"].is_string());
            assert_eq!(
                document["components"]["securitySchemes"]["bearer"]["scheme"],
                "bearer"
            );
            let mut unresolved = Vec::new();
            resolve_refs(&document, &document, &mut unresolved);
            assert!(unresolved.is_empty(), "unresolved $refs: {unresolved:?}");
            let paths = document["paths"].as_object().unwrap();
            let mut documented = BTreeSet::new();
            for (path, item) in paths {
                for (method, operation) in item.as_object().unwrap() {
                    documented.insert((method.clone(), path.clone()));
                    let statuses = documented_statuses(operation);
                    assert!(
                        !statuses.is_empty(),
                        "{method} {path} documents no response"
                    );
                    assert!(
                        operation["tags"]
                            .as_array()
                            .is_some_and(|tags| !tags.is_empty()),
                        "{method} {path} has no tag"
                    );
                    for placeholder in path.matches('{') {
                        let _ = placeholder;
                        assert!(
                            operation["parameters"]
                                .as_array()
                                .is_some_and(|params| params.iter().any(|p| p["in"] == "path")),
                            "{method} {path}: path parameter not documented"
                        );
                    }
                }
            }
            // The same routes as the server's, no more, no fewer.
            assert_eq!(documented, declared_routes());

            // Every operation, as every role, with good and hostile inputs.
            let tokens = [
                token("ops", None),
                token("utility", None),
                token("consumer", Some("u-doc")),
                token("service", None),
            ];
            let mut rng = Rng(0x5eed_1234_abcd_ef01);
            let mut calls = 0;
            for (path, item) in paths {
                for (method, operation) in item.as_object().unwrap() {
                    let statuses = documented_statuses(operation);
                    let query_names: Vec<String> = operation["parameters"]
                        .as_array()
                        .map(|params| {
                            params
                                .iter()
                                .filter(|p| p["in"] == "query")
                                .map(|p| p["name"].as_str().unwrap().to_owned())
                                .collect()
                        })
                        .unwrap_or_default();
                    for round in 0..8 {
                        let mut target = path.clone();
                        while let Some(start) = target.find('{') {
                            let end = target[start..].find('}').unwrap() + start;
                            let value = if round == 0 {
                                "m-doc"
                            } else {
                                rng.pick(&VALUES)
                            };
                            target.replace_range(start..=end, value);
                        }
                        if round > 0 && !query_names.is_empty() {
                            let name =
                                &query_names[(rng.next() % query_names.len() as u64) as usize];
                            target.push_str(&format!("?{name}={}", rng.pick(&VALUES)));
                        }
                        let body = if method == "get" {
                            ""
                        } else {
                            rng.pick(&BODIES)
                        };
                        let who = &tokens[round % tokens.len()];
                        let (status, answer) =
                            http_as(addr, who, &method.to_uppercase(), &target, body).await;
                        calls += 1;
                        assert!(
                            statuses.contains(&status),
                            "{method} {target} (round {round}) answered {status}, documented \
                             {statuses:?}: {answer}"
                        );
                        if status >= 400 && path != "/ws/alerts" {
                            assert!(
                                answer["error"]["code"].is_string()
                                    && answer["error"]["message"].is_string(),
                                "{method} {target}: {status} without the error body: {answer}"
                            );
                        }
                    }
                }
            }
            // Without a token, every protected operation is a documented 401.
            for (path, item) in paths {
                for (method, operation) in item.as_object().unwrap() {
                    let public = operation["security"]
                        .as_array()
                        .is_some_and(|requirements| requirements.iter().any(|r| r == &json!({})));
                    // The websocket may authenticate in its first message instead.
                    if public || path == "/ws/alerts" {
                        continue;
                    }
                    let target = path.replace("{id}", "m-doc");
                    let (status, answer) = http(addr, &method.to_uppercase(), &target, "").await;
                    assert_eq!(status, 401, "{method} {target} without a token: {answer}");
                    assert!(documented_statuses(operation).contains(&401));
                }
            }
            println!(
                "openapi conformance: {} operations, {calls} calls",
                documented.len()
            );
        },
    );
}
