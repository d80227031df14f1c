//! `gridpulse import FILE...`: streams each file to `POST /api/import` of a running
//! gridpulse and shows progress, the first errors (or writes the whole report to
//! `--report`) and the summary.
//!
//! Plain HTTP/1.1 over a `std::net::TcpStream` (the workspace has no HTTP client and
//! needs none): the file is sent with its `Content-Length` by one thread while the
//! streamed (chunked) report is read by another, so a long report never stalls the
//! upload. Files are sent as they are on disk: a `.gz` file is sent compressed with
//! `Content-Encoding: gzip` and the server decompresses it.

use std::fs::File;
use std::io::{self, BufRead, BufReader, Read, Write};
use std::net::{TcpStream, ToSocketAddrs};
use std::path::{Path, PathBuf};
use std::time::Duration;

use anyhow::{Context, bail};
use clap::Args;
use indicatif::{ProgressBar, ProgressStyle};
use serde_json::Value;

/// Options of `gridpulse import`.
#[derive(Debug, Args)]
pub struct ImportArgs {
    /// Files to import: CSV with a header (meter, ts, voltage, current, power_w,
    /// energy_wh, optional credit, seq) or NDJSON readings; `.gz` files are sent
    /// compressed. Format from the extension (.csv, .ndjson, .jsonl), else from the
    /// first line.
    #[arg(required = true, value_name = "FILE")]
    pub files: Vec<PathBuf>,
    /// The gridpulse API (plain HTTP).
    #[arg(long, env = "GRIDPULSE_API", default_value = "http://127.0.0.1:8080")]
    pub api: String,
    /// Bearer token (a utility or ops token; `gridpulse run` prints one at start).
    #[arg(long, env = "GRIDPULSE_TOKEN", hide_env_values = true)]
    pub token: Option<String>,
    /// Write the whole error report here (NDJSON, or CSV with --report-format csv)
    /// instead of printing the first errors.
    #[arg(long, value_name = "FILE")]
    pub report: Option<PathBuf>,
    /// Format of the --report file.
    #[arg(long, value_parser = ["ndjson", "csv"], default_value = "ndjson")]
    pub report_format: String,
    /// Register meters that have no configuration instead of refusing their rows.
    #[arg(long)]
    pub register_meters: bool,
    /// CSV `ts` column: Unix milliseconds, Unix seconds or RFC 3339.
    #[arg(long, value_parser = ["ms", "s", "rfc3339"], default_value = "ms")]
    pub ts: String,
    /// CSV energy column unit.
    #[arg(long, value_parser = ["wh", "kwh"], default_value = "wh")]
    pub energy_unit: String,
    /// CSV power column unit.
    #[arg(long, value_parser = ["w", "kw"], default_value = "w")]
    pub power_unit: String,
    /// Errors printed per file when there is no --report.
    #[arg(long, default_value_t = 20)]
    pub show_errors: usize,
    /// No progress bar.
    #[arg(long)]
    pub quiet: bool,
}

/// Runs the command; fails if any file could not be imported completely.
pub fn run(args: ImportArgs) -> anyhow::Result<()> {
    let (host, port) = parse_api(&args.api)?;
    let mut report = match &args.report {
        Some(path) => Some(io::BufWriter::new(
            File::create(path).with_context(|| format!("cannot create {}", path.display()))?,
        )),
        None => None,
    };
    let mut incomplete = Vec::new();
    for file in &args.files {
        let summary = import_file(
            &args,
            &host,
            port,
            file,
            report.as_mut().map(|w| w as &mut dyn Write),
        )
        .with_context(|| format!("importing {}", file.display()))?;
        let complete = summary["complete"].as_bool().unwrap_or(false);
        println!(
            "{}: rows={} accepted={} rejected={} duplicates={} out_of_order={} meters_registered={}{}",
            file.display(),
            summary["rows"],
            summary["accepted"],
            summary["rejected"],
            summary["duplicates"],
            summary["out_of_order"],
            summary["meters_registered"],
            if complete {
                String::new()
            } else {
                format!(
                    " INCOMPLETE: {}",
                    summary["error"]["message"]
                        .as_str()
                        .unwrap_or("unknown error")
                )
            }
        );
        if !complete {
            incomplete.push(file.display().to_string());
        }
    }
    if let Some(mut report) = report {
        report.flush().context("writing the report")?;
    }
    if !incomplete.is_empty() {
        bail!("not imported completely: {}", incomplete.join(", "));
    }
    Ok(())
}

fn parse_api(api: &str) -> anyhow::Result<(String, u16)> {
    let rest = match api.strip_prefix("http://") {
        Some(rest) => rest,
        None if api.starts_with("https://") => {
            bail!(
                "--api {api}: only plain http:// is supported (put the CLI next to the server, or behind a local TLS proxy)"
            )
        }
        None => api,
    };
    let authority = rest.split('/').next().unwrap_or(rest);
    let (host, port) = match authority.rsplit_once(':') {
        Some((host, port)) => (
            host,
            port.parse::<u16>()
                .with_context(|| format!("--api {api}: `{port}` is not a port"))?,
        ),
        None => (authority, 80),
    };
    if host.is_empty() {
        bail!("--api {api}: no host");
    }
    Ok((host.to_owned(), port))
}

fn query(args: &ImportArgs, file: &Path) -> String {
    let name = file
        .file_name()
        .map(|name| name.to_string_lossy().to_ascii_lowercase())
        .unwrap_or_default();
    let name = name.strip_suffix(".gz").unwrap_or(&name);
    let format = if name.ends_with(".csv") {
        "csv"
    } else if name.ends_with(".ndjson") || name.ends_with(".jsonl") {
        "ndjson"
    } else {
        "auto"
    };
    format!(
        "format={format}&ts={}&energy_unit={}&power_unit={}&register_meters={}&report={}",
        args.ts, args.energy_unit, args.power_unit, args.register_meters, args.report_format
    )
}

fn import_file(
    args: &ImportArgs,
    host: &str,
    port: u16,
    file: &Path,
    mut report: Option<&mut dyn Write>,
) -> anyhow::Result<Value> {
    let mut input = File::open(file).with_context(|| format!("cannot open {}", file.display()))?;
    let size = input.metadata()?.len();
    let gzip = file.extension().is_some_and(|extension| extension == "gz");
    let address = (host, port)
        .to_socket_addrs()
        .with_context(|| format!("cannot resolve {host}"))?
        .next()
        .with_context(|| format!("{host} has no address"))?;
    let stream = TcpStream::connect_timeout(&address, Duration::from_secs(10)).with_context(|| {
        format!("cannot reach the gridpulse API at {host}:{port}: is `gridpulse run` running there? (--api)")
    })?;
    let _ = stream.set_nodelay(true);
    let mut head = format!(
        "POST /api/import?{} HTTP/1.1\r\nHost: {host}:{port}\r\nConnection: close\r\nContent-Length: {size}\r\nContent-Type: {}\r\n",
        query(args, file),
        if gzip {
            "application/gzip"
        } else {
            "text/plain"
        }
    );
    if gzip {
        head.push_str("Content-Encoding: gzip\r\n");
    }
    if let Some(token) = &args.token {
        head.push_str(&format!("Authorization: Bearer {token}\r\n"));
    }
    head.push_str("\r\n");

    let progress = if args.quiet {
        ProgressBar::hidden()
    } else {
        let bar = ProgressBar::new(size);
        bar.set_style(
            ProgressStyle::with_template(
                "{prefix} [{bar:30}] {bytes}/{total_bytes} {binary_bytes_per_sec} ETA {eta} {msg}",
            )
            .unwrap_or_else(|_| ProgressStyle::default_bar())
            .progress_chars("=> "),
        );
        bar.set_prefix(file.display().to_string());
        bar
    };

    let mut writer = stream.try_clone().context("socket")?;
    let upload_progress = progress.clone();
    let uploader = std::thread::spawn(move || -> io::Result<()> {
        writer.write_all(head.as_bytes())?;
        let mut buffer = vec![0u8; 256 * 1024];
        let mut lines: u64 = 0;
        loop {
            let n = input.read(&mut buffer)?;
            if n == 0 {
                return writer.flush();
            }
            writer.write_all(&buffer[..n])?;
            if !gzip {
                lines += memchr_count(&buffer[..n]);
                upload_progress.set_message(format!("{lines} rows"));
            }
            upload_progress.inc(n as u64);
        }
    });

    let mut response = BufReader::with_capacity(64 * 1024, stream);
    let (status, chunked) = read_head(&mut response).with_context(|| {
        format!("the server at {host}:{port} closed the connection without an answer")
    })?;
    if status != 200 {
        let mut body = String::new();
        let _ = response.read_to_string(&mut body);
        let body = if chunked { dechunk_text(&body) } else { body };
        progress.abandon();
        let _ = uploader.join();
        bail!("{}", http_error(status, &body));
    }
    let mut summary = Value::Null;
    let mut shown = 0;
    let mut n_errors: u64 = 0;
    let mut pending = Vec::new();
    let mut on_line = |line: &[u8]| -> anyhow::Result<()> {
        if let Some(report) = report.as_deref_mut() {
            if line.starts_with(b"# summary ") || line.starts_with(b"{\"summary\"") {
                // The summary is printed, not part of the report file.
            } else {
                report.write_all(line)?;
                report.write_all(b"\n")?;
            }
        }
        let text = String::from_utf8_lossy(line);
        if let Some(json) = text.strip_prefix("# summary ") {
            summary = serde_json::from_str(json).unwrap_or(Value::Null);
            return Ok(());
        }
        if let Ok(value) = serde_json::from_str::<Value>(&text)
            && let Some(found) = value.get("summary")
        {
            summary = found.clone();
            return Ok(());
        }
        if text == "line,field,code,reason" {
            return Ok(());
        }
        n_errors += 1;
        progress.set_message(format!("{n_errors} errors"));
        if report.is_none() && shown < args.show_errors {
            shown += 1;
            progress.suspend(|| eprintln!("  {text}"));
        }
        Ok(())
    };
    let mut feed = |bytes: &[u8]| -> anyhow::Result<()> {
        pending.extend_from_slice(bytes);
        while let Some(newline) = pending.iter().position(|byte| *byte == b'\n') {
            let line: Vec<u8> = pending.drain(..=newline).collect();
            on_line(&line[..line.len() - 1])?;
        }
        Ok(())
    };
    if chunked {
        read_chunked(&mut response, &mut feed)?;
    } else {
        let mut buffer = vec![0u8; 64 * 1024];
        loop {
            let n = response.read(&mut buffer)?;
            if n == 0 {
                break;
            }
            feed(&buffer[..n])?;
        }
    }
    match uploader.join() {
        Ok(Ok(())) => {}
        Ok(Err(error)) if summary.is_object() => {
            tracing::debug!(%error, "upload ended early; the server's summary says why");
        }
        Ok(Err(error)) => return Err(error).context("sending the file"),
        Err(_) => bail!("the upload thread failed"),
    }
    progress.finish_and_clear();
    if !summary.is_object() {
        bail!("the server ended the report without a summary (connection lost?)");
    }
    if report.is_none() {
        let rejected = summary["rejected"].as_u64().unwrap_or(0);
        if rejected > shown as u64 {
            eprintln!(
                "  ... {} more refused rows (write them all with --report FILE)",
                rejected - shown as u64
            );
        }
    }
    Ok(summary)
}

fn memchr_count(bytes: &[u8]) -> u64 {
    bytes.iter().filter(|byte| **byte == b'\n').count() as u64
}

/// The status code and whether the body is chunked.
fn read_head<R: BufRead>(reader: &mut R) -> anyhow::Result<(u16, bool)> {
    let mut line = String::new();
    if reader.read_line(&mut line)? == 0 {
        bail!("no response");
    }
    let status: u16 = line
        .split_whitespace()
        .nth(1)
        .and_then(|code| code.parse().ok())
        .with_context(|| format!("not an HTTP response: {line:?}"))?;
    let mut chunked = false;
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the response head was cut");
        }
        let header = line.trim_end();
        if header.is_empty() {
            return Ok((status, chunked));
        }
        let lower = header.to_ascii_lowercase();
        if lower.starts_with("transfer-encoding:") && lower.contains("chunked") {
            chunked = true;
        }
    }
}

fn read_chunked<R: BufRead>(
    reader: &mut R,
    feed: &mut dyn FnMut(&[u8]) -> anyhow::Result<()>,
) -> anyhow::Result<()> {
    let mut line = String::new();
    let mut buffer = Vec::new();
    loop {
        line.clear();
        if reader.read_line(&mut line)? == 0 {
            bail!("the report was cut (connection lost)");
        }
        let size_text = line.trim().split(';').next().unwrap_or("");
        let size = usize::from_str_radix(size_text, 16)
            .with_context(|| format!("bad chunk size {size_text:?}"))?;
        if size == 0 {
            return Ok(());
        }
        buffer.resize(size, 0);
        reader.read_exact(&mut buffer)?;
        feed(&buffer)?;
        let mut crlf = [0u8; 2];
        reader.read_exact(&mut crlf)?;
    }
}

fn dechunk_text(mut body: &str) -> String {
    let mut out = String::new();
    while let Some((size, rest)) = body.split_once("\r\n") {
        let size = usize::from_str_radix(size.trim(), 16).unwrap_or(0);
        if size == 0 || rest.len() < size {
            break;
        }
        out.push_str(&rest[..size]);
        body = rest.get(size + 2..).unwrap_or("");
    }
    out
}

/// A useful message for a refused request.
fn http_error(status: u16, body: &str) -> String {
    let detail = serde_json::from_str::<Value>(body)
        .ok()
        .and_then(|value| {
            let error = value.get("error")?;
            Some(format!(
                "{} ({})",
                error.get("message")?.as_str()?,
                error.get("code")?.as_str()?
            ))
        })
        .unwrap_or_else(|| body.trim().chars().take(300).collect());
    let hint = match status {
        401 => {
            "; pass a utility or ops token with --token or GRIDPULSE_TOKEN (`gridpulse run` prints one)"
        }
        403 => "; import needs a utility or ops token",
        413 => "; the server refused the size of the upload",
        429 => "; rate limited, try again shortly",
        503 => "; the server cannot import now (no store, or shutting down)",
        _ => "",
    };
    format!("the server answered {status}: {detail}{hint}")
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn api_addresses() {
        assert_eq!(
            parse_api("http://127.0.0.1:8080").unwrap(),
            ("127.0.0.1".into(), 8080)
        );
        assert_eq!(
            parse_api("localhost:9000/").unwrap(),
            ("localhost".into(), 9000)
        );
        assert_eq!(parse_api("http://example").unwrap(), ("example".into(), 80));
        assert!(parse_api("https://x:1").is_err());
        assert!(parse_api("http://x:port").is_err());
    }

    #[test]
    fn errors_say_what_to_do() {
        let message = http_error(
            401,
            r#"{"error":{"code":"missing_token","message":"no token","field":null}}"#,
        );
        assert!(
            message.contains("401")
                && message.contains("missing_token")
                && message.contains("--token"),
            "{message}"
        );
    }
}
