//! Accounts and tariffs over REST, end to end: the embedded system on port 0 with
//! persistence in a temporary directory; create, list, read, refuse bad input naming
//! the field (and store nothing), conflicts, budgets, and a restart on the same data
//! directory that must give back the same documents.

// Test helpers panic on purpose: a failed step is a failed test.
#![allow(clippy::unwrap_used, clippy::expect_used)]

use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::{Duration, Instant};

use serde_json::{Value, json};

mod support;
use support::{http, with_system};

fn fresh_data_dir(test_name: &str) -> PathBuf {
    support::fresh_data_dir("accounts", test_name)
}

fn flat_gbp() -> Value {
    json!({
        "id": "flat-gbp",
        "name": "Flat GBP",
        "definition": {
            "currency": "GBP",
            "time_zone": "Europe/London",
            "billing_period_start_day": 1,
            "standing_charge_per_day": "0.50",
            "energy": {"kind": "flat", "rate_per_kwh": "0.245"}
        }
    })
}

fn tiered_eur() -> Value {
    json!({
        "id": "tiered-eur",
        "name": "Block tariff",
        "definition": {
            "currency": "EUR",
            "time_zone": "Europe/Berlin",
            "billing_period_start_day": 15,
            "standing_charge_per_day": "0.30",
            "energy": {"kind": "tiered", "tiers": [
                {"up_to_kwh": 100, "rate_per_kwh": "0.20"},
                {"up_to_kwh": 300, "rate_per_kwh": "0.25"},
                {"rate_per_kwh": "0.31"}
            ]}
        }
    })
}

fn time_of_use_gbp() -> Value {
    json!({
        "id": "tou-gbp",
        "name": "Economy 7",
        "definition": {
            "currency": "GBP",
            "time_zone": "Europe/London",
            "billing_period_start_day": 1,
            "standing_charge_per_day": "0.45",
            "energy": {"kind": "time_of_use", "default_rate_per_kwh": "0.28", "bands": [
                {"name": "night", "days": ["mon", "tue", "wed", "thu", "fri", "sat", "sun"],
                 "start": "00:00", "end": "07:00", "rate_per_kwh": "0.09"},
                {"name": "peak", "days": ["mon", "tue", "wed", "thu", "fri"],
                 "start": "16:00", "end": "19:00", "rate_per_kwh": "0.42"}
            ]}
        }
    })
}

/// Asserts a 400 whose body names `field` with `code`.
fn assert_field_error(answer: &(u16, Value), field: &str, code: &str) {
    let (status, body) = answer;
    assert_eq!(*status, 400, "{body}");
    assert_eq!(body["error"]["field"], field, "{body}");
    assert_eq!(body["error"]["code"], code, "{body}");
    assert!(
        body["error"]["message"].as_str().unwrap().contains(field),
        "the message names the field: {body}"
    );
}

async fn post(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    http(addr, "POST", path, &body.to_string()).await
}

async fn put(addr: SocketAddr, path: &str, body: &Value) -> (u16, Value) {
    http(addr, "PUT", path, &body.to_string()).await
}

async fn get(addr: SocketAddr, path: &str) -> (u16, Value) {
    http(addr, "GET", path, "").await
}

#[test]
fn flat_tiered_and_time_of_use_tariffs_are_created_listed_and_read_back() {
    with_system(Some(fresh_data_dir("tariffs")), |addr| async move {
        for tariff in [time_of_use_gbp(), flat_gbp(), tiered_eur()] {
            let (status, created) = post(addr, "/api/tariffs", &tariff).await;
            assert_eq!(status, 201, "{created}");
            assert_eq!(created["id"], tariff["id"]);
            assert_eq!(created["name"], tariff["name"]);
            let (status, read) = get(
                addr,
                &format!("/api/tariffs/{}", tariff["id"].as_str().unwrap()),
            )
            .await;
            assert_eq!((status, &read), (200, &created));
        }
        // Amounts come back exact, in their shortest decimal form.
        let (_, tiered) = get(addr, "/api/tariffs/tiered-eur").await;
        assert_eq!(
            tiered["definition"]["energy"],
            json!({"kind": "tiered", "tiers": [
                {"up_to_kwh": 100, "rate_per_kwh": "0.2"},
                {"up_to_kwh": 300, "rate_per_kwh": "0.25"},
                {"rate_per_kwh": "0.31"}
            ]})
        );
        assert_eq!(tiered["definition"]["billing_period_start_day"], 15);
        assert_eq!(tiered["definition"]["time_zone"], "Europe/Berlin");
        let (_, tou) = get(addr, "/api/tariffs/tou-gbp").await;
        assert_eq!(tou["definition"]["energy"]["bands"][1]["name"], "peak");
        assert_eq!(
            tou["definition"]["energy"]["bands"][1]["days"],
            json!(["mon", "tue", "wed", "thu", "fri"])
        );
        assert_eq!(tou["definition"]["energy"]["bands"][0]["end"], "07:00");
        assert_eq!(tou["definition"]["energy"]["default_rate_per_kwh"], "0.28");

        // The list is in id order.
        let (status, list) = get(addr, "/api/tariffs").await;
        assert_eq!(status, 200);
        let ids: Vec<&str> = list["tariffs"]
            .as_array()
            .unwrap()
            .iter()
            .map(|tariff| tariff["id"].as_str().unwrap())
            .collect();
        assert_eq!(ids, ["flat-gbp", "tiered-eur", "tou-gbp"]);
        assert!(list.get("next").is_none(), "one page: {list}");
        // Cursor pages of two: the same tariffs, once each.
        let (_, first) = get(addr, "/api/tariffs?limit=2").await;
        assert_eq!(first["tariffs"].as_array().unwrap().len(), 2, "{first}");
        assert_eq!(first["next"], "tiered-eur", "{first}");
        let (_, second) = get(addr, "/api/tariffs?limit=2&after=tiered-eur").await;
        assert_eq!(second["tariffs"][0]["id"], "tou-gbp", "{second}");
        assert_eq!(second["tariffs"].as_array().unwrap().len(), 1, "{second}");
        assert!(second.get("next").is_none(), "{second}");
        assert_field_error(
            &get(addr, "/api/tariffs?limit=0").await,
            "limit",
            "invalid_field",
        );
        assert_eq!(
            list["tariffs"][0]["definition"]["energy"]["rate_per_kwh"],
            "0.245"
        );

        // A retry (amounts compared by value) is harmless; a changed body is a conflict
        // and changes nothing.
        let mut retry = flat_gbp();
        retry["definition"]["standing_charge_per_day"] = json!("0.5");
        let (status, again) = post(addr, "/api/tariffs", &retry).await;
        assert_eq!(status, 200, "{again}");
        let mut changed = flat_gbp();
        changed["definition"]["energy"]["rate_per_kwh"] = json!("0.30");
        let (status, conflict) = post(addr, "/api/tariffs", &changed).await;
        assert_eq!(status, 409, "{conflict}");
        assert!(
            conflict["error"]["message"]
                .as_str()
                .unwrap()
                .contains("immutable"),
            "{conflict}"
        );
        let (_, flat) = get(addr, "/api/tariffs/flat-gbp").await;
        assert_eq!(flat["definition"]["energy"]["rate_per_kwh"], "0.245");

        let (status, missing) = get(addr, "/api/tariffs/no-such-tariff").await;
        assert_eq!(status, 404, "{missing}");
        assert_field_error(&get(addr, "/api/tariffs/bad%20id").await, "id", "bad_id");
    });
}

#[test]
fn invalid_tariffs_are_refused_naming_the_field_and_nothing_is_stored() {
    with_system(Some(fresh_data_dir("bad-tariffs")), |addr| async move {
        let mut overlapping = time_of_use_gbp();
        overlapping["definition"]["energy"]["bands"][1]["start"] = json!("06:00");
        let mut out_of_order = tiered_eur();
        out_of_order["definition"]["energy"]["tiers"][1]["up_to_kwh"] = json!(50);
        let mut negative = flat_gbp();
        negative["definition"]["energy"]["rate_per_kwh"] = json!("-0.10");
        let mut unknown_currency = flat_gbp();
        unknown_currency["definition"]["currency"] = json!("XYZ");
        let mut float_amount = flat_gbp();
        float_amount["definition"]["standing_charge_per_day"] = json!(0.5);
        let mut unknown_key = flat_gbp();
        unknown_key["colour"] = json!("blue");
        let mut unknown_nested_key = tiered_eur();
        unknown_nested_key["definition"]["energy"]["tiers"][0]["discount"] = json!("0.01");
        let mut unknown_zone = flat_gbp();
        unknown_zone["definition"]["time_zone"] = json!("Mars/Olympus");
        let mut no_name = flat_gbp();
        no_name.as_object_mut().unwrap().remove("name");
        let cases = [
            (
                overlapping,
                "definition.energy.bands[1]",
                "overlapping_bands",
            ),
            (
                out_of_order,
                "definition.energy.tiers[1].up_to_kwh",
                "tiers_out_of_order",
            ),
            (
                negative,
                "definition.energy.rate_per_kwh",
                "negative_amount",
            ),
            (unknown_currency, "definition.currency", "unknown_currency"),
            (
                float_amount,
                "definition.standing_charge_per_day",
                "invalid_value",
            ),
            (unknown_key, "colour", "unknown_field"),
            (
                unknown_nested_key,
                "definition.energy.tiers[0].discount",
                "unknown_field",
            ),
            (unknown_zone, "definition.time_zone", "unknown_time_zone"),
            (no_name, "name", "missing_field"),
        ];
        for (body, field, code) in cases {
            let answer = post(addr, "/api/tariffs", &body).await;
            assert_field_error(&answer, field, code);
            let id = body["id"].as_str().unwrap();
            let (status, _) = get(addr, &format!("/api/tariffs/{id}")).await;
            assert_eq!(status, 404, "{id} was stored despite {field}");
        }
        for bad_id in ["", "has space", "slash/no", &"x".repeat(65)] {
            let mut body = flat_gbp();
            body["id"] = json!(bad_id);
            assert_field_error(&post(addr, "/api/tariffs", &body).await, "id", "bad_id");
        }
        let (status, answer) = http(
            addr,
            "POST",
            "/api/tariffs",
            "{\"id\": \"flat-gbp\",\n \"name\": }",
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        let message = answer["error"]["message"].as_str().unwrap();
        assert!(message.contains("line 2 column"), "{answer}");
        assert!(message.contains("malformed JSON"), "{answer}");

        let (status, list) = get(addr, "/api/tariffs").await;
        assert_eq!((status, &list), (200, &json!({"tariffs": []})));
    });
}

/// An account on `flat-gbp` with a budget.
fn alice() -> Value {
    json!({"id": "alice", "name": "Alice", "tariff": "flat-gbp", "monthly_budget": "120.00"})
}

#[test]
fn accounts_are_created_read_replaced_and_listed_in_pages() {
    with_system(Some(fresh_data_dir("accounts")), |addr| async move {
        assert_eq!(post(addr, "/api/tariffs", &flat_gbp()).await.0, 201);
        assert_eq!(post(addr, "/api/tariffs", &tiered_eur()).await.0, 201);

        let (status, created) = post(addr, "/api/users", &alice()).await;
        assert_eq!(status, 201, "{created}");
        assert_eq!(
            created,
            json!({"id": "alice", "name": "Alice", "tariff": "flat-gbp",
                   "monthly_budget": "120", "currency": "GBP"})
        );
        let (status, view) = get(addr, "/api/users/alice").await;
        assert_eq!(status, 200, "{view}");
        assert_eq!(
            view,
            json!({"id": "alice", "account": created, "usage": null, "meters": []})
        );
        // The meters she owns are listed with her, in id order, and nobody else's.
        for (meter, owner) in [("m-b", "alice"), ("m-a", "alice"), ("m-c", "bob")] {
            let (status, body) = put(
                addr,
                &format!("/api/meters/{meter}"),
                &json!({"owner": owner}),
            )
            .await;
            assert_eq!(status, 200, "{body}");
        }
        let (status, view) = get(addr, "/api/users/alice").await;
        assert_eq!(
            (status, &view["meters"]),
            (200, &json!(["m-a", "m-b"])),
            "{view}"
        );

        // A retry is harmless; a different account under the id is a conflict.
        let (status, _) = post(addr, "/api/users", &alice()).await;
        assert_eq!(status, 200);
        let mut renamed = alice();
        renamed["name"] = json!("Alice B.");
        let (status, conflict) = post(addr, "/api/users", &renamed).await;
        assert_eq!(status, 409, "{conflict}");
        assert_eq!(
            get(addr, "/api/users/alice").await.1["account"]["name"],
            "Alice"
        );

        // PUT replaces (moving Alice to the euro tariff, budget in euros).
        let replacement = json!({"id": "alice", "name": "Alice B.", "tariff": "tiered-eur",
                                 "monthly_budget": "99.50", "currency": "EUR"});
        let (status, replaced) = put(addr, "/api/users/alice", &replacement).await;
        assert_eq!(status, 200, "{replaced}");
        assert_eq!(replaced["currency"], "EUR");
        let (_, view) = get(addr, "/api/users/alice").await;
        assert_eq!(view["account"]["tariff"], "tiered-eur");
        assert_eq!(view["account"]["monthly_budget"], "99.5");
        assert_eq!(view["account"]["name"], "Alice B.");
        // PUT creates too; the body's id must be the path's.
        let (status, bob) = put(addr, "/api/users/bob", &json!({"id": "bob", "name": "Bob"})).await;
        assert_eq!(status, 201, "{bob}");
        assert_eq!(
            bob,
            json!({"id": "bob", "name": "Bob", "tariff": null, "monthly_budget": null, "currency": null})
        );
        assert_field_error(
            &put(
                addr,
                "/api/users/bob",
                &json!({"id": "carol", "name": "Carol"}),
            )
            .await,
            "id",
            "id_mismatch",
        );
        assert_eq!(get(addr, "/api/users/carol").await.0, 404);
        assert_eq!(
            post(addr, "/api/users", &json!({"id": "carol", "name": "Carol"}))
                .await
                .0,
            201
        );

        // Pages in id order.
        let (status, first) = get(addr, "/api/users?limit=2").await;
        assert_eq!(status, 200, "{first}");
        let ids = |page: &Value| -> Vec<String> {
            page["users"]
                .as_array()
                .unwrap()
                .iter()
                .map(|user| user["id"].as_str().unwrap().to_owned())
                .collect()
        };
        assert_eq!(ids(&first), ["alice", "bob"]);
        assert_eq!(
            (&first["next"], &first["total"]),
            (&json!("bob"), &json!(3))
        );
        let (_, second) = get(addr, "/api/users?limit=2&after=bob").await;
        assert_eq!(ids(&second), ["carol"]);
        assert!(second.get("next").is_none(), "{second}");
        assert_field_error_plain(&get(addr, "/api/users?limit=0").await, "limit");
        assert_field_error_plain(&get(addr, "/api/users?after=bad%20id").await, "after");
        let (status, _) = get(addr, "/api/users?colour=blue").await;
        assert_eq!(status, 400);

        let (status, missing) = get(addr, "/api/users/nobody").await;
        assert_eq!(status, 404, "{missing}");
    });
}

/// Asserts a 400 naming `field` (a parameter error without a rule code).
fn assert_field_error_plain(answer: &(u16, Value), field: &str) {
    assert_eq!(answer.0, 400, "{}", answer.1);
    assert_eq!(answer.1["error"]["field"], field, "{}", answer.1);
}

#[test]
fn invalid_accounts_are_refused_naming_the_field_and_nothing_is_stored() {
    with_system(Some(fresh_data_dir("bad-accounts")), |addr| async move {
        assert_eq!(post(addr, "/api/tariffs", &flat_gbp()).await.0, 201);
        let with = |key: &str, value: Value| {
            let mut account = alice();
            account[key] = value;
            account
        };
        let mut without_name = alice();
        without_name.as_object_mut().unwrap().remove("name");
        let cases = [
            (
                with("tariff", json!("no-such-tariff")),
                "tariff",
                "unknown_tariff",
            ),
            (with("tariff", json!("bad tariff")), "tariff", "bad_id"),
            (
                with("currency", json!("EUR")),
                "currency",
                "currency_mismatch",
            ),
            (
                with("monthly_budget", json!("-10.00")),
                "monthly_budget",
                "budget_not_positive",
            ),
            (
                with("monthly_budget", json!("0")),
                "monthly_budget",
                "budget_not_positive",
            ),
            (
                with("monthly_budget", json!(120.5)),
                "monthly_budget",
                "invalid_value",
            ),
            (
                with("monthly_budget", json!("12.345")),
                "monthly_budget",
                "too_precise",
            ),
            (
                with("monthly_budget", json!("twelve")),
                "monthly_budget",
                "invalid_value",
            ),
            (with("name", json!("")), "name", "empty_name"),
            (with("nickname", json!("Al")), "nickname", "unknown_field"),
            (with("id", json!("bad id")), "id", "invalid_value"),
            (without_name, "name", "missing_field"),
        ];
        for (body, field, code) in cases {
            assert_field_error(&post(addr, "/api/users", &body).await, field, code);
            assert_eq!(
                get(addr, "/api/users/alice").await.0,
                404,
                "stored despite {field}"
            );
        }
        // A budget needs a currency (from the tariff or given).
        assert_field_error(
            &post(
                addr,
                "/api/users",
                &json!({"id": "bob", "name": "Bob", "monthly_budget": "10"}),
            )
            .await,
            "currency",
            "currency_required",
        );
        assert_field_error(
            &post(
                addr,
                "/api/users",
                &json!({"id": "bob", "name": "Bob", "currency": "XYZ"}),
            )
            .await,
            "currency",
            "unknown_currency",
        );
        let (status, answer) = http(
            addr,
            "POST",
            "/api/users",
            "{\"id\": \"bob\", \"name\": \"Bob\"",
        )
        .await;
        assert_eq!(status, 400, "{answer}");
        assert!(
            answer["error"]["message"]
                .as_str()
                .unwrap()
                .contains("line 1 column"),
            "{answer}"
        );
        let (status, list) = get(addr, "/api/users").await;
        assert_eq!(
            (status, &list["users"], &list["total"]),
            (200, &json!([]), &json!(0))
        );
    });
}

#[test]
fn budgets_are_read_and_replaced_and_bad_amounts_change_nothing() {
    with_system(Some(fresh_data_dir("budgets")), |addr| async move {
        assert_eq!(post(addr, "/api/tariffs", &flat_gbp()).await.0, 201);
        assert_eq!(post(addr, "/api/users", &alice()).await.0, 201);
        let (status, budget) = get(addr, "/api/users/alice/budget").await;
        assert_eq!(status, 200, "{budget}");
        assert_eq!(
            budget,
            json!({"user": "alice", "monthly_budget": "120", "currency": "GBP"})
        );

        let (status, budget) = put(
            addr,
            "/api/users/alice/budget",
            &json!({"monthly_budget": "150.00"}),
        )
        .await;
        assert_eq!(status, 200, "{budget}");
        assert_eq!(budget["monthly_budget"], "150");
        assert_eq!(
            get(addr, "/api/users/alice").await.1["account"]["monthly_budget"],
            "150"
        );

        for (body, code) in [
            (json!({"monthly_budget": "-1.00"}), "budget_not_positive"),
            (json!({"monthly_budget": "0.00"}), "budget_not_positive"),
            (json!({"monthly_budget": 150.5}), "invalid_value"),
            (json!({"monthly_budget": "1.005"}), "too_precise"),
            (json!({}), "missing_field"),
        ] {
            assert_field_error(
                &put(addr, "/api/users/alice/budget", &body).await,
                "monthly_budget",
                code,
            );
            assert_eq!(
                get(addr, "/api/users/alice/budget").await.1["monthly_budget"],
                "150"
            );
        }
        assert_field_error(
            &put(
                addr,
                "/api/users/alice/budget",
                &json!({"monthly_budget": "1", "extra": 1}),
            )
            .await,
            "extra",
            "unknown_field",
        );

        // null clears the budget.
        let (status, cleared) = put(
            addr,
            "/api/users/alice/budget",
            &json!({"monthly_budget": null}),
        )
        .await;
        assert_eq!(
            (status, &cleared["monthly_budget"]),
            (200, &Value::Null),
            "{cleared}"
        );
        assert_eq!(
            get(addr, "/api/users/alice").await.1["account"]["monthly_budget"],
            Value::Null
        );

        assert_eq!(get(addr, "/api/users/nobody/budget").await.0, 404);
        assert_eq!(
            put(
                addr,
                "/api/users/nobody/budget",
                &json!({"monthly_budget": "5"})
            )
            .await
            .0,
            404
        );
    });
}

#[test]
fn a_user_view_joins_the_account_and_the_live_usage() {
    with_system(Some(fresh_data_dir("usage")), |addr| async move {
        let now_ms = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap()
            .as_millis() as i64;
        let minute = now_ms - now_ms.rem_euclid(60_000) - 180_000;
        let (status, answer) =
            put(addr, "/api/meters/usage-meter-1", &json!({"owner": "dave"})).await;
        assert_eq!(status, 200, "{answer}");
        // Two readings in one minute, then one in the next closes the first minute.
        let readings: Vec<Value> = [(0, 1000.0), (30_000, 1010.0), (60_000, 1025.0)]
            .iter()
            .map(|(offset, energy_wh)| {
                json!({"meter": "usage-meter-1", "ts_ms": minute + offset, "voltage": 230.0,
                       "current": 1.0, "power_w": 230.0, "energy_wh": energy_wh})
            })
            .collect();
        let (status, answer) = post(addr, "/api/readings", &json!(readings)).await;
        assert_eq!(status, 202, "{answer}");

        let deadline = Instant::now() + Duration::from_secs(10);
        let usage = loop {
            let (status, usage) = get(addr, "/api/users/dave/usage").await;
            if status == 200 && usage["n_deltas"] == 1 {
                break usage;
            }
            assert!(
                Instant::now() < deadline,
                "dave's usage never arrived: {status} {usage}"
            );
            tokio::time::sleep(Duration::from_millis(20)).await;
        };
        assert_eq!(usage["energy_total_wh"], 10.0);
        // No account yet: the view has the usage alone.
        let (status, view) = get(addr, "/api/users/dave").await;
        assert_eq!(status, 200, "{view}");
        assert_eq!((&view["account"], &view["usage"]), (&Value::Null, &usage));
        assert_eq!(
            post(addr, "/api/users", &json!({"id": "dave", "name": "Dave"}))
                .await
                .0,
            201
        );
        let (_, view) = get(addr, "/api/users/dave").await;
        assert_eq!(view["account"]["name"], "Dave");
        assert_eq!(view["usage"]["energy_total_wh"], 10.0);
    });
}

#[test]
fn tariffs_and_accounts_survive_a_restart_on_the_same_data_directory() {
    let data_dir = fresh_data_dir("restart");
    let (sender, receiver) = std::sync::mpsc::channel::<(Value, Value)>();
    with_system(Some(data_dir.clone()), move |addr| async move {
        let (status, tariff) = post(addr, "/api/tariffs", &time_of_use_gbp()).await;
        assert_eq!(status, 201, "{tariff}");
        let mut erin = alice();
        erin["id"] = json!("erin");
        erin["tariff"] = json!("tou-gbp");
        assert_eq!(post(addr, "/api/users", &erin).await.0, 201);
        let (status, _) = put(
            addr,
            "/api/users/erin/budget",
            &json!({"monthly_budget": "75.25"}),
        )
        .await;
        assert_eq!(status, 200);
        let (_, account) = get(addr, "/api/users/erin").await;
        sender.send((tariff, account["account"].clone())).unwrap();
    });
    let (tariff, account) = receiver.recv().unwrap();
    assert_eq!(account["monthly_budget"], "75.25");
    with_system(Some(data_dir.clone()), move |addr| async move {
        let (status, read) = get(addr, "/api/tariffs/tou-gbp").await;
        assert_eq!((status, &read), (200, &tariff));
        let (status, view) = get(addr, "/api/users/erin").await;
        assert_eq!((status, &view["account"]), (200, &account), "{view}");
        let (_, list) = get(addr, "/api/tariffs").await;
        assert_eq!(list["tariffs"], json!([tariff]));
        // Still immutable after the restart.
        let mut changed = time_of_use_gbp();
        changed["name"] = json!("Renamed");
        assert_eq!(post(addr, "/api/tariffs", &changed).await.0, 409);
    });
    let _ = std::fs::remove_dir_all(&data_dir);
}

#[test]
fn without_a_store_accounts_and_tariffs_answer_503_naming_why() {
    with_system(None, |addr| async move {
        for (method, path, body) in [
            ("POST", "/api/tariffs", flat_gbp().to_string()),
            ("GET", "/api/tariffs", String::new()),
            ("POST", "/api/users", alice().to_string()),
            ("GET", "/api/users/alice/budget", String::new()),
        ] {
            let (status, answer) = http(addr, method, path, &body).await;
            assert_eq!(status, 503, "{method} {path}: {answer}");
            assert!(
                answer["error"]["message"]
                    .as_str()
                    .unwrap()
                    .contains("--in-memory"),
                "{answer}"
            );
        }
        // Bad input is still a 400, before the store is needed.
        let (status, _) = http(addr, "POST", "/api/tariffs", "{").await;
        assert_eq!(status, 400);
        assert_eq!(get(addr, "/api/users/alice").await.0, 404);
    });
}

#[test]
fn meters_are_registered_with_a_tariff_and_prepaid_and_bad_registrations_change_nothing() {
    with_system(Some(fresh_data_dir("meter-billing")), |addr| async move {
        assert_eq!(post(addr, "/api/tariffs", &flat_gbp()).await.0, 201);
        let registration = json!({"owner": "alice", "tariff": "flat-gbp", "prepaid": true});
        let (status, config) = put(addr, "/api/meters/m-1", &registration).await;
        assert_eq!(status, 200, "{config}");
        assert_eq!(
            (&config["owner"], &config["tariff"], &config["prepaid"]),
            (&json!("alice"), &json!("flat-gbp"), &json!(true)),
            "{config}"
        );
        // Refused, and the registration stays as it was.
        let unknown = put(
            addr,
            "/api/meters/m-1",
            &json!({"owner": "bob", "tariff": "no-such-tariff"}),
        )
        .await;
        assert_eq!(unknown.0, 400, "{}", unknown.1);
        assert_eq!(unknown.1["error"]["field"], "tariff", "{}", unknown.1);
        let prepaid = put(
            addr,
            "/api/meters/m-1",
            &json!({"owner": "bob", "prepaid": true}),
        )
        .await;
        assert_eq!(prepaid.0, 400, "{}", prepaid.1);
        assert_eq!(prepaid.1["error"]["field"], "prepaid", "{}", prepaid.1);
        // A replacement without the billing fields clears them (PUT replaces).
        let (status, config) = put(addr, "/api/meters/m-1", &json!({"owner": "alice"})).await;
        assert_eq!(status, 200, "{config}");
        assert_eq!(config["tariff"], Value::Null, "{config}");
        assert_eq!(config["prepaid"], false, "{config}");
        // Back to prepaid.
        let (status, config) = put(addr, "/api/meters/m-1", &registration).await;
        assert_eq!(
            (status, &config["owner"]),
            (200, &json!("alice")),
            "{config}"
        );
        // Thresholds in the same registration; inconsistent ones name the field.
        let with_thresholds = json!({"owner": "alice", "thresholds": {"over_voltage_v": 250.0}});
        let (status, config) = put(addr, "/api/meters/m-1", &with_thresholds).await;
        assert_eq!(status, 200, "{config}");
        assert_eq!(config["thresholds"]["over_voltage_v"], 250.0, "{config}");
        let bad = json!({"owner": "alice", "thresholds": {"over_voltage_v": 100.0, "under_voltage_v": 200.0}});
        let (status, body) = put(addr, "/api/meters/m-1", &bad).await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("thresholds")),
            "{body}"
        );

        // POST /api/meters registers a new one: 201, the same again 200, different 409.
        let new_meter = json!({"id": "m-2", "owner": "bob", "tariff": "flat-gbp"});
        let (status, config) = post(addr, "/api/meters", &new_meter).await;
        assert_eq!((status, &config["owner"]), (201, &json!("bob")), "{config}");
        assert_eq!(post(addr, "/api/meters", &new_meter).await.0, 200);
        let (status, body) =
            post(addr, "/api/meters", &json!({"id": "m-2", "owner": "carol"})).await;
        assert_eq!(status, 409, "{body}");
        let (status, body) = post(addr, "/api/meters", &json!({"id": "m 3"})).await;
        assert_eq!(
            (status, &body["error"]["field"]),
            (400, &json!("id")),
            "{body}"
        );
        let (status, body) =
            post(addr, "/api/meters", &json!({"id": "m-4", "colour": "red"})).await;
        assert_eq!(status, 400, "unknown field: {body}");
    });
}
