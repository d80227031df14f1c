// The dashboard in headless Chromium against a running `gridpulse run --simulate`.
// Driven by api/tests/dashboard_browser.rs, which starts the server and passes:
//   BASE_URL, OPS_TOKEN, SERVICE_TOKEN, CONSUMER_TOKEN, OWN_METER, OTHER_METER, SHOTS_DIR
// Prints one `step ...` line per check and `result key=value ...` at the end; exits 1
// with the reason on the first failed check.
import { chromium } from "playwright-core";

const env = (name) => {
  const value = process.env[name];
  if (!value) throw new Error(`${name} is not set`);
  return value;
};
const base = env("BASE_URL");
const shots = env("SHOTS_DIR");
const fail = (message) => { throw new Error(message); };
const step = (text) => console.log(`step ${text}`);

async function api(path, token, options = {}) {
  const response = await fetch(base + path, {
    ...options,
    headers: { Authorization: `Bearer ${token}`, "Content-Type": "application/json", ...(options.headers || {}) },
  });
  const text = await response.text();
  return { status: response.status, body: text ? JSON.parse(text) : null };
}

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
const errors = [];
try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 900 } });
  const page = await context.newPage();
  page.on("pageerror", (error) => errors.push(error.message));

  // Overview: the numbers change as the simulator's readings arrive.
  await page.goto(`${base}/?token=${env("OPS_TOKEN")}#overview`);
  await page.waitForFunction(() => document.getElementById("ov-live").textContent !== "–", null, { timeout: 10000 });
  const firstRate = await page.textContent("#ov-rate");
  const firstLive = await page.textContent("#ov-live");
  await page.waitForFunction((before) => {
    const rate = document.getElementById("ov-rate").textContent;
    return rate !== "–" && rate !== before;
  }, firstRate, { timeout: 15000 });
  step(`overview live=${firstLive} rate=${await page.textContent("#ov-rate")}`);
  await page.screenshot({ path: `${shots}/overview.png` });

  // A threshold-crossing reading appears in the feed within a few seconds.
  await page.click('nav a[data-view="alerts"]');
  await page.waitForFunction(() => document.getElementById("ws-status").textContent === "live", null, { timeout: 10000 });
  const meter = env("OWN_METER");
  const now = Date.now();
  const reading = (ts, voltage) => ({ meter, ts_ms: ts, voltage, current: 2, power_w: 440, energy_wh: 1000 });
  const posted = Date.now();
  const ingest = await api("/api/readings", env("SERVICE_TOKEN"), {
    method: "POST", body: JSON.stringify([reading(now - 1000, 262.5)]),
  });
  if (ingest.status !== 202) fail(`ingest answered ${ingest.status}: ${JSON.stringify(ingest.body)}`);
  const row = page.locator(`#alert-rows tr[data-id^="${meter}.over_voltage."]`);
  await row.first().waitFor({ timeout: 5000 });
  const appearMs = Date.now() - posted;
  const alertId = await row.first().getAttribute("data-id");
  step(`alert ${alertId} in the feed after ${appearMs} ms`);

  // Ack it from the page: the row's state changes, and the API agrees.
  await row.first().locator("button", { hasText: "ack" }).click();
  await page.waitForFunction((id) => {
    const tr = document.querySelector(`#alert-rows tr[data-id="${id}"]`);
    return tr && tr.children[4].textContent === "acknowledged";
  }, alertId, { timeout: 5000 });
  const stored = await api(`/api/alerts/${encodeURIComponent(alertId)}`, env("OPS_TOKEN"));
  // The alert's fields, flattened beside its history.
  if (stored.body?.state !== "acknowledged") fail(`API says ${JSON.stringify(stored.body?.state)}`);
  if (stored.body.acknowledged_by !== "dev-ops") fail(`acknowledged by ${stored.body.acknowledged_by}`);
  step("ack from the page: acknowledged in the page and in the API (by dev-ops)");
  // Feeder F1's three silent meters: one group row (not three), its members in the detail.
  const group = page.locator('#alert-rows tr[data-id^="feeder:F1.no_data_group."]');
  await group.first().waitFor({ timeout: 15000 });
  // Members that were shown before the group formed leave the feed once it stands.
  await page.waitForFunction(() => document.querySelectorAll('#alert-rows tr[data-id^="f1-"]').length === 0, null, { timeout: 5000 })
    .catch(() => fail("grouped member rows stay in the feed"));
  await group.first().click();
  const members = page.locator('#alert-detail [data-part="members"] a');
  await page.waitForFunction(() => document.querySelectorAll('#alert-detail [data-part="members"] a').length === 3, null, { timeout: 10000 });
  const memberIds = (await members.allTextContents()).sort().join(",");
  if (memberIds !== "f1-a,f1-b,f1-c") fail(`group members ${memberIds}`);
  step(`feeder F1: one group row, members ${memberIds}`);
  await page.screenshot({ path: `${shots}/alerts.png` });

  // A meter's chart gains points as readings arrive.
  await page.goto(`${base}/#meter/sim-000001`);
  const points = () => page.evaluate(() => {
    const entry = [...document.querySelectorAll("#md-title")].length && window.__chartPoints?.("md-power");
    return entry ?? -1;
  });
  await page.waitForFunction(() => window.__chartPoints && window.__chartPoints("md-power") > 0, null, { timeout: 10000 });
  const before = await points();
  await page.waitForFunction((n) => window.__chartPoints("md-power") > n, before, { timeout: 20000 });
  step(`meter chart grew from ${before} to ${await points()} points`);
  await page.screenshot({ path: `${shots}/meter.png` });

  // Users: the planned saving session, and a user's budget and prepaid credit.
  await page.goto(`${base}/#users`);
  const session = page.locator('#sessions tr[data-session="s-browser"]');
  await session.waitFor({ timeout: 10000 });
  const sessionText = await session.textContent();
  if (!sessionText.includes("Evening peak") || !sessionText.includes("upcoming")) fail(`session row: ${sessionText}`);
  await page.locator('#user-rows tr[data-user="u-alice"]').click();
  const credit = page.locator('#user-detail [data-part="credit"] tr[data-meter="m-alice"]');
  await credit.waitFor({ timeout: 10000 });
  const balance = (await credit.locator("td").nth(1).textContent()).trim();
  if (Number(balance) !== 20) fail(`m-alice credit shows ${balance}`);
  const budgetText = await page.textContent('#user-detail [data-part="budget"]');
  if (!/Budget:\s+(50\b|[0-9.]+ % of 50\b)/.test(budgetText)) fail(`budget shows ${budgetText}`);
  step(`users: session "Evening peak" upcoming; u-alice credit ${balance}, budget "${budgetText.trim()}"`);
  await page.screenshot({ path: `${shots}/users.png` });

  // A consumer sees their own meter, not another user's.
  const consumer = await context.newPage();
  consumer.on("pageerror", (error) => errors.push(error.message));
  await consumer.goto(`${base}/?token=${env("CONSUMER_TOKEN")}#meter/${encodeURIComponent(meter)}`);
  await consumer.waitForFunction((id) => document.getElementById("md-title").textContent === id, meter, { timeout: 10000 });
  await consumer.goto(`${base}/#meter/${encodeURIComponent(env("OTHER_METER"))}`);
  await consumer.waitForFunction(() => !document.getElementById("page-error").classList.contains("hidden"), null, { timeout: 10000 });
  const denied = await consumer.textContent("#page-error");
  if (!denied.startsWith("404")) fail(`another user's meter: ${denied}`);
  const cards = await consumer.locator("#md-cards .card").count();
  if (cards !== 0) fail(`another user's meter showed ${cards} cards`);
  step(`consumer: own meter shown, another user's meter answered "${denied}"`);
  await consumer.screenshot({ path: `${shots}/consumer.png` });

  if (errors.length) fail(`page errors: ${errors.join("; ")}`);
  console.log(`result alert_appear_ms=${appearMs}`);
} catch (error) {
  console.log(`fail ${error.message}`);
  process.exitCode = 1;
} finally {
  await browser.close();
}
