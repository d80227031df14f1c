//! Usage history from the stream jobs' rollups: `GET /api/meters/{id}/usage` and, with
//! a `granularity`, `GET /api/users/{id}/usage` (without one that route answers the
//! user's live usage from the user actor).
//!
//! Rollups are upserted by the stream job (a window recomputed after late data
//! replaces its row, with a higher `revision`), so a page always shows the latest
//! figures of each window.

use actix_web::{HttpResponse, get, web};
use std::collections::BTreeMap;

use gridpulse_domain::{Granularity, LocalDate, MeterId, MeterRollup, Tariff, UserId, UserRollup};
use gridpulse_store::{MeterRollupQuery, RollupQuery, UserRollupQuery};
use serde::Deserialize;

use super::meters::{parse_limit, parse_time};
use super::parse_meter;
use crate::error::ApiError;
use crate::state::AppState;

/// Query of the usage routes.
#[derive(Debug, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct UsageQuery {
    /// `hour`, `day` or `month`.
    pub granularity: Option<String>,
    /// Windows starting at or after, Unix ms (default: a span back from `to`).
    pub from: Option<String>,
    /// Windows starting before, Unix ms (default: now).
    pub to: Option<String>,
    /// Page size, 1–10,000 (default 1,000).
    pub limit: Option<String>,
    /// `next_cursor` of the previous page.
    pub cursor: Option<String>,
}

fn granularity(text: Option<&str>) -> Result<Granularity, ApiError> {
    match text {
        None => Ok(Granularity::Hour),
        Some(text) => Granularity::parse(text).ok_or_else(|| {
            ApiError::bad_field(
                "granularity",
                format!("`{text}` is not one of hour, day, month"),
            )
        }),
    }
}

/// The default span back from `to`: a day of hours, 31 days, a year of months.
fn default_span_ms(granularity: Granularity) -> i64 {
    match granularity {
        Granularity::Hour => 86_400_000,
        Granularity::Day => 31 * 86_400_000,
        Granularity::Month => 366 * 86_400_000,
    }
}

/// Builds the store query of a usage request; 400 naming the parameter.
pub fn rollup_query<S>(
    state: &AppState,
    subject: S,
    query: &UsageQuery,
) -> Result<RollupQuery<S>, ApiError> {
    let granularity = granularity(query.granularity.as_deref())?;
    let to_ms = match query.to.as_deref() {
        Some(text) => parse_time("to", text)?,
        None => state.clock.now_ms() + 1,
    };
    let from_ms = match query.from.as_deref() {
        Some(text) => parse_time("from", text)?,
        None => to_ms - default_span_ms(granularity),
    };
    if to_ms <= from_ms {
        return Err(ApiError::bad_field("to", "must be after `from`"));
    }
    Ok(RollupQuery {
        subject,
        granularity,
        from_ms,
        to_ms,
        limit: parse_limit(query.limit.as_deref(), 1000, 10_000)?,
        cursor: query.cursor.clone(),
    })
}

fn store(state: &AppState) -> Result<&std::sync::Arc<dyn gridpulse_store::Store>, ApiError> {
    state.store.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "usage history needs persistence (the rollups are stored): run without --in-memory"
                .into(),
        )
    })
}

/// Every stored hourly rollup of `meter` with `window_start_ms` in `[from_ms, to_ms)`.
async fn hour_rows(
    store: &dyn gridpulse_store::Store,
    meter: MeterId,
    from_ms: i64,
    to_ms: i64,
) -> Result<Vec<MeterRollup>, ApiError> {
    let mut rows = Vec::new();
    let mut cursor = None;
    loop {
        let page = store
            .read_meter_rollups(&RollupQuery {
                subject: meter,
                granularity: Granularity::Hour,
                from_ms,
                to_ms,
                limit: 10_000,
                cursor,
            })
            .await?;
        rows.extend(page.rollups);
        match page.next_cursor {
            Some(next) if rows.len() < 1_000_000 => cursor = Some(next),
            _ => return Ok(rows),
        }
    }
}

const HOUR_MS: i64 = 3_600_000;
const DAY_MS: i64 = 86_400_000;

/// Days since 1970-01-01 of a civil date (proleptic Gregorian, H. Hinnant's algorithm).
fn days_from_civil(year: i64, month: i64, day: i64) -> i64 {
    let year = if month <= 2 { year - 1 } else { year };
    let era = year.div_euclid(400);
    let yoe = year - era * 400;
    let mp = (month + 9) % 12;
    let doy = (153 * mp + 2) / 5 + day - 1;
    let doe = yoe * 365 + yoe / 4 - yoe / 100 + doy;
    era * 146_097 + doe - 719_468
}

/// (year, month) of a day since 1970-01-01.
fn civil_month(days: i64) -> (i64, i64) {
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z - era * 146_097;
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    (year, month)
}

/// The window of `granularity` containing `ts_ms`: `[start, end)`. Days and months are
/// local to `zone` (a tariff's time zone; UTC without one): a DST day is 23 or 25 hours.
/// An hour is placed by its start, so in a zone whose offset is not whole hours the
/// hour that holds local midnight counts to the earlier day.
fn window_of(zone: Option<&Tariff>, granularity: Granularity, ts_ms: i64) -> (i64, i64) {
    let utc = || match granularity {
        Granularity::Hour => {
            let start = ts_ms - ts_ms.rem_euclid(HOUR_MS);
            (start, start + HOUR_MS)
        }
        Granularity::Day => {
            let start = ts_ms - ts_ms.rem_euclid(DAY_MS);
            (start, start + DAY_MS)
        }
        Granularity::Month => {
            let (year, month) = civil_month(ts_ms.div_euclid(DAY_MS));
            let start = days_from_civil(year, month, 1) * DAY_MS;
            let (next_year, next_month) = if month == 12 {
                (year + 1, 1)
            } else {
                (year, month + 1)
            };
            (start, days_from_civil(next_year, next_month, 1) * DAY_MS)
        }
    };
    let Some(tariff) = zone else {
        return utc();
    };
    let local = || -> Option<(i64, i64)> {
        let date = tariff.local_date(ts_ms).ok()?;
        let (first, next) = match granularity {
            Granularity::Hour => return None,
            Granularity::Day => (date, date.plus_days(1)?),
            Granularity::Month => {
                let first = LocalDate::new(date.year(), date.month(), 1)?;
                let next = if date.month() == 12 {
                    LocalDate::new(date.year() + 1, 1, 1)?
                } else {
                    LocalDate::new(date.year(), date.month() + 1, 1)?
                };
                (first, next)
            }
        };
        Some((
            tariff.start_of_local_day(first).ok()?,
            tariff.start_of_local_day(next).ok()?,
        ))
    };
    local().unwrap_or_else(utc)
}

/// The tariff whose time zone a meter's days and months follow: its own, else its
/// owner's; `None` (UTC) without either.
async fn meter_zone(state: &AppState, meter: MeterId) -> Result<Option<Tariff>, ApiError> {
    let config = state.meters.meter_config(meter).await?;
    let book = super::account_book(state)?;
    let id = match (config.tariff, config.owner) {
        (Some(id), _) => Some(id),
        (None, Some(owner)) => book
            .account(owner)
            .await?
            .and_then(|account| account.tariff),
        (None, None) => None,
    };
    Ok(match id {
        Some(id) => book
            .tariff(&id)
            .await?
            .and_then(|document| document.validate().ok()),
        None => None,
    })
}

/// Sums hourly rollups (sorted by window) into windows of `granularity` (UTC days and
/// months): readings and energy add up, power and voltage extremes carry over, mean
/// power is weighted by readings, and completeness counts every hour of the window
/// (an hour without a row expected readings too).
fn aggregate(
    zone: Option<&Tariff>,
    meter: MeterId,
    granularity: Granularity,
    hours: &[MeterRollup],
) -> Vec<MeterRollup> {
    if granularity == Granularity::Hour {
        return hours.to_vec();
    }
    let mut out: Vec<MeterRollup> = Vec::new();
    for hour in hours {
        let (start, end) = window_of(zone, granularity, hour.window_start_ms);
        let per_hour = hour.expected_readings;
        match out.last_mut() {
            Some(window) if window.window_start_ms == start => {
                let readings = window.readings + hour.readings;
                if readings > 0 {
                    window.power_avg_w = (window.power_avg_w * window.readings as f64
                        + hour.power_avg_w * hour.readings as f64)
                        / readings as f64;
                }
                window.readings = readings;
                window.energy_wh += hour.energy_wh;
                window.power_min_w = window.power_min_w.min(hour.power_min_w);
                window.power_max_w = window.power_max_w.max(hour.power_max_w);
                window.voltage_min = window.voltage_min.min(hour.voltage_min);
                window.voltage_max = window.voltage_max.max(hour.voltage_max);
                window.revision = window.revision.max(hour.revision);
            }
            _ => out.push(MeterRollup {
                meter,
                granularity,
                window_start_ms: start,
                window_end_ms: end,
                expected_readings: per_hour * ((end - start) / HOUR_MS) as u64,
                ..hour.clone()
            }),
        }
    }
    for window in &mut out {
        window.completeness_pct = if window.expected_readings == 0 {
            0.0
        } else {
            (window.readings as f64 * 100.0 / window.expected_readings as f64).min(100.0)
        };
    }
    out
}

/// One page of windows from `query.start_ms()` (the cursor) on; `next_cursor` is the
/// start of the first window left out.
fn page<R: Clone>(
    windows: &[R],
    start_of: impl Fn(&R) -> i64,
    query_start: i64,
    limit: usize,
) -> (Vec<R>, Option<String>) {
    let mut rows: Vec<R> = windows
        .iter()
        .filter(|w| start_of(w) >= query_start)
        .cloned()
        .collect();
    let next = (rows.len() > limit).then(|| start_of(&rows[limit]).to_string());
    rows.truncate(limit);
    (rows, next)
}

/// `GET /api/meters/{id}/usage?granularity=hour|day|month&from=&to=&limit=&cursor=`:
/// the meter's rollups (readings, energy, min/avg/max power, min/max voltage,
/// completeness), oldest window first, paged with `next_cursor`. Hours come from the
/// rollup job; days and months (UTC) are their sums. A window with no readings has no
/// row.
#[utoipa::path(
    get,
    path = "/api/meters/{id}/usage",
    tag = "usage",
    params(
        ("id" = String, Path, description = "Meter id"),
        ("granularity" = Option<String>, Query, description = "hour, day or month"),
        ("from" = Option<i64>, Query, description = "Start, Unix ms (inclusive)"),
        ("to" = Option<i64>, Query, description = "End, Unix ms (exclusive)"),
        ("limit" = Option<u32>, Query, description = "Page size"),
        ("cursor" = Option<String>, Query, description = "Cursor: the `next_cursor` of the previous page"),
    ),
    responses(
        (status = 200, description = "OK", body = crate::openapi::Json),
        (status = 400, description = "A parameter or body field is invalid (`error.field` names it)", body = crate::openapi::ErrorResponse),
        (status = 401, description = "No valid token (`error.code` says why)", body = crate::openapi::ErrorResponse),
        (status = 403, description = "The caller's role may not do this", body = crate::openapi::ErrorResponse),
        (status = 404, description = "Not found (or not the consumer's own)", body = crate::openapi::ErrorResponse),
        (status = 429, description = "Rate limit exceeded (see `Retry-After`)", body = crate::openapi::ErrorResponse),
        (status = 503, description = "Unavailable: no store (`--in-memory`), shutting down or overloaded", body = crate::openapi::ErrorResponse),
    ),
)]
#[get("/api/meters/{id}/usage")]
pub async fn get_meter_usage(
    state: web::Data<AppState>,
    id: web::Path<String>,
    query: web::Query<UsageQuery>,
) -> Result<HttpResponse, ApiError> {
    let meter: MeterId = parse_meter("id", &id)?;
    let query: MeterRollupQuery = rollup_query(&state, meter, &query)?;
    let store = store(&state)?;
    let start = query.start_ms()?;
    let (rollups, next_cursor) = if query.granularity == Granularity::Hour {
        let page = store.read_meter_rollups(&query).await?;
        (page.rollups, page.next_cursor)
    } else {
        let zone = meter_zone(&state, meter).await?;
        let zone = zone.as_ref();
        let (from, _) = window_of(zone, query.granularity, query.from_ms);
        let hours = hour_rows(
            store.as_ref(),
            meter,
            from,
            window_of(zone, query.granularity, query.to_ms - 1).1,
        )
        .await?;
        let windows: Vec<MeterRollup> = aggregate(zone, meter, query.granularity, &hours)
            .into_iter()
            .filter(|w| {
                w.window_start_ms >= query.from_ms - (query.from_ms - from)
                    && w.window_start_ms < query.to_ms
            })
            .collect();
        page(
            &windows,
            |w| w.window_start_ms,
            if query.cursor.is_some() { start } else { from },
            query.limit,
        )
    };
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "meter": meter,
        "granularity": query.granularity,
        "rollups": rollups,
        "next_cursor": next_cursor,
    })))
}

/// The energy cost of the hours in `[from_ms, to_ms)` by `tariff`: the billing
/// period's energy cost up to `to_ms` minus that up to `from_ms` (so tiers count the
/// energy used earlier in the period), each hour priced at its middle (time-of-use
/// bands on half hours are approximated by the band at :30).
fn window_cost(
    tariff: &gridpulse_domain::Tariff,
    hours: &[(i64, f64)],
    from_ms: i64,
    to_ms: i64,
) -> Option<gridpulse_domain::Amount> {
    let period = tariff.billing_period_containing(from_ms).ok()?;
    let energy_cost = |until: i64| -> Option<i128> {
        let mut accumulator = gridpulse_domain::BillAccumulator::new(tariff, period);
        for (start, wh) in hours {
            if *start >= period.start_utc_ms && *start < until && *start < period.end_utc_ms {
                accumulator
                    .add_meter_energy(tariff, start + HOUR_MS / 2, *wh)
                    .ok()?;
            }
        }
        let bill = accumulator.bill_for_whole_period(tariff).ok()?;
        Some(bill.total.minor_units() - bill.standing_charge.cost.minor_units())
    };
    let minor = energy_cost(to_ms.min(period.end_utc_ms))? - energy_cost(from_ms)?;
    gridpulse_domain::Money::from_minor_units(minor, tariff.currency())
        .to_amount()
        .ok()
}

/// The user rollups of `GET /api/users/{id}/usage?granularity=...`: the hourly rollups
/// of the user's meters summed per window, each window priced by the account's tariff
/// (energy only; the standing charge is per day on the bill).
pub async fn user_usage(
    state: &AppState,
    user: UserId,
    query: &UsageQuery,
) -> Result<HttpResponse, ApiError> {
    let query: UserRollupQuery = rollup_query(state, user, query)?;
    let store = store(state)?;
    let start = query.start_ms()?;
    let users = state.users.as_ref().ok_or_else(|| {
        ApiError::Unavailable("this API replica hosts no user actors: ask a processor".into())
    })?;
    let meters: Vec<MeterId> = match users.observe(user).await {
        Ok(snapshot) => snapshot.meters.keys().copied().collect(),
        Err(gridpulse_actors::SystemError::UserNotFound) => Vec::new(),
        Err(error) => return Err(error.into()),
    };
    let tariff = match super::account_book(state)?.account(user).await? {
        Some(account) => match account.tariff {
            Some(id) => super::account_book(state)?
                .tariff(&id)
                .await?
                .and_then(|document| document.validate().ok()),
            None => None,
        },
        None => None,
    };
    let zone = tariff.as_ref();
    let (from, _) = window_of(zone, query.granularity, query.from_ms);
    let (_, to) = window_of(zone, query.granularity, query.to_ms - 1);
    // Tiers need the energy since the billing period began.
    let read_from = tariff
        .as_ref()
        .and_then(|tariff| tariff.billing_period_containing(from).ok())
        .map_or(from, |period| period.start_utc_ms.min(from));
    let mut by_hour: BTreeMap<i64, (u64, f64, std::collections::BTreeSet<MeterId>, u32)> =
        BTreeMap::new();
    for meter in &meters {
        for row in hour_rows(store.as_ref(), *meter, read_from, to).await? {
            let entry = by_hour.entry(row.window_start_ms).or_default();
            entry.0 += row.readings;
            entry.1 += row.energy_wh;
            entry.2.insert(*meter);
            entry.3 = entry.3.max(row.revision);
        }
    }
    let hours: Vec<(i64, f64)> = by_hour
        .iter()
        .map(|(start, (_, wh, _, _))| (*start, *wh))
        .collect();
    let mut windows: Vec<UserRollup> = Vec::new();
    let mut window_meters: Vec<std::collections::BTreeSet<MeterId>> = Vec::new();
    for (hour, (readings, wh, meters, revision)) in by_hour.range(from..to) {
        let (start, end) = window_of(zone, query.granularity, *hour);
        match windows.last_mut() {
            Some(window) if window.window_start_ms == start => {
                window.readings += readings;
                window.energy_wh += wh;
                window.revision = window.revision.max(*revision);
                if let Some(set) = window_meters.last_mut() {
                    set.extend(meters.iter().copied());
                }
            }
            _ => {
                windows.push(UserRollup {
                    user,
                    granularity: query.granularity,
                    window_start_ms: start,
                    window_end_ms: end,
                    meters: 0,
                    readings: *readings,
                    energy_wh: *wh,
                    cost: None,
                    currency: None,
                    revision: *revision,
                });
                window_meters.push(meters.clone());
            }
        }
    }
    for (window, meters) in windows.iter_mut().zip(&window_meters) {
        window.meters = meters.len() as u32;
        if let Some(tariff) = &tariff {
            window.cost = window_cost(tariff, &hours, window.window_start_ms, window.window_end_ms);
            window.currency = Some(tariff.currency().code().to_owned());
        }
    }
    let windows: Vec<UserRollup> = windows
        .into_iter()
        .filter(|w| w.window_start_ms < query.to_ms)
        .collect();
    let (rollups, next_cursor) = page(
        &windows,
        |w| w.window_start_ms,
        if query.cursor.is_some() { start } else { from },
        query.limit,
    );
    Ok(HttpResponse::Ok().json(serde_json::json!({
        "user": user,
        "granularity": query.granularity,
        "rollups": rollups,
        "next_cursor": next_cursor,
    })))
}
