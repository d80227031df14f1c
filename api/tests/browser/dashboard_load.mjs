// The dashboard under load (driven by `load-tests dashboard`): opens the alert feed,
// records when each newly raised alert's row appears (its `raised` event's seq and the
// wall-clock ms), and the renderer's main-thread busy time (CDP Performance metrics).
// Env: BASE_URL, SAMPLES (file to write "seq ms" lines to). Prints `ready` once the
// feed is live, waits for a line on stdin, then prints `result key=value ...`.
import { chromium } from "playwright-core";
import { writeFileSync } from "node:fs";
import { createInterface } from "node:readline";

const browser = await chromium.launch({
  executablePath: process.env.CHROMIUM || "/usr/bin/chromium",
  args: ["--headless", "--no-sandbox", "--disable-gpu", "--disable-quic", "--no-first-run",
    "--disable-background-networking", "--disable-component-update", "--disable-sync"],
});
try {
  const page = await browser.newPage({ viewport: { width: 1280, height: 900 } });
  const errors = [];
  page.on("pageerror", (error) => errors.push(error.message));
  // When each alert frame arrives (before the page handles it): splits the latency into
  // delivery and rendering.
  await page.addInitScript(() => {
    const Native = window.WebSocket;
    window.__received = [];
    window.WebSocket = function (...args) {
      const socket = new Native(...args);
      socket.addEventListener("message", (message) => {
        const text = String(message.data);
        if (text.startsWith('{"type":"alert","seq":')) {
          window.__received.push([Number(text.slice(22, text.indexOf(",", 22))), Date.now()]);
        }
      });
      return socket;
    };
    window.WebSocket.prototype = Native.prototype;
  });
  await page.goto(`${process.env.BASE_URL}/#alerts`);
  await page.waitForFunction(() => document.getElementById("ws-status").textContent === "live", null, { timeout: 30000 });
  await page.evaluate(() => {
    window.__rows = [];
    const seen = new Set();
    new MutationObserver(() => {
      const now = Date.now();
      for (const tr of document.querySelectorAll("#alert-rows tr[data-seq]")) {
        if (!seen.has(tr.dataset.seq)) { seen.add(tr.dataset.seq); window.__rows.push([Number(tr.dataset.seq), now]); }
      }
    }).observe(document.getElementById("alert-rows"), { childList: true });
  });
  const cdp = await page.context().newCDPSession(page);
  await cdp.send("Performance.enable");
  // Responsiveness: how late a 50 ms timer fires (what a click would wait for).
  await page.evaluate(() => {
    window.__lag = [];
    let last = performance.now();
    setInterval(() => { const now = performance.now(); window.__lag.push(Math.max(0, now - last - 50)); last = now; }, 50);
  });
  const metric = (all, name) => all.metrics.find((m) => m.name === name)?.value ?? 0;
  const before = await cdp.send("Performance.getMetrics");
  const started = Date.now();
  console.log("ready");
  const stdin = createInterface({ input: process.stdin });
  await new Promise((resolve) => stdin.once("line", resolve));
  stdin.close();
  const after = await cdp.send("Performance.getMetrics");
  const seconds = (Date.now() - started) / 1000;
  const rows = await page.evaluate(() => window.__rows);
  writeFileSync(process.env.SAMPLES, rows.map(([seq, ms]) => `${seq} ${ms}`).join("\n") + "\n");
  const received = await page.evaluate(() => window.__received);
  const lag = await page.evaluate(() => window.__lag.sort((a, b) => a - b));
  const lagAt = (q) => (lag.length ? lag[Math.min(lag.length - 1, Math.floor(lag.length * q))] : NaN).toFixed(1);
  writeFileSync(process.env.SAMPLES + ".received", received.map(([seq, ms]) => `${seq} ${ms}`).join("\n") + "\n");
  const busy = (name) => ((metric(after, name) - metric(before, name)) * 1000 / seconds).toFixed(1);
  console.log(`result rows=${rows.length} seconds=${seconds.toFixed(1)} task_ms_per_s=${busy("TaskDuration")} script_ms_per_s=${busy("ScriptDuration")} layout_ms_per_s=${busy("LayoutDuration")} style_ms_per_s=${busy("RecalcStyleDuration")} timer_lag_p95_ms=${lagAt(0.95)} timer_lag_max_ms=${lagAt(1)} page_errors=${errors.length}`);
} finally {
  await browser.close();
}
