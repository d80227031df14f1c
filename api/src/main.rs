//! `gridpulse`: the command-line entry point.
//!
//! `gridpulse run` starts the embedded system (log, actors, API, optional simulator) in
//! one process with no servers to install; the other subcommands (processor, api,
//! migrate, topics, token, stream-jobs, import) live here too.

use std::net::TcpListener;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Args, Parser, Subcommand};
use gridpulse_actors::Thresholds;
use gridpulse_api::embedded::Persistence;
use gridpulse_api::{EmbeddedConfig, EmbeddedSystem};
use gridpulse_ingest::kafka::KafkaConfig;
use gridpulse_ingest::kafka::admin::TopicOutcome;
use gridpulse_ingest::simulator::SimulatorConfig;
use gridpulse_store::Retention;
use gridpulse_store::scylla_store::{ScyllaConfig, ScyllaStore};

/// jemalloc instead of glibc's malloc. The hot path allocates in bursts on one thread
/// and frees on another (record batches, mailbox envelopes), where glibc spent ~7 % of
/// the processor's CPU consolidating and re-faulting pages. With jemalloc the Kafka
/// processor went from ~0.58 M to ~0.83 M readings/s and the embedded benchmark from
/// ~0.94 M to ~1.9 M, at 1,875 bytes per meter instead of 1,905 (README "Performance";
/// mimalloc was as fast but pads tokio's 128-byte-aligned task cells: 2,145 bytes).
#[global_allocator]
static GLOBAL: tikv_jemallocator::Jemalloc = tikv_jemallocator::Jemalloc;

/// Real-time telemetry and alerting for smart electricity meters.
#[derive(Debug, Parser)]
#[command(name = "gridpulse", version, about, long_about = None)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Debug, Subcommand)]
enum Command {
    /// Run everything in one process: in-process log, meter actors, API and dashboard.
    Run(RunArgs),
    /// A Kafka processor: a member of the consumer group on `readings` hosting the meter
    /// actors of the partitions it owns (and the user actors of its `usage-by-user`
    /// partitions), with the API and dashboard for them. Same options as `run`;
    /// `--kafka-brokers` is required.
    Processor(RunArgs),
    /// Create or upgrade the ScyllaDB schema (idempotent); connection from
    /// GRIDPULSE_SCYLLA_* variables.
    Migrate,
    /// Kafka topics.
    #[command(subcommand)]
    Topics(TopicsCommand),
    /// An API replica for a Kafka deployment: accepts readings (produced to `readings`)
    /// and serves live alerts consumed from `alerts` over the websocket; meters live in
    /// the processors (`gridpulse run --kafka-brokers`).
    Api(ApiArgs),
    /// Issue a signed token (JWT) for development, tests and service accounts: by
    /// default HS256 with the development secret of `--data-dir` (the one `gridpulse
    /// run` uses without a configured key); `--secret-file` or `--private-key` for
    /// others. Prints the token on stdout.
    Token(TokenArgs),
    /// The hourly usage rollup job (Timely Dataflow) on Kafka's `readings`: `-w N`
    /// worker threads, rollups upserted into the store (--data-dir or --scylla), the
    /// job's checkpoints stored after the rollups they cover.
    StreamJobs(StreamJobsArgs),
    /// Import files of meter history (CSV or NDJSON, optionally gzip) into a running
    /// gridpulse through `POST /api/import`: progress bar, the first refused rows (or
    /// the whole report with --report), then a summary per file. Rows are backfill:
    /// they update history and rollups but raise no alert.
    Import(gridpulse_api::import_cli::ImportArgs),
    /// The MQTT bridge for a Kafka deployment: subscribes (QoS 1, persistent session) to
    /// `/energy/+/data`, `gridpulse/meters/+/readings` and `gridpulse/meters/+/status`
    /// on the broker of `--mqtt` and produces the readings to `readings`, bad payloads to
    /// `readings-dlq`; a message is acknowledged only once Kafka has it. (In embedded
    /// mode use `gridpulse run --mqtt HOST:PORT` instead.)
    MqttBridge(MqttBridgeArgs),
}

#[derive(Debug, Clone, Args)]
struct MqttArgs {
    /// MQTT broker to bridge meters from (HOST:PORT, e.g. 127.0.0.1:1883); readings go to
    /// this process's reading log, bad payloads to the dead-letter path.
    #[arg(long, value_name = "HOST:PORT", env = "GRIDPULSE_MQTT")]
    mqtt: Option<String>,
    /// MQTT client id of the bridge: keep it stable, the broker keeps the bridge's
    /// session (messages published while it is away) under it.
    #[arg(
        long,
        value_name = "ID",
        default_value = gridpulse_ingest::mqtt::config::DEFAULT_CLIENT_ID,
        env = "GRIDPULSE_MQTT_CLIENT_ID"
    )]
    mqtt_client_id: String,
    /// MQTT keep-alive, seconds.
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 30,
        env = "GRIDPULSE_MQTT_KEEP_ALIVE",
        value_parser = clap::value_parser!(u64).range(1..=65_535)
    )]
    mqtt_keep_alive: u64,
}

impl MqttArgs {
    fn config(&self) -> anyhow::Result<Option<gridpulse_ingest::mqtt::MqttBridgeConfig>> {
        let Some(address) = &self.mqtt else {
            return Ok(None);
        };
        let (host, port) =
            gridpulse_ingest::mqtt::parse_broker_address(address).map_err(anyhow::Error::msg)?;
        let mut config = gridpulse_ingest::mqtt::MqttBridgeConfig::new(host, port);
        config.client_id = self.mqtt_client_id.clone();
        config.keep_alive = std::time::Duration::from_secs(self.mqtt_keep_alive);
        config.validate().map_err(anyhow::Error::msg)?;
        Ok(Some(config))
    }
}

#[derive(Debug, Args)]
struct MqttBridgeArgs {
    #[command(flatten)]
    mqtt: MqttArgs,
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[derive(Debug, Args)]
struct TokenArgs {
    /// Subject: who the caller is (recorded in the audit log).
    #[arg(long)]
    sub: String,
    /// Role: ops, utility, consumer or service.
    #[arg(long, value_parser = ["ops", "utility", "consumer", "service"])]
    role: String,
    /// The user a consumer is (required for --role consumer).
    #[arg(long)]
    user: Option<String>,
    /// Lifetime, e.g. 90s, 15m, 12h, 30d.
    #[arg(long, default_value = "12h")]
    ttl: String,
    /// Not valid before this long from now (e.g. 5m); default: valid at once.
    #[arg(long, value_name = "DELAY")]
    not_before: Option<String>,
    /// HS256 with the secret in this file.
    #[arg(long, value_name = "FILE", conflicts_with = "private_key")]
    secret_file: Option<PathBuf>,
    /// RS256 or ES256 with this PEM private key (see --alg).
    #[arg(long, value_name = "FILE")]
    private_key: Option<PathBuf>,
    /// Algorithm of --private-key.
    #[arg(long, default_value = "RS256", value_parser = ["RS256", "ES256"])]
    alg: String,
    /// Key id (`kid`) for the header (JWKS deployments).
    #[arg(long)]
    kid: Option<String>,
    /// Without a key option: the development secret of this data directory (created
    /// when missing; `gridpulse run --data-dir` uses the same one).
    #[arg(long, env = "GRIDPULSE_DATA_DIR", default_value = "./gridpulse-data")]
    data_dir: PathBuf,
    /// Issuer (`iss`).
    #[arg(long, default_value = gridpulse_api::auth::DEFAULT_ISSUER)]
    issuer: String,
    /// Audience (`aud`).
    #[arg(long, default_value = gridpulse_api::auth::DEFAULT_AUDIENCE)]
    audience: String,
}

/// How callers authenticate (shared by `run`, `processor` and `api`).
#[derive(Debug, Clone, Args)]
struct AuthArgs {
    /// Accept HS256 tokens signed with the secret in this file (at least 16 bytes).
    #[arg(long, value_name = "FILE", env = "GRIDPULSE_JWT_SECRET_FILE")]
    jwt_secret_file: Option<PathBuf>,
    /// Accept RS256 or ES256 tokens verified by this PEM public key (the algorithm
    /// follows the key type).
    #[arg(long, value_name = "FILE", env = "GRIDPULSE_JWT_PUBLIC_KEY")]
    jwt_public_key: Option<PathBuf>,
    /// Accept tokens signed by the RSA or P-256 keys of this JWKS file (matched by
    /// `kid`).
    #[arg(long, value_name = "FILE", env = "GRIDPULSE_JWT_JWKS")]
    jwt_jwks: Option<PathBuf>,
    /// Required `iss` of tokens.
    #[arg(long, default_value = gridpulse_api::auth::DEFAULT_ISSUER, env = "GRIDPULSE_JWT_ISSUER")]
    jwt_issuer: String,
    /// Required `aud` of tokens.
    #[arg(long, default_value = gridpulse_api::auth::DEFAULT_AUDIENCE, env = "GRIDPULSE_JWT_AUDIENCE")]
    jwt_audience: String,
    /// NO AUTHENTICATION: every caller may do everything. Local development only.
    #[arg(long, env = "GRIDPULSE_INSECURE_DEV", conflicts_with_all = ["jwt_secret_file", "jwt_public_key", "jwt_jwks"])]
    insecure_dev: bool,
    /// Requests per second allowed per token (0: unlimited); 429 with Retry-After
    /// beyond it.
    #[arg(long, default_value_t = 200.0, env = "GRIDPULSE_RATE_LIMIT")]
    rate_limit: f64,
    /// Requests a token may burst above the rate.
    #[arg(long, default_value_t = 400.0, env = "GRIDPULSE_RATE_BURST")]
    rate_burst: f64,
}

/// The authentication a server runs with, and a token to print for development.
struct AuthSetup {
    auth: gridpulse_api::auth::Auth,
    /// Without a configured key: the development secret and tokens minted with it.
    dev_token: Option<DevTokens>,
}

/// Printed by `gridpulse run` when no key is configured.
#[derive(Debug, Clone)]
struct DevTokens {
    secret_path: String,
    ops: String,
    utility: String,
}

impl AuthArgs {
    /// `dev_dir`: where a development secret may live when no key is configured (`None`:
    /// a key or --insecure-dev is required).
    fn setup(&self, dev_dir: Option<&std::path::Path>) -> anyhow::Result<AuthSetup> {
        use gridpulse_api::auth::{Auth, Verifier};
        anyhow::ensure!(
            self.rate_limit.is_finite() && self.rate_limit >= 0.0,
            "--rate-limit must be a number of requests per second (0: unlimited)"
        );
        anyhow::ensure!(
            self.rate_burst.is_finite() && self.rate_burst >= 1.0,
            "--rate-burst must be at least 1"
        );
        if self.insecure_dev {
            eprintln!(
                "\n  !!! WARNING: --insecure-dev: authentication is OFF. Anyone who can reach this\n  !!! port can read every meter and user and change anything. Never expose it.\n"
            );
            return Ok(AuthSetup {
                auth: Auth::InsecureDev,
                dev_token: None,
            });
        }
        let mut verifier = Verifier::new(&self.jwt_issuer, &self.jwt_audience);
        if let Some(path) = &self.jwt_secret_file {
            let secret = std::fs::read(path)
                .with_context(|| format!("reading --jwt-secret-file {}", path.display()))?;
            let secret = trim_secret(&secret);
            verifier = verifier.with_hs256_secret(secret)?;
        }
        if let Some(path) = &self.jwt_public_key {
            verifier = verifier.with_public_key_file(path)?;
        }
        if let Some(path) = &self.jwt_jwks {
            verifier = verifier.with_jwks_file(path)?;
        }
        let mut dev_token = None;
        if !verifier.has_keys() {
            let dir = dev_dir.context(
                "no token key configured: pass --jwt-secret-file, --jwt-public-key or --jwt-jwks \
                 (or --insecure-dev for local development without authentication)",
            )?;
            let secret = gridpulse_api::auth::dev_secret(dir)
                .with_context(|| format!("creating the development secret in {}", dir.display()))?;
            verifier = verifier.with_hs256_secret(&secret)?;
            let now = gridpulse_api::auth::unix_now();
            let mint = |role: &str| {
                gridpulse_api::auth::issue(
                    &gridpulse_api::auth::Claims {
                        sub: format!("dev-{role}"),
                        role: role.into(),
                        user: None,
                        exp: now + 12 * 3600,
                        nbf: None,
                        iat: Some(now),
                        iss: self.jwt_issuer.clone(),
                        aud: self.jwt_audience.clone(),
                    },
                    &gridpulse_api::auth::SigningKey::Hs256(secret.clone()),
                    None,
                )
                .context("signing a development token")
            };
            let tokens = DevTokens {
                secret_path: dir.join("dev-jwt-secret").display().to_string(),
                ops: mint("ops")?,
                utility: mint("utility")?,
            };
            dev_token = Some(tokens);
        }
        Ok(AuthSetup {
            auth: Auth::Tokens(std::sync::Arc::new(verifier)),
            dev_token,
        })
    }
}

/// A secret file's bytes without a trailing newline (editors add one).
fn trim_secret(secret: &[u8]) -> &[u8] {
    let end = secret
        .iter()
        .rposition(|byte| !byte.is_ascii_whitespace())
        .map_or(0, |last| last + 1);
    &secret[..end]
}

fn token(args: TokenArgs) -> anyhow::Result<()> {
    use gridpulse_api::auth::{Claims, SigningKey, issue, parse_ttl, unix_now};
    let ttl = parse_ttl(&args.ttl).map_err(|error| anyhow::anyhow!("--ttl: {error}"))?;
    let not_before = args
        .not_before
        .as_deref()
        .map(|text| parse_ttl(text).map_err(|error| anyhow::anyhow!("--not-before: {error}")))
        .transpose()?;
    if args.role == "consumer" && args.user.is_none() {
        anyhow::bail!("--role consumer needs --user (the account the consumer is)");
    }
    if let Some(user) = &args.user {
        gridpulse_domain::UserId::new(user).map_err(|error| anyhow::anyhow!("--user: {error}"))?;
    }
    let key = match (&args.secret_file, &args.private_key) {
        (Some(path), _) => SigningKey::Hs256(
            trim_secret(
                &std::fs::read(path).with_context(|| format!("reading {}", path.display()))?,
            )
            .to_vec(),
        ),
        (None, Some(path)) => {
            let pem = std::fs::read(path).with_context(|| format!("reading {}", path.display()))?;
            match args.alg.as_str() {
                "ES256" => SigningKey::Es256Pem(pem),
                _ => SigningKey::Rs256Pem(pem),
            }
        }
        (None, None) => SigningKey::Hs256(
            gridpulse_api::auth::dev_secret(&args.data_dir).with_context(|| {
                format!("the development secret in {}", args.data_dir.display())
            })?,
        ),
    };
    let now = unix_now();
    let claims = Claims {
        sub: args.sub,
        role: args.role,
        user: args.user,
        exp: now + ttl,
        nbf: not_before.map(|delay| now + delay),
        iat: Some(now),
        iss: args.issuer,
        aud: args.audience,
    };
    let token = issue(&claims, &key, args.kid.as_deref()).context("signing the token")?;
    println!("{token}");
    Ok(())
}

#[derive(Debug, Args)]
struct StreamJobsArgs {
    /// Timely worker threads (per process).
    #[arg(
        short = 'w',
        long,
        default_value_t = 2,
        env = "GRIDPULSE_STREAM_WORKERS"
    )]
    workers: usize,
    /// Timely processes in the cluster (all run this command with the same options
    /// but `--process`); partitions are spread over every process's workers.
    #[arg(
        short = 'n',
        long,
        default_value_t = 1,
        env = "GRIDPULSE_STREAM_PROCESSES"
    )]
    processes: usize,
    /// This process's index in the cluster, 0-based.
    #[arg(
        short = 'p',
        long,
        default_value_t = 0,
        env = "GRIDPULSE_STREAM_PROCESS"
    )]
    process: usize,
    /// A file of `host:port` lines, one per process in process order (default:
    /// localhost:2101, localhost:2102, …).
    #[arg(long, value_name = "FILE", env = "GRIDPULSE_STREAM_HOSTFILE")]
    hostfile: Option<PathBuf>,
    /// Where the embedded store keeps the rollups and checkpoints (its own directory:
    /// a store has one process).
    #[arg(
        long,
        default_value = "gridpulse-rollups",
        env = "GRIDPULSE_STREAM_DATA_DIR"
    )]
    data_dir: PathBuf,
    /// Store in ScyllaDB (GRIDPULSE_SCYLLA_* variables) instead.
    #[arg(long, env = "GRIDPULSE_SCYLLA")]
    scylla: bool,
    #[command(flatten)]
    kafka: KafkaArgs,
}

#[derive(Debug, Args)]
struct ApiArgs {
    /// Address the API and websocket listen on.
    #[arg(long, env = "GRIDPULSE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2, env = "GRIDPULSE_HTTP_WORKERS")]
    http_workers: usize,
    #[command(flatten)]
    kafka: KafkaArgs,
    #[command(flatten)]
    auth: AuthArgs,
}

#[derive(Debug, Subcommand)]
enum TopicsCommand {
    /// Create `readings`, `alerts`, `usage-by-user`, `readings-dlq` and `user-events` (existing ones are
    /// left alone).
    Create(KafkaArgs),
}

#[derive(Debug, Clone, Args)]
struct KafkaArgs {
    /// Kafka bootstrap servers (host:port,...).
    #[arg(long = "kafka-brokers", env = "GRIDPULSE_KAFKA_BROKERS")]
    kafka_brokers: Option<String>,
    /// Partitions of the readings and alerts topics (when creating them).
    #[arg(
        long = "kafka-partitions",
        default_value_t = 8,
        env = "GRIDPULSE_KAFKA_PARTITIONS"
    )]
    kafka_partitions: i32,
    /// Replication factor (when creating topics).
    #[arg(
        long = "kafka-replication",
        default_value_t = 1,
        env = "GRIDPULSE_KAFKA_REPLICATION"
    )]
    kafka_replication: i32,
    /// Consumer group of the processors.
    #[arg(
        long = "kafka-group",
        default_value = "gridpulse-processors",
        env = "GRIDPULSE_KAFKA_GROUP"
    )]
    kafka_group: String,
    /// Extra librdkafka setting, key=value (repeatable).
    #[arg(long = "kafka-set", value_name = "KEY=VALUE")]
    kafka_settings: Vec<String>,
}

impl KafkaArgs {
    fn config(&self) -> anyhow::Result<Option<KafkaConfig>> {
        let Some(brokers) = &self.kafka_brokers else {
            return Ok(None);
        };
        let mut config = KafkaConfig::new(brokers.clone());
        config.partitions = self.kafka_partitions;
        config.replication = self.kafka_replication;
        config.group_id = self.kafka_group.clone();
        config.overrides =
            KafkaConfig::parse_overrides(&self.kafka_settings).map_err(anyhow::Error::msg)?;
        Ok(Some(config))
    }
}

#[derive(Debug, Args)]
struct RunArgs {
    /// Address the API, websocket and page listen on.
    #[arg(long, env = "GRIDPULSE_LISTEN", default_value = "127.0.0.1:8080")]
    listen: String,
    /// Start the built-in simulator with this many meters (every alert kind shows up
    /// within a few minutes).
    #[arg(long, value_name = "METERS", env = "GRIDPULSE_SIMULATE")]
    simulate: Option<usize>,
    /// Seed of the simulator (same seed, same readings).
    #[arg(long, default_value_t = 42, env = "GRIDPULSE_SEED")]
    seed: u64,
    /// Seconds between two readings of one simulated meter.
    #[arg(long, default_value_t = 5.0, env = "GRIDPULSE_SIMULATE_INTERVAL")]
    simulate_interval: f64,
    /// Log partitions, each owned by one partition actor.
    #[arg(long, default_value_t = 8, env = "GRIDPULSE_PARTITIONS")]
    partitions: u32,
    /// Actor worker threads (0: one per core).
    #[arg(long, default_value_t = 0, env = "GRIDPULSE_WORKERS")]
    workers: usize,
    /// HTTP worker threads.
    #[arg(long, default_value_t = 2, env = "GRIDPULSE_HTTP_WORKERS")]
    http_workers: usize,
    /// Timely worker threads of the hourly usage rollup job (with persistence and the
    /// in-process log; 0 turns rollups off).
    #[arg(long, default_value_t = 1, env = "GRIDPULSE_ROLLUP_WORKERS")]
    rollup_workers: usize,
    /// Largest request body, bytes.
    #[arg(long, default_value_t = 4 << 20, env = "GRIDPULSE_MAX_BODY_BYTES")]
    max_body_bytes: usize,
    /// JSON file with default meter thresholds (fields left out keep their defaults).
    #[arg(long, value_name = "FILE", env = "GRIDPULSE_THRESHOLDS")]
    thresholds: Option<PathBuf>,
    /// Where readings, state snapshots, alerts and the reading journal are kept.
    #[arg(
        long,
        value_name = "DIR",
        env = "GRIDPULSE_DATA_DIR",
        default_value = "./gridpulse-data"
    )]
    data_dir: PathBuf,
    /// Keep nothing on disk (everything is lost on exit).
    #[arg(long, env = "GRIDPULSE_IN_MEMORY", conflicts_with = "scylla")]
    in_memory: bool,
    /// Store history and snapshots in ScyllaDB (GRIDPULSE_SCYLLA_* variables) instead of
    /// the embedded store; the reading journal stays in --data-dir.
    #[arg(long, env = "GRIDPULSE_SCYLLA")]
    scylla: bool,
    /// Days raw readings are kept (0: forever).
    #[arg(long, default_value_t = 400, env = "GRIDPULSE_RETENTION_READINGS_DAYS")]
    retention_readings_days: u32,
    /// Days resolved alerts and their history are kept (0: forever).
    #[arg(long, default_value_t = 400, env = "GRIDPULSE_RETENTION_ALERTS_DAYS")]
    retention_alerts_days: u32,
    /// Kafka as the reading log (with --kafka-brokers): POST /api/readings and the
    /// simulator produce to `readings`, the meter actors consume it as a group member.
    #[command(flatten)]
    kafka: KafkaArgs,
    /// Seconds between checkpoints (state snapshots; bounds the replay after a crash).
    #[arg(long, default_value_t = 5.0, env = "GRIDPULSE_CHECKPOINT_INTERVAL")]
    checkpoint_interval: f64,
    #[command(flatten)]
    auth: AuthArgs,
    /// Seconds after which a firing alert nobody acknowledged gets a reminder event, and
    /// again every as many seconds while unacknowledged and not snoozed (0: no
    /// reminders).
    #[arg(
        long,
        value_name = "SECONDS",
        default_value_t = 900,
        env = "GRIDPULSE_ALERT_REMINDER_AFTER",
        // At most a year: plenty, and far from overflowing any schedule.
        value_parser = clap::value_parser!(u64).range(0..=366 * 86_400)
    )]
    alert_reminder_after: u64,
    #[command(flatten)]
    mqtt: MqttArgs,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    tracing_subscriber::fmt()
        .with_env_filter(
            tracing_subscriber::EnvFilter::try_from_env("GRIDPULSE_LOG")
                .unwrap_or_else(|_| "info".into()),
        )
        .init();
    match cli.command {
        Command::Run(args) => run(args),
        Command::Processor(args) => {
            anyhow::ensure!(
                args.kafka.kafka_brokers.is_some(),
                "gridpulse processor needs --kafka-brokers (or GRIDPULSE_KAFKA_BROKERS); `gridpulse run` runs without Kafka"
            );
            run(args)
        }
        Command::Migrate => migrate(),
        Command::Topics(TopicsCommand::Create(args)) => create_topics(&args),
        Command::Api(args) => api(args),
        Command::StreamJobs(args) => stream_jobs(args),
        Command::Token(args) => token(args),
        Command::Import(args) => gridpulse_api::import_cli::run(args),
        Command::MqttBridge(args) => mqtt_bridge(&args),
    }
}

/// Timely's cluster configuration from `-n`, `-p` and `--hostfile` (`None` for one
/// process).
fn cluster(
    args: &StreamJobsArgs,
) -> anyhow::Result<Option<gridpulse_stream_jobs::CommunicationConfig>> {
    if args.processes <= 1 {
        return Ok(None);
    }
    anyhow::ensure!(
        args.process < args.processes,
        "--process {} is not below --processes {}",
        args.process,
        args.processes
    );
    let addresses: Vec<String> = match &args.hostfile {
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading the hostfile {}", path.display()))?;
            let lines: Vec<String> = text
                .lines()
                .map(str::trim)
                .filter(|line| !line.is_empty())
                .take(args.processes)
                .map(str::to_owned)
                .collect();
            anyhow::ensure!(
                lines.len() == args.processes,
                "the hostfile {} has {} addresses, --processes is {}",
                path.display(),
                lines.len(),
                args.processes
            );
            lines
        }
        None => (0..args.processes)
            .map(|index| format!("localhost:{}", 2101 + index))
            .collect(),
    };
    Ok(Some(gridpulse_stream_jobs::CommunicationConfig::Cluster {
        threads: args.workers.max(1),
        process: args.process,
        addresses,
        report: false,
        zerocopy: false,
    }))
}

fn stream_jobs(args: StreamJobsArgs) -> anyhow::Result<()> {
    let kafka = args.kafka.config()?.context(
        "gridpulse stream-jobs needs --kafka-brokers (in `gridpulse run` the job runs in-process)",
    )?;
    let communication = cluster(&args)?;
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .worker_threads(1)
        .enable_all()
        .build()
        .context("starting the runtime")?;
    runtime.block_on(async move {
        let store: std::sync::Arc<dyn gridpulse_store::Store> = if args.scylla {
            std::sync::Arc::new(ScyllaStore::connect(scylla_config()?).await.context("connecting to ScyllaDB")?)
        } else {
            std::sync::Arc::new(
                gridpulse_store::embedded::EmbeddedStore::open(&args.data_dir.join("store"), Retention::default())
                    .with_context(|| format!("opening the store in {}", args.data_dir.display()))?,
            )
        };
        let source = tokio::task::spawn_blocking(move || {
            gridpulse_ingest::kafka::stream_source::KafkaStreamSource::new(&kafka)
        })
        .await
        .context("kafka metadata task")?
        .map_err(anyhow::Error::msg)?;
        let n_partitions = gridpulse_stream_jobs::Source::partitions(&source).len();
        let job = gridpulse_api::rollups::start_on(
            std::sync::Arc::clone(&store),
            std::sync::Arc::new(source),
            args.workers,
            communication,
            gridpulse_domain::Limits::default(),
        )
        .await
        .map_err(anyhow::Error::msg)?;
        println!(
            "gridpulse stream-jobs: hourly rollups of {n_partitions} partitions on {} timely workers",
            args.workers.max(1)
        );
        shutdown_signal().await;
        tracing::info!("shutting down: the workers report a last checkpoint");
        job.shutdown().await;
        store.flush().await.context("flushing the store")?;
        Ok(())
    })
}

fn api(args: ApiArgs) -> anyhow::Result<()> {
    let auth = args.auth.setup(None)?;
    let config = EmbeddedConfig {
        auth: auth.auth,
        rate_limit: (args.auth.rate_limit, args.auth.rate_burst),
        n_partitions: 1,
        n_workers: 1,
        n_http_workers: args.http_workers,
        kafka: Some(
            args.kafka
                .config()?
                .context("--kafka-brokers is required")?,
        ),
        api_only: true,
        ..EmbeddedConfig::default()
    };
    actix_web::rt::System::new().block_on(async move {
        let listener = bind(&args.listen)?;
        let system = EmbeddedSystem::start_default_clock(config, listener)
            .await
            .context("starting the API replica")?;
        println!(
            "gridpulse API replica on http://{} (alerts from Kafka)",
            system.local_addr
        );
        serve_until_signal(system.server).await
    })
}

fn create_topics(args: &KafkaArgs) -> anyhow::Result<()> {
    let config = args.config()?.context("--kafka-brokers is required")?;
    actix_web::rt::System::new().block_on(async move {
        for outcome in gridpulse_ingest::kafka::admin::create_topics(&config)
            .await
            .map_err(anyhow::Error::msg)?
        {
            match outcome {
                TopicOutcome::Created(name) => println!("created {name}"),
                TopicOutcome::Exists(name) => println!("exists  {name}"),
            }
        }
        Ok(())
    })
}

fn scylla_config() -> anyhow::Result<ScyllaConfig> {
    ScyllaConfig::from_env()?
        .context("set GRIDPULSE_SCYLLA_NODES (comma-separated host:port) to use ScyllaDB")
}

fn migrate() -> anyhow::Result<()> {
    let config = scylla_config()?;
    actix_web::rt::System::new().block_on(async move {
        let applied = gridpulse_store::scylla_store::migrate(&config).await?;
        if applied.is_empty() {
            println!("schema is up to date");
        }
        for migration in applied {
            println!("applied {migration:?}");
        }
        Ok(())
    })
}

fn run(args: RunArgs) -> anyhow::Result<()> {
    let default_thresholds = match &args.thresholds {
        None => Thresholds::default(),
        Some(path) => {
            let text = std::fs::read_to_string(path)
                .with_context(|| format!("reading thresholds file {}", path.display()))?;
            let thresholds: Thresholds = serde_json::from_str(&text)
                .with_context(|| format!("thresholds file {}", path.display()))?;
            thresholds
                .validate()
                .with_context(|| format!("thresholds file {}", path.display()))?;
            thresholds
        }
    };
    if !(args.simulate_interval.is_finite() && args.simulate_interval >= 0.1) {
        anyhow::bail!("--simulate-interval must be at least 0.1 seconds");
    }
    if !(args.checkpoint_interval.is_finite() && args.checkpoint_interval >= 0.05) {
        anyhow::bail!("--checkpoint-interval must be at least 0.05 seconds");
    }
    let alert_reminder_after = (args.alert_reminder_after > 0)
        .then(|| std::time::Duration::from_secs(args.alert_reminder_after));
    let persistence = (!args.in_memory).then(|| {
        let mut persistence = Persistence::new(&args.data_dir);
        persistence.checkpoint_interval =
            std::time::Duration::from_secs_f64(args.checkpoint_interval);
        persistence.retention = Retention {
            readings_days: (args.retention_readings_days > 0)
                .then_some(args.retention_readings_days),
            alerts_days: (args.retention_alerts_days > 0).then_some(args.retention_alerts_days),
        };
        persistence
    });
    // Without a configured key, a development secret next to the data (or, in
    // memory, in a temporary directory that lives as long as the process).
    let dev_dir = if args.in_memory {
        std::env::temp_dir().join(format!("gridpulse-dev-{}", std::process::id()))
    } else {
        args.data_dir.clone()
    };
    let auth = args.auth.setup(Some(&dev_dir))?;
    let dev_token = auth.dev_token.clone();
    let config = EmbeddedConfig {
        auth: auth.auth,
        rate_limit: (args.auth.rate_limit, args.auth.rate_burst),
        n_partitions: args.partitions.max(1),
        n_workers: args.workers,
        n_http_workers: args.http_workers,
        max_body_bytes: args.max_body_bytes,
        default_thresholds,
        simulate: args.simulate.map(|meters| SimulatorConfig {
            meters,
            seed: args.seed,
            interval_ms: (args.simulate_interval * 1000.0) as i64,
            ..SimulatorConfig::default()
        }),
        persistence,
        kafka: args.kafka.config()?,
        rollup_workers: args.rollup_workers,
        alert_reminder_after,
        mqtt: args.mqtt.config()?,
        ..EmbeddedConfig::default()
    };
    let use_scylla = args.scylla;
    actix_web::rt::System::new().block_on(async move {
        let listener = bind(&args.listen)?;
        let mut config = config;
        if use_scylla && let Some(persistence) = config.persistence.as_mut() {
            let store =
                ScyllaStore::connect(scylla_config()?.with_retention(persistence.retention))
                    .await?;
            persistence.store = Some(std::sync::Arc::new(store));
        }
        let mode = match &config.kafka {
            Some(kafka) => format!(
                "Kafka processor: brokers {}, group {}",
                kafka.brokers, kafka.group_id
            ),
            None => "embedded mode, no servers needed".to_owned(),
        };
        let data_dir = config
            .persistence
            .as_ref()
            .map(|p| p.data_dir.display().to_string());
        let system = EmbeddedSystem::start_default_clock(config, listener)
            .await
            .context("starting gridpulse")?;
        let url = format!("http://{}", system.local_addr);
        println!("gridpulse is running ({mode})");
        println!("  live alerts page   {url}/");
        println!("  meters             {url}/api/meters");
        println!("  alert websocket    ws://{}/ws/alerts", system.local_addr);
        println!("  metrics            {url}/metrics");
        match args.simulate {
            Some(meters) => println!("  simulator          {meters} meters, seed {}", args.seed),
            None => {
                println!("  post readings to   {url}/api/readings   (or start with --simulate 100)")
            }
        }
        match data_dir {
            Some(dir) => println!("  data directory     {dir} (state survives restarts)"),
            None => println!("  data directory     none (--in-memory: nothing is kept)"),
        }
        match &dev_token {
            Some(tokens) => {
                println!("  auth               development secret {} (no --jwt-* key given)", tokens.secret_path);
                println!("  dev ops token      {}", tokens.ops);
                println!("  dev utility token  {}", tokens.utility);
                println!("  sign in the page   {url}/?token=<dev ops token>");
                println!("                     (tokens valid 12 h; more: gridpulse token --data-dir DIR --sub NAME --role ops|utility|consumer|service)");
            }
            None if state_is_insecure(&system) => {
                println!("  auth               OFF (--insecure-dev): every caller is ops");
            }
            None => println!("  auth               bearer tokens (JWT) required"),
        }
        if let Some(mqtt) = &args.mqtt.mqtt {
            println!("  mqtt bridge        {mqtt} as {} (QoS 1)", args.mqtt.mqtt_client_id);
        }
        println!("press Ctrl-C to stop");
        let state = system.state.clone();
        serve_until_signal(system.server).await?;
        EmbeddedSystem::shutdown(&state)
            .await
            .context("final checkpoint")?;
        Ok(())
    })
}

fn state_is_insecure(system: &EmbeddedSystem) -> bool {
    system.state.auth.is_insecure()
}

/// Binds the listen address, saying what to do when it is taken.
fn bind(listen: &str) -> anyhow::Result<TcpListener> {
    TcpListener::bind(listen)
        .with_context(|| format!("cannot listen on {listen} (is it in use? try --listen)"))
}

/// Serves HTTP until SIGINT/SIGTERM, then stops it gracefully (the caller checkpoints).
fn mqtt_bridge(args: &MqttBridgeArgs) -> anyhow::Result<()> {
    let mqtt = args
        .mqtt
        .config()?
        .context("--mqtt HOST:PORT is required (the broker meters publish to)")?;
    let kafka = args
        .kafka
        .config()?
        .context("--kafka-brokers is required (the bridge produces to `readings`)")?;
    actix_web::rt::System::new().block_on(async move {
        let producer = gridpulse_ingest::kafka::producer::KafkaReadingProducer::new(&kafka)
            .map_err(anyhow::Error::msg)?;
        let dead_letters = gridpulse_ingest::dead_letter::DeadLetterSink::kafka(&kafka)
            .map_err(anyhow::Error::msg)?;
        // Live link changes (last wills) travel in `readings` to the processors.
        let links: std::sync::Arc<dyn gridpulse_ingest::mqtt::LinkSink> =
            std::sync::Arc::new(producer.clone());
        let bridge = gridpulse_ingest::mqtt::MqttBridge::start_with_links(
            &mqtt,
            gridpulse_ingest::ReadingLog::Kafka(std::sync::Arc::new(producer)),
            dead_letters,
            gridpulse_domain::Limits::default(),
            std::sync::Arc::new(gridpulse_actors::SystemClock),
            Some(links),
        )
        .map_err(anyhow::Error::msg)?;
        println!(
            "gridpulse mqtt bridge: {}:{} as {} -> Kafka {} (`{}`, dead letters `{}`)",
            mqtt.host,
            mqtt.port,
            mqtt.client_id,
            kafka.brokers,
            kafka.readings_topic,
            kafka.dlq_topic
        );
        println!("press Ctrl-C to stop");
        shutdown_signal().await;
        tracing::info!("shutting down the mqtt bridge");
        bridge.shutdown().await;
        Ok(())
    })
}

async fn serve_until_signal(server: actix_web::dev::Server) -> anyhow::Result<()> {
    let handle = server.handle();
    actix_web::rt::spawn(async move {
        shutdown_signal().await;
        tracing::info!("shutting down: stopping HTTP");
        handle.stop(true).await;
    });
    server.await.context("HTTP server")
}

/// Resolves on SIGINT (Ctrl-C) or SIGTERM (Kubernetes, systemd).
async fn shutdown_signal() {
    let mut terminate =
        match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
            Ok(signal) => signal,
            Err(error) => {
                tracing::warn!(%error, "cannot listen for SIGTERM; Ctrl-C only");
                let _ = tokio::signal::ctrl_c().await;
                return;
            }
        };
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = terminate.recv() => {}
    }
}

#[cfg(test)]
mod tests {
    use clap::CommandFactory;

    use super::*;

    #[test]
    fn the_command_line_is_well_formed() {
        // Catches clashing argument names and bad defaults at test time, not at run time.
        Cli::command().debug_assert();
        let cli = Cli::try_parse_from([
            "gridpulse",
            "run",
            "--kafka-brokers",
            "b:9092",
            "--partitions",
            "4",
        ])
        .unwrap();
        let Command::Run(args) = cli.command else {
            panic!("expected run");
        };
        assert_eq!(args.partitions, 4);
        assert_eq!(args.alert_reminder_after, 900, "15 minutes by default");
        let reminders = |value: &str| {
            let flag = format!("--alert-reminder-after={value}");
            Cli::try_parse_from(["gridpulse", "run", flag.as_str()]).map(|cli| match cli.command {
                Command::Run(args) => args.alert_reminder_after,
                _ => panic!("expected run"),
            })
        };
        assert_eq!(reminders("0").unwrap(), 0, "0 turns reminders off");
        assert_eq!(reminders("60").unwrap(), 60);
        for bad in ["-1", "1.5", "31622401", "soon"] {
            let error = reminders(bad).unwrap_err().to_string();
            assert!(error.contains("--alert-reminder-after"), "{bad}: {error}");
        }
        let cli = Cli::try_parse_from(["gridpulse", "processor", "--kafka-brokers", "b:9092"]);
        assert!(matches!(cli.unwrap().command, Command::Processor(_)));
        let cli = Cli::try_parse_from([
            "gridpulse",
            "stream-jobs",
            "--kafka-brokers",
            "b:9092",
            "-w",
            "3",
        ])
        .unwrap();
        let Command::StreamJobs(jobs) = cli.command else {
            panic!("expected stream-jobs");
        };
        assert_eq!((jobs.workers, jobs.scylla), (3, false));
        assert!(cluster(&jobs).unwrap().is_none(), "one process");
        let parse = |process: &str| {
            let cli = Cli::try_parse_from([
                "gridpulse",
                "stream-jobs",
                "--kafka-brokers",
                "b:9092",
                "-n",
                "2",
                "-p",
                process,
            ])
            .unwrap();
            let Command::StreamJobs(jobs) = cli.command else {
                panic!("expected stream-jobs");
            };
            cluster(&jobs)
        };
        let Some(gridpulse_stream_jobs::CommunicationConfig::Cluster {
            process, addresses, ..
        }) = parse("1").unwrap()
        else {
            panic!("expected a cluster");
        };
        assert_eq!((process, addresses.len()), (1, 2));
        assert!(parse("2").is_err(), "process out of range");

        assert_eq!(args.kafka.config().unwrap().unwrap().brokers, "b:9092");
        let error = Cli::try_parse_from([
            "gridpulse",
            "run",
            "--kafka-brokers",
            "b:9092",
            "--kafka-set",
            "nokey",
        ])
        .unwrap();
        let Command::Run(args) = error.command else {
            panic!("expected run");
        };
        assert!(
            args.kafka
                .config()
                .unwrap_err()
                .to_string()
                .contains("nokey")
        );
    }
}
