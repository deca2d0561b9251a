//! `--logging-config`: the original task proxy's logging YAML, and the writers it asks for.
//!
//! ```yaml
//! directory: /var/log/task-proxy     # absolute; files go here
//! server:   {writerType: file, minLogLevel: debug, rotationPolicy: {...}}  # server.log
//! proxy:    {writerType: stderr, minLogLevel: info}                         # envoy.log
//! accessLog: {enabled: true, writerType: file, rotationPolicy: {...}}       # access.log
//! ```
//!
//! `server` gets everything but the data plane and the access log; `proxy` (file `envoy.log`,
//! the name the original's Envoy used) gets the data plane (`task_proxy::proxy`, hyper, h2,
//! rustls); `accessLog` gets the access lines. A file writer rotates by size and/or period and
//! keeps a number of archives and/or a total size (`rotationPolicy`); archives are named
//! `<file>.<UTC timestamp>.<16 hex digits>` as the original names them.
//!
//! The access log never blocks a worker: its lines, formatted as before, go into a bounded
//! queue (`tracing-appender`'s lossy non-blocking writer) that one thread writes out in
//! batches, one write per batch. When the writer falls behind (a full disk, a stdout nobody
//! reads) lines beyond [`ACCESS_QUEUE_LINES`] are dropped and counted
//! ([`access_lines_dropped`], the `task_proxy_access_log_dropped` metric).

use serde::Deserialize;
use std::fs::{File, OpenOptions};
use std::io::{self, BufWriter, Write};
use std::path::{Path, PathBuf};
use std::sync::{Arc, Mutex, OnceLock, Weak};
use std::time::{Duration, Instant, SystemTime};
use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// The access log's target: its lines go to the access stream only.
pub const ACCESS_TARGET: &str = "task_proxy::access";

/// Where files go when `directory` is not given.
pub const DEFAULT_DIRECTORY: &str = "/var/log/task-proxy";

/// Access lines queued for the writer thread at most (about 4 MiB of typical lines); beyond
/// it lines are dropped and counted rather than making a worker wait.
pub const ACCESS_QUEUE_LINES: usize = 16 * 1024;

/// Buffer of a file writer; lines are written out when it fills, and at least every second.
const FILE_BUFFER: usize = 64 * 1024;

/// The logging configuration (the original's keys).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LoggingConfig {
    pub directory: PathBuf,
    pub server: LogConfig,
    pub proxy: LogConfig,
    pub access_log: AccessLogConfig,
}

/// `server` and `proxy`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LogConfig {
    pub writer_type: WriterType,
    pub min_log_level: Level,
    pub rotation_policy: Option<RotationPolicy>,
}

/// `accessLog`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct AccessLogConfig {
    pub enabled: bool,
    pub writer_type: WriterType,
    pub rotation_policy: Option<RotationPolicy>,
}

/// The file as written: what is absent keeps its default (as the original decodes onto its
/// defaults).
#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawConfig {
    directory: Option<PathBuf>,
    server: Option<RawLog>,
    proxy: Option<RawLog>,
    access_log: Option<RawAccess>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawLog {
    writer_type: Option<WriterType>,
    min_log_level: Option<Level>,
    rotation_policy: Option<RotationPolicy>,
}

#[derive(Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
struct RawAccess {
    enabled: Option<bool>,
    writer_type: Option<WriterType>,
    rotation_policy: Option<RotationPolicy>,
}

impl RawLog {
    fn onto(self, mut log: LogConfig) -> LogConfig {
        log.writer_type = self.writer_type.unwrap_or(log.writer_type);
        log.min_log_level = self.min_log_level.unwrap_or(log.min_log_level);
        log.rotation_policy = self.rotation_policy.or(log.rotation_policy);
        log
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum WriterType {
    Stdout,
    Stderr,
    File,
}

/// The original's levels.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Level {
    Trace,
    Debug,
    Info,
    Warning,
    Error,
}

impl Level {
    fn filter(self) -> tracing_subscriber::filter::LevelFilter {
        use tracing_subscriber::filter::LevelFilter;
        match self {
            Level::Trace => LevelFilter::TRACE,
            Level::Debug => LevelFilter::DEBUG,
            Level::Info => LevelFilter::INFO,
            Level::Warning => LevelFilter::WARN,
            Level::Error => LevelFilter::ERROR,
        }
    }
}

/// When a file is rotated (`rotationPeriodMilliseconds`, `maxSegmentSize`: at least one) and
/// which archives are kept (`maxSegmentCountToKeep`, `maxTotalSizeToKeep`: at least one).
#[derive(Debug, Clone, Default, PartialEq, Eq, Deserialize)]
#[serde(deny_unknown_fields, rename_all = "camelCase")]
pub struct RotationPolicy {
    #[serde(default)]
    pub rotation_period_milliseconds: u64,
    #[serde(default)]
    pub max_segment_size: ByteQuantity,
    #[serde(default)]
    pub max_total_size_to_keep: ByteQuantity,
    #[serde(default)]
    pub max_segment_count_to_keep: u64,
}

/// Bytes: an integer, or an exact quantity with an SI (`K`, `M`, ... `E`, powers of 1000) or
/// IEC (`Ki`, `Mi`, ..., powers of 1024) unit, optionally followed by `B` (`8Mi`, `1.5GB`).
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct ByteQuantity(pub u64);

impl<'de> Deserialize<'de> for ByteQuantity {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        #[derive(Deserialize)]
        #[serde(untagged)]
        enum Raw {
            Int(i64),
            Text(String),
        }
        let text = match Raw::deserialize(d)? {
            Raw::Int(n) => n.to_string(),
            Raw::Text(t) => t,
        };
        parse_bytes(&text)
            .map(ByteQuantity)
            .map_err(serde::de::Error::custom)
    }
}

/// Parses a byte quantity (see [`ByteQuantity`]); it must be positive whole bytes.
pub fn parse_bytes(text: &str) -> Result<u64, String> {
    let bad = || format!("invalid byte quantity {text:?}");
    let split = text
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let (whole, fraction) = number.split_once('.').unwrap_or((number, ""));
    if whole.is_empty() || (number.contains('.') && fraction.is_empty()) {
        return Err(bad());
    }
    let unit = unit.strip_suffix('B').unwrap_or(unit);
    let (unit, base) = match unit.strip_suffix('i') {
        Some(u) if !u.is_empty() => (u, 1024u128),
        Some(_) => return Err(bad()),
        None => (unit, 1000u128),
    };
    let power = match unit {
        "" => 0,
        u => "KMGTPE".find(u).filter(|_| u.len() == 1).ok_or_else(bad)? as u32 + 1,
    };
    if unit.is_empty() && base == 1024 {
        return Err(bad());
    }
    let digits = format!("{whole}{fraction}");
    let numerator: u128 = digits.parse().map_err(|_| bad())?;
    let denominator = 10u128.checked_pow(fraction.len() as u32).ok_or_else(bad)?;
    let value = numerator
        .checked_mul(base.pow(power))
        .ok_or_else(|| format!("byte quantity {text:?} is too large"))?;
    if value % denominator != 0
        || value / denominator == 0
        || value / denominator > i64::MAX as u128
    {
        return Err(format!(
            "byte quantity {text:?} must be positive whole bytes within int64"
        ));
    }
    Ok((value / denominator) as u64)
}

impl Default for LoggingConfig {
    /// The original's defaults: everything on stderr, server at debug, proxy at info.
    fn default() -> Self {
        LoggingConfig {
            directory: PathBuf::from(DEFAULT_DIRECTORY),
            server: LogConfig {
                writer_type: WriterType::Stderr,
                min_log_level: Level::Debug,
                rotation_policy: None,
            },
            proxy: LogConfig {
                writer_type: WriterType::Stderr,
                min_log_level: Level::Info,
                rotation_policy: None,
            },
            access_log: AccessLogConfig {
                enabled: true,
                writer_type: WriterType::Stderr,
                rotation_policy: None,
            },
        }
    }
}

impl LoggingConfig {
    /// Reads and validates the file.
    pub fn load(path: &Path) -> Result<LoggingConfig, String> {
        let text = std::fs::read_to_string(path).map_err(|e| format!("cannot read it: {e}"))?;
        LoggingConfig::parse(&text)
    }

    /// Parses and validates YAML text: unknown keys, null values, several documents and
    /// non-positive limits are refused, naming the key.
    pub fn parse(text: &str) -> Result<LoggingConfig, String> {
        let mut documents = serde_yaml_ng::Deserializer::from_str(text);
        let first = documents.next().ok_or("empty document")?;
        let value = serde_yaml_ng::Value::deserialize(first).map_err(|e| e.to_string())?;
        if documents.next().is_some() {
            return Err("multiple YAML documents".into());
        }
        if !value.is_mapping() {
            return Err("logging config must be a mapping".into());
        }
        check_nodes(&value, "")?;
        let raw: RawConfig = serde_yaml_ng::from_value(value).map_err(|e| e.to_string())?;
        let mut config = LoggingConfig::default();
        if let Some(directory) = raw.directory {
            config.directory = directory;
        }
        if let Some(server) = raw.server {
            config.server = server.onto(config.server);
        }
        if let Some(proxy) = raw.proxy {
            config.proxy = proxy.onto(config.proxy);
        }
        if let Some(access) = raw.access_log {
            let a = &mut config.access_log;
            a.enabled = access.enabled.unwrap_or(a.enabled);
            a.writer_type = access.writer_type.unwrap_or(a.writer_type);
            a.rotation_policy = access.rotation_policy.or(a.rotation_policy.take());
        }
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), String> {
        if !self.directory.is_absolute() {
            return Err(format!(
                "directory must be an absolute path, got {:?}",
                self.directory
            ));
        }
        for (name, writer, policy) in [
            (
                "server",
                self.server.writer_type,
                &self.server.rotation_policy,
            ),
            ("proxy", self.proxy.writer_type, &self.proxy.rotation_policy),
            (
                "accessLog",
                self.access_log.writer_type,
                &self.access_log.rotation_policy,
            ),
        ] {
            match (writer, policy) {
                (WriterType::File, None) => {
                    return Err(format!("{name}: file writer requires rotationPolicy"))
                }
                (WriterType::File, Some(p)) => {
                    if p.rotation_period_milliseconds == 0 && p.max_segment_size.0 == 0 {
                        return Err(format!(
                            "{name}.rotationPolicy: rotation requires period or size trigger \
                             (rotationPeriodMilliseconds or maxSegmentSize)"
                        ));
                    }
                    if p.max_total_size_to_keep.0 == 0 && p.max_segment_count_to_keep == 0 {
                        return Err(format!(
                            "{name}.rotationPolicy: rotation requires count or total retention \
                             limit (maxSegmentCountToKeep or maxTotalSizeToKeep)"
                        ));
                    }
                }
                (_, Some(_)) => return Err(format!("{name}: rotationPolicy requires file writer")),
                (_, None) => {}
            }
        }
        Ok(())
    }

    fn path(&self, file: &str) -> PathBuf {
        self.directory.join(file)
    }
}

/// Refuses null values (naming the key) and non-positive period/count limits, as the
/// original does before decoding.
fn check_nodes(value: &serde_yaml_ng::Value, prefix: &str) -> Result<(), String> {
    let Some(mapping) = value.as_mapping() else {
        return Ok(());
    };
    for (key, value) in mapping {
        let key = key.as_str().unwrap_or("?");
        let path = if prefix.is_empty() {
            key.to_string()
        } else {
            format!("{prefix}.{key}")
        };
        if value.is_null() {
            return Err(format!("logging config {path} cannot be null"));
        }
        if matches!(key, "rotationPeriodMilliseconds" | "maxSegmentCountToKeep")
            && value.as_i64().is_none_or(|n| n <= 0)
        {
            return Err(format!("{path} must be a positive integer"));
        }
        check_nodes(value, &path)?;
    }
    Ok(())
}

/// A log file that rotates by its policy. Writes go to a buffer, written out when it fills
/// and by [`RotatingFile::tick`] (every second); size is checked on each write, the period on
/// each tick.
pub struct RotatingFile {
    path: PathBuf,
    policy: RotationPolicy,
    state: Mutex<FileState>,
}

struct FileState {
    out: BufWriter<File>,
    /// Bytes in the current segment (written and buffered).
    size: u64,
    since: Instant,
}

fn open_append(path: &Path) -> io::Result<File> {
    OpenOptions::new().create(true).append(true).open(path)
}

impl RotatingFile {
    /// Opens (appends to) `path`, pruning old archives by the policy.
    pub fn open(path: PathBuf, policy: RotationPolicy) -> io::Result<RotatingFile> {
        let file = open_append(&path)?;
        let size = file.metadata()?.len();
        let since = file
            .metadata()
            .ok()
            .and_then(|m| m.modified().ok())
            .and_then(|t| SystemTime::now().duration_since(t).ok())
            .and_then(|age| Instant::now().checked_sub(age))
            .unwrap_or_else(Instant::now);
        let rotating = RotatingFile {
            path,
            policy,
            state: Mutex::new(FileState {
                out: BufWriter::with_capacity(FILE_BUFFER, file),
                size,
                since,
            }),
        };
        rotating.prune()?;
        Ok(rotating)
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, FileState> {
        self.state.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn write_line(&self, line: &[u8]) -> io::Result<()> {
        let mut state = self.lock();
        state.out.write_all(line)?;
        state.size += line.len() as u64;
        let limit = self.policy.max_segment_size.0;
        if limit > 0 && state.size >= limit {
            self.rotate(&mut state)?;
        }
        Ok(())
    }

    /// Writes the buffer out and rotates when the period has passed.
    pub fn tick(&self) -> io::Result<()> {
        let mut state = self.lock();
        state.out.flush()?;
        let period = self.policy.rotation_period_milliseconds;
        if period > 0 && state.size > 0 && state.since.elapsed() >= Duration::from_millis(period) {
            self.rotate(&mut state)?;
        }
        Ok(())
    }

    fn rotate(&self, state: &mut FileState) -> io::Result<()> {
        state.out.flush()?;
        let archive = self.archive_name()?;
        std::fs::rename(&self.path, &archive)?;
        state.out = BufWriter::with_capacity(FILE_BUFFER, open_append(&self.path)?);
        state.size = 0;
        state.since = Instant::now();
        if let Err(e) = self.prune() {
            eprintln!("task-proxy logging: prune {}: {e}", self.path.display());
        }
        Ok(())
    }

    /// `<file>.<YYYYMMDDTHHMMSS.nnnnnnnnnZ>.<16 hex>`, later than every existing archive.
    fn archive_name(&self) -> io::Result<PathBuf> {
        let now = SystemTime::now()
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        let mut stamp = utc_stamp(now);
        if let Some(latest) = self.archives()?.last() {
            let name = latest.0.file_name().and_then(|n| n.to_str()).unwrap_or("");
            let previous = &name[self.base_name().len() + 1..][..STAMP_LEN];
            if stamp.as_str() <= previous {
                // Keep names in time order (clock steps back, many rotations a nanosecond).
                stamp = bump_stamp(previous);
            }
        }
        let suffix: u64 = rand::random();
        Ok(self
            .path
            .with_file_name(format!("{}.{stamp}.{suffix:016x}", self.base_name())))
    }

    fn base_name(&self) -> &str {
        self.path.file_name().and_then(|n| n.to_str()).unwrap_or("")
    }

    /// This file's archives with their sizes, oldest first.
    pub fn archives(&self) -> io::Result<Vec<(PathBuf, u64)>> {
        let directory = self.path.parent().unwrap_or(Path::new("."));
        let prefix = format!("{}.", self.base_name());
        let mut archives = Vec::new();
        for entry in std::fs::read_dir(directory)? {
            let entry = entry?;
            let name = entry.file_name();
            let Some(rest) = name.to_str().and_then(|n| n.strip_prefix(&prefix)) else {
                continue;
            };
            if !is_archive_suffix(rest) {
                continue;
            }
            let meta = entry.metadata()?;
            if meta.is_file() {
                archives.push((entry.path(), meta.len()));
            }
        }
        archives.sort();
        Ok(archives)
    }

    fn prune(&self) -> io::Result<()> {
        let archives = self.archives()?;
        let mut count = archives.len() as u64;
        let mut total: u64 = archives.iter().map(|a| a.1).sum();
        let (max_count, max_total) = (
            self.policy.max_segment_count_to_keep,
            self.policy.max_total_size_to_keep.0,
        );
        for (path, size) in archives {
            let over = (max_count > 0 && count > max_count) || (max_total > 0 && total > max_total);
            if !over {
                break;
            }
            std::fs::remove_file(path)?;
            count -= 1;
            total -= size;
        }
        Ok(())
    }

    /// Writes the buffer out.
    pub fn flush(&self) -> io::Result<()> {
        self.lock().out.flush()
    }
}

const STAMP_LEN: usize = "20060102T150405.000000000Z".len();

fn is_archive_suffix(rest: &str) -> bool {
    let b = rest.as_bytes();
    b.len() == STAMP_LEN + 17
        && b[..8].iter().all(u8::is_ascii_digit)
        && b[8] == b'T'
        && b[9..15].iter().all(u8::is_ascii_digit)
        && b[15] == b'.'
        && b[16..25].iter().all(u8::is_ascii_digit)
        && b[25] == b'Z'
        && b[26] == b'.'
        && b[27..]
            .iter()
            .all(|c| c.is_ascii_digit() || (b'a'..=b'f').contains(c))
}

/// UTC `YYYYMMDDTHHMMSS.nnnnnnnnnZ` of a time since the epoch.
fn utc_stamp(since_epoch: Duration) -> String {
    let secs = since_epoch.as_secs();
    let (days, rest) = (secs / 86_400, secs % 86_400);
    let (year, month, day) = yt_client::time::civil_from_days(days as i64);
    format!(
        "{year:04}{month:02}{day:02}T{:02}{:02}{:02}.{:09}Z",
        rest / 3600,
        rest % 3600 / 60,
        rest % 60,
        since_epoch.subsec_nanos()
    )
}

/// The stamp one nanosecond after `previous` (only the nanoseconds are bumped; at their
/// maximum the stamp is kept and the random suffix orders the names).
fn bump_stamp(previous: &str) -> String {
    let nanos: u64 = previous[16..25].parse().unwrap_or(0);
    if nanos >= 999_999_999 {
        return previous.to_string();
    }
    format!("{}{:09}Z", &previous[..16], nanos + 1)
}

/// The writer of one event: tracing's formatter writes each event with one `write_all`, so a
/// file sees whole lines (no allocation per line).
pub enum SinkWriter<'a> {
    Stdout(io::Stdout),
    Stderr(io::Stderr),
    File(&'a RotatingFile),
}

impl Write for SinkWriter<'_> {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            SinkWriter::Stdout(out) => out.write(buf),
            SinkWriter::Stderr(err) => err.write(buf),
            SinkWriter::File(file) => file.write_line(buf).map(|()| buf.len()),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            SinkWriter::Stdout(out) => out.write_all(buf),
            SinkWriter::Stderr(err) => err.write_all(buf),
            SinkWriter::File(file) => file.write_line(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            SinkWriter::Stdout(out) => out.flush(),
            SinkWriter::Stderr(err) => err.flush(),
            SinkWriter::File(_) => Ok(()),
        }
    }
}

/// The writer of one log stream.
#[derive(Clone)]
pub enum Sink {
    Stdout,
    Stderr,
    File(Arc<RotatingFile>),
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for Sink {
    type Writer = SinkWriter<'a>;
    fn make_writer(&'a self) -> Self::Writer {
        match self {
            Sink::Stdout => SinkWriter::Stdout(io::stdout()),
            Sink::Stderr => SinkWriter::Stderr(io::stderr()),
            Sink::File(file) => SinkWriter::File(file),
        }
    }
}

/// Keeps the file writers and the access log's writer thread; dropping it writes out the
/// queued access lines, then the files' buffers.
pub struct LoggingGuard {
    files: Vec<Arc<RotatingFile>>,
    access: Option<WorkerGuard>,
}

impl Drop for LoggingGuard {
    fn drop(&mut self) {
        // The writer thread drains its queue into the files first.
        drop(self.access.take());
        for file in &self.files {
            let _ = file.flush();
        }
    }
}

impl LoggingConfig {
    /// Opens the writers (creating `directory` when a file is written) and starts the thread
    /// that writes buffers out and rotates by period.
    pub fn open_sinks(&self) -> io::Result<(Sink, Sink, Option<Sink>, LoggingGuard)> {
        let mut files = Vec::new();
        let mut sink = |writer: WriterType, policy: &Option<RotationPolicy>, name: &str| {
            Ok::<_, io::Error>(match writer {
                WriterType::Stdout => Sink::Stdout,
                WriterType::Stderr => Sink::Stderr,
                WriterType::File => {
                    std::fs::create_dir_all(&self.directory).map_err(|e| {
                        io::Error::new(
                            e.kind(),
                            format!("cannot create {}: {e}", self.directory.display()),
                        )
                    })?;
                    let path = self.path(name);
                    let file = RotatingFile::open(path.clone(), policy.clone().unwrap_or_default())
                        .map_err(|e| {
                            io::Error::new(e.kind(), format!("cannot open {}: {e}", path.display()))
                        })?;
                    let file = Arc::new(file);
                    files.push(file.clone());
                    Sink::File(file)
                }
            })
        };
        let server = sink(
            self.server.writer_type,
            &self.server.rotation_policy,
            "server.log",
        )?;
        let proxy = sink(
            self.proxy.writer_type,
            &self.proxy.rotation_policy,
            "envoy.log",
        )?;
        let access = if self.access_log.enabled {
            Some(sink(
                self.access_log.writer_type,
                &self.access_log.rotation_policy,
                "access.log",
            )?)
        } else {
            None
        };
        if !files.is_empty() {
            let weak: Vec<Weak<RotatingFile>> = files.iter().map(Arc::downgrade).collect();
            std::thread::Builder::new()
                .name("task-proxy-logs".into())
                .spawn(move || loop {
                    std::thread::sleep(Duration::from_secs(1));
                    let mut alive = false;
                    for file in weak.iter().filter_map(Weak::upgrade) {
                        alive = true;
                        if let Err(e) = file.tick() {
                            eprintln!("task-proxy logging: {}: {e}", file.path.display());
                        }
                    }
                    if !alive {
                        return;
                    }
                })?;
        }
        Ok((
            server,
            proxy,
            access,
            LoggingGuard {
                files,
                access: None,
            },
        ))
    }

    /// Installs the global subscriber: server, proxy and access streams with their writers
    /// and levels; `json` formats lines as JSON objects.
    pub fn install(&self, json: bool) -> io::Result<LoggingGuard> {
        use tracing_subscriber::filter::{LevelFilter, Targets};
        use tracing_subscriber::prelude::*;
        let (server, proxy, access, mut guard) = self.open_sinks()?;
        let access = access.map(|sink| {
            let (writer, worker) = access_writer(sink);
            guard.access = Some(worker);
            writer
        });
        const ACCESS: &str = ACCESS_TARGET;
        const PROXY_TARGETS: [&str; 4] = ["task_proxy::proxy", "hyper", "h2", "rustls"];
        let mut server_filter = Targets::new()
            .with_default(self.server.min_log_level.filter())
            .with_target(ACCESS, LevelFilter::OFF);
        let mut proxy_filter = Targets::new().with_default(LevelFilter::OFF);
        for target in PROXY_TARGETS {
            server_filter = server_filter.with_target(target, LevelFilter::OFF);
            proxy_filter = proxy_filter.with_target(target, self.proxy.min_log_level.filter());
        }
        let access_filter = Targets::new().with_target(
            ACCESS,
            if access.is_some() {
                LevelFilter::INFO
            } else {
                LevelFilter::OFF
            },
        );
        let ansi = false;
        macro_rules! layer {
            ($sink:expr, $filter:expr) => {
                if json {
                    tracing_subscriber::fmt::layer()
                        .json()
                        .flatten_event(true)
                        .with_writer($sink)
                        .with_filter($filter)
                        .boxed()
                } else {
                    tracing_subscriber::fmt::layer()
                        .with_ansi(ansi)
                        .with_writer($sink)
                        .with_filter($filter)
                        .boxed()
                }
            };
        }
        let mut layers = vec![layer!(server, server_filter), layer!(proxy, proxy_filter)];
        if let Some(access) = access {
            layers.push(layer!(access, access_filter));
        }
        tracing_subscriber::registry()
            .with(layers)
            .try_init()
            .map_err(|e| io::Error::other(e.to_string()))?;
        Ok(guard)
    }
}

/// What the access log's writer thread writes to: the stream or file of `accessLog`. Standard
/// streams are buffered here and written once per batch (the thread flushes after draining
/// its queue); the file buffers itself and rotates on the writer thread.
enum AccessOut {
    Stdout(BufWriter<io::Stdout>),
    Stderr(BufWriter<io::Stderr>),
    File(Arc<RotatingFile>),
}

impl Write for AccessOut {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.write_all(buf).map(|()| buf.len())
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            AccessOut::Stdout(out) => out.write_all(buf),
            AccessOut::Stderr(err) => err.write_all(buf),
            AccessOut::File(file) => file.write_line(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            AccessOut::Stdout(out) => out.flush(),
            AccessOut::Stderr(err) => err.flush(),
            AccessOut::File(file) => file.flush(),
        }
    }
}

/// The drop counters of every access writer started in this process.
fn access_counters() -> &'static Mutex<Vec<ErrorCounter>> {
    static COUNTERS: OnceLock<Mutex<Vec<ErrorCounter>>> = OnceLock::new();
    COUNTERS.get_or_init(Default::default)
}

/// Access lines dropped so far because their writer fell [`ACCESS_QUEUE_LINES`] behind.
pub fn access_lines_dropped() -> u64 {
    access_counters()
        .lock()
        .map(|counters| counters.iter().map(|c| c.dropped_lines() as u64).sum())
        .unwrap_or(0)
}

/// The access log's writer over `sink`: a bounded queue and the thread that drains it (it
/// stops, after writing what is queued, when the guard is dropped).
pub fn access_writer(sink: Sink) -> (NonBlocking, WorkerGuard) {
    access_writer_to(
        match sink {
            Sink::Stdout => AccessOut::Stdout(BufWriter::with_capacity(FILE_BUFFER, io::stdout())),
            Sink::Stderr => AccessOut::Stderr(BufWriter::with_capacity(FILE_BUFFER, io::stderr())),
            Sink::File(file) => AccessOut::File(file),
        },
        ACCESS_QUEUE_LINES,
    )
}

fn access_writer_to<W: Write + Send + 'static>(
    out: W,
    queue_lines: usize,
) -> (NonBlocking, WorkerGuard) {
    let (writer, worker) = NonBlockingBuilder::default()
        .lossy(true)
        .buffered_lines_limit(queue_lines)
        .thread_name("task-proxy-access-log")
        .finish(out);
    if let Ok(mut counters) = access_counters().lock() {
        counters.push(writer.error_counter());
    }
    (writer, worker)
}

/// The writer of the default logging (no `--logging-config`): everything on stderr, the
/// access lines through the access log's queue so that they never block a worker either.
#[derive(Clone)]
pub struct DefaultWriter {
    access: NonBlocking,
}

impl DefaultWriter {
    /// The writer and the guard that keeps its access writer thread.
    pub fn stderr() -> (DefaultWriter, LoggingGuard) {
        let (access, worker) = access_writer(Sink::Stderr);
        (
            DefaultWriter { access },
            LoggingGuard {
                files: Vec::new(),
                access: Some(worker),
            },
        )
    }
}

/// One event's writer under [`DefaultWriter`].
pub enum DefaultEventWriter {
    Stderr(io::Stderr),
    Access(NonBlocking),
}

impl Write for DefaultEventWriter {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        match self {
            DefaultEventWriter::Stderr(err) => err.write(buf),
            DefaultEventWriter::Access(access) => access.write(buf),
        }
    }
    fn write_all(&mut self, buf: &[u8]) -> io::Result<()> {
        match self {
            DefaultEventWriter::Stderr(err) => err.write_all(buf),
            DefaultEventWriter::Access(access) => access.write_all(buf),
        }
    }
    fn flush(&mut self) -> io::Result<()> {
        match self {
            DefaultEventWriter::Stderr(err) => err.flush(),
            DefaultEventWriter::Access(access) => access.flush(),
        }
    }
}

impl<'a> tracing_subscriber::fmt::MakeWriter<'a> for DefaultWriter {
    type Writer = DefaultEventWriter;
    fn make_writer(&'a self) -> Self::Writer {
        DefaultEventWriter::Stderr(io::stderr())
    }
    fn make_writer_for(&'a self, meta: &tracing::Metadata<'_>) -> Self::Writer {
        if meta.target() == ACCESS_TARGET {
            DefaultEventWriter::Access(self.access.clone())
        } else {
            DefaultEventWriter::Stderr(io::stderr())
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn byte_quantities() {
        assert_eq!(parse_bytes("100"), Ok(100));
        assert_eq!(parse_bytes("8Mi"), Ok(8 << 20));
        assert_eq!(parse_bytes("8MiB"), Ok(8 << 20));
        assert_eq!(parse_bytes("1K"), Ok(1000));
        assert_eq!(parse_bytes("1.5KB"), Ok(1500));
        assert_eq!(parse_bytes("1Gi"), Ok(1 << 30));
        assert!(parse_bytes("0").is_err());
        assert!(parse_bytes("1.0001K").is_err());
        assert!(parse_bytes("-1").is_err());
        assert!(parse_bytes("1X").is_err());
        assert!(parse_bytes("1i").is_err());
    }

    #[test]
    fn defaults_and_full_config() {
        let c = LoggingConfig::parse("server:\n  writerType: stdout\n").unwrap();
        assert_eq!(c.directory, PathBuf::from(DEFAULT_DIRECTORY));
        assert_eq!(c.server.writer_type, WriterType::Stdout);
        assert_eq!(c.proxy, LoggingConfig::default().proxy);
        assert!(c.access_log.enabled);
        let c = LoggingConfig::parse(
            "directory: /tmp/x\nserver:\n  writerType: file\n  minLogLevel: warning\n  \
             rotationPolicy:\n    maxSegmentSize: 8Mi\n    maxSegmentCountToKeep: 3\n\
             accessLog:\n  enabled: false\n",
        )
        .unwrap();
        assert_eq!(c.server.min_log_level, Level::Warning);
        let p = c.server.rotation_policy.unwrap();
        assert_eq!(p.max_segment_size, ByteQuantity(8 << 20));
        assert_eq!(p.max_segment_count_to_keep, 3);
        assert!(!c.access_log.enabled);
    }

    #[test]
    fn refusals_name_the_key() {
        for (yaml, wanted) in [
            ("server:\n  writerTyp: file\n", "writerTyp"),
            ("bogus: 1\n", "bogus"),
            ("server: null\n", "server cannot be null"),
            ("directory: logs\n", "absolute"),
            ("server:\n  writerType: file\n", "requires rotationPolicy"),
            ("server:\n  writerType: bad\n", "bad"),
            ("proxy:\n  minLogLevel: warn\n", "warn"),
            (
                "server:\n  writerType: file\n  rotationPolicy:\n    maxSegmentSize: 1Mi\n",
                "retention",
            ),
            (
                "server:\n  writerType: file\n  rotationPolicy:\n    maxSegmentCountToKeep: 2\n",
                "trigger",
            ),
            (
                "server:\n  writerType: file\n  rotationPolicy:\n    rotationPeriodMilliseconds: 0\n    maxSegmentCountToKeep: 2\n",
                "rotationPeriodMilliseconds must be a positive integer",
            ),
            (
                "server:\n  rotationPolicy:\n    maxSegmentSize: 1Mi\n    maxSegmentCountToKeep: 2\n",
                "requires file writer",
            ),
            ("a: 1\n---\nb: 2\n", "multiple"),
        ] {
            let error = LoggingConfig::parse(yaml).unwrap_err();
            assert!(error.contains(wanted), "{yaml:?}: {error}");
        }
    }

    #[test]
    fn stamps_are_utc_and_ordered() {
        assert_eq!(
            utc_stamp(Duration::new(1_700_000_000, 5)),
            "20231114T221320.000000005Z"
        );
        assert_eq!(utc_stamp(Duration::ZERO), "19700101T000000.000000000Z");
        assert!(is_archive_suffix(
            "20231114T221320.000000005Z.0123456789abcdef"
        ));
        assert_eq!(
            bump_stamp("20231114T221320.000000005Z"),
            "20231114T221320.000000006Z"
        );
    }

    #[test]
    fn size_rotation_keeps_count() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("access.log");
        let policy = RotationPolicy {
            max_segment_size: ByteQuantity(100),
            max_segment_count_to_keep: 2,
            ..RotationPolicy::default()
        };
        let file = RotatingFile::open(path.clone(), policy).unwrap();
        for i in 0..50 {
            file.write_line(format!("line {i:04} ..............\n").as_bytes())
                .unwrap();
        }
        file.flush().unwrap();
        let archives = file.archives().unwrap();
        assert_eq!(archives.len(), 2, "{archives:?}");
        for (_, size) in &archives {
            assert!(*size >= 100 && *size < 130, "{size}");
        }
        let last = std::fs::read_to_string(&path).unwrap();
        assert!(last.ends_with("line 0049 ..............\n"));
    }

    #[test]
    fn period_rotation_on_tick() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("server.log");
        let policy = RotationPolicy {
            rotation_period_milliseconds: 1,
            max_total_size_to_keep: ByteQuantity(1 << 20),
            ..RotationPolicy::default()
        };
        let file = RotatingFile::open(path.clone(), policy).unwrap();
        file.tick().unwrap();
        assert!(
            file.archives().unwrap().is_empty(),
            "an empty file is not rotated"
        );
        file.write_line(b"one\n").unwrap();
        std::thread::sleep(Duration::from_millis(5));
        file.tick().unwrap();
        file.write_line(b"two\n").unwrap();
        file.flush().unwrap();
        let archives = file.archives().unwrap();
        assert_eq!(archives.len(), 1);
        assert_eq!(std::fs::read_to_string(&archives[0].0).unwrap(), "one\n");
        assert_eq!(std::fs::read_to_string(&path).unwrap(), "two\n");
    }

    /// A writer that blocks until released, as a full disk or an unread stdout does.
    struct Blocked(std::sync::mpsc::Receiver<()>, Arc<Mutex<Vec<u8>>>);

    impl Write for Blocked {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let _ = self.0.recv();
            self.1.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    #[test]
    fn a_blocked_access_writer_drops_and_counts_without_waiting() {
        let (release, blocked) = std::sync::mpsc::channel();
        let written = Arc::new(Mutex::new(Vec::new()));
        let (mut writer, worker) = access_writer_to(Blocked(blocked, written.clone()), 8);
        let counter = writer.error_counter();
        let started = Instant::now();
        for i in 0..1000 {
            writer.write_all(format!("line {i}\n").as_bytes()).unwrap();
        }
        assert!(
            started.elapsed() < Duration::from_secs(1),
            "writing waited for the blocked writer: {:?}",
            started.elapsed()
        );
        // At most the queue and the line in the writer's hands are kept.
        let dropped = counter.dropped_lines();
        assert!((1000 - 9..=1000 - 8).contains(&dropped), "{dropped}");
        assert!(access_lines_dropped() >= dropped as u64);
        for _ in 0..1000 {
            let _ = release.send(());
        }
        drop(worker);
        let written = String::from_utf8(written.lock().unwrap().clone()).unwrap();
        assert!(written.starts_with("line 0\n"), "{written}");
        assert_eq!(written.lines().count(), 1000 - dropped);
    }
}
