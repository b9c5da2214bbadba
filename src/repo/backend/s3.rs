//! A repository in S3-compatible object storage (Garage, MinIO, Ceph, a
//! cloud), named `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`.
//!
//! Requests go through opendal's S3 service (SigV4 signing, retries with
//! backoff and jitter, a crc32c checksum the store checks on every PUT)
//! and its blocking API over a private tokio runtime: the rest of platter
//! stays synchronous. Addressing is path-style, as custom endpoints need.
//! Credentials come from `AWS_ACCESS_KEY_ID` and `AWS_SECRET_ACCESS_KEY`
//! (and the region from `AWS_REGION` or `AWS_DEFAULT_REGION`, default
//! `us-east-1`); nothing is read from ~/.aws and nothing is ever printed.
//! A failed TLS handshake is not retried (it fails alike every time) and is
//! named as such; `init` alone creates a missing bucket (see `bucket`).
//!
//! How the guarantees of `Backend` are kept: a file is one object, written
//! by one PUT at `commit` (an object store never shows a partial one, and
//! a writer that is dropped sends nothing); listings always end the prefix
//! with `/`, so a repository never sees another whose prefix begins like
//! its own. `write_new` looks before it writes: S3 stores such as Garage
//! 2.5 ignore conditional writes (If-None-Match), so two `init`s of one
//! place at the same moment could both write a config; `init` reads the
//! config back and fails if another one won.

use std::io::{self, Write};
use std::path::Path;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, OnceLock};
use std::time::Duration;

use opendal::blocking::Operator;
use opendal::layers::{RetryLayer, TimeoutLayer};
use opendal::options::{ListOptions, ReadOptions};

use super::{Backend, NewFile, StoredFile};
use crate::error::{Error, Result};
use crate::interrupt::Registration;

mod bucket;

/// Where a repository lies in object storage.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct S3Location {
    /// `http(s)://host[:port]`.
    pub endpoint: String,
    pub bucket: String,
    /// The repository's folder in the bucket, without slashes at either
    /// end; empty for the whole bucket.
    pub prefix: String,
}

/// The scheme that names an S3 repository.
pub const SCHEME: &str = "s3:";

impl S3Location {
    /// Reads `s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX]`. The path is taken
    /// as it is written, so what a URL would read otherwise is refused: a
    /// query or fragment (`?`, `#`), percent-escapes, empty segments (`//`,
    /// which S3 would keep in every key), `.` and `..`, control characters
    /// and backslashes; and a prefix so long that platter's longest object
    /// key under it would pass `MAX_KEY_LEN`.
    pub fn parse(text: &str) -> Result<S3Location> {
        let bad = |why: &str| {
            Error::bad_input(format!("{text:?} is not an S3 repository: {why}")).hint(
                "write it as s3:http(s)://HOST[:PORT]/BUCKET[/PREFIX], e.g. \
                 s3:https://s3.example.com/backups/laptop",
            )
        };
        let url = text
            .strip_prefix(SCHEME)
            .ok_or_else(|| bad("it does not begin with s3:"))?;
        let (scheme, rest) = url
            .split_once("://")
            .filter(|(scheme, _)| matches!(*scheme, "http" | "https"))
            .ok_or_else(|| bad("the endpoint must begin with http:// or https://"))?;
        if let Some(c) = rest.chars().find(|c| matches!(c, '?' | '#')) {
            return Err(bad(&format!(
                "it holds {c:?}: an S3 repository's URL has no query or fragment, and the \
                 prefix is taken as written, so {c:?} would become part of every object's name"
            )));
        }
        if rest.contains('%') {
            return Err(bad(
                "it holds '%': the prefix is taken as written, not percent-decoded; write \
                 its characters as they are",
            ));
        }
        let (host, path) = rest.split_once('/').unwrap_or((rest, ""));
        if host.is_empty() || host.contains('@') {
            return Err(bad("it names no host"));
        }
        if let Some((_, port)) = host.rsplit_once(':').filter(|_| !host.ends_with(']'))
            && port.parse::<u16>().is_err()
        {
            return Err(bad("its port is not a number from 0 to 65535"));
        }
        // One slash at the end is how folders are often written.
        let path = path.strip_suffix('/').unwrap_or(path);
        let mut parts = path.split('/');
        let bucket = parts
            .next()
            .filter(|b| !b.is_empty())
            .ok_or_else(|| bad("it names no bucket"))?;
        let prefix: Vec<&str> = parts.collect();
        if prefix.iter().any(|p| p.is_empty()) {
            return Err(bad(
                "its path has an empty segment (//): S3 would keep it in every object's name",
            ));
        }
        let printable = |p: &&str| p.chars().all(|c| !c.is_control() && c != '\\');
        if !printable(&bucket) || !prefix.iter().all(printable) {
            return Err(bad("it holds control characters or backslashes"));
        }
        if prefix.iter().any(|p| *p == "." || *p == "..") {
            return Err(bad("its path holds . or .."));
        }
        let prefix = prefix.join("/");
        let longest = prefix.len() + 1 + crate::repo::names::longest_name();
        if !prefix.is_empty() && longest > MAX_KEY_LEN {
            return Err(bad(&format!(
                "its prefix is {} bytes long, and object keys under it would reach {longest} \
                 bytes: platter keeps them to {MAX_KEY_LEN} (S3 allows 1024, Garage with its \
                 default database {MAX_KEY_LEN})",
                prefix.len()
            ))
            .hint(format!(
                "use a prefix of at most {} bytes",
                MAX_KEY_LEN - 1 - crate::repo::names::longest_name()
            )));
        }
        Ok(S3Location {
            endpoint: format!("{scheme}://{host}"),
            bucket: bucket.to_string(),
            prefix,
        })
    }
}

/// The longest object key platter writes, in bytes (of UTF-8). S3 allows
/// 1024, but Garage with its default engine (LMDB, whose keys are at most
/// 511 bytes, of which the bucket takes 32) fails longer ones than this
/// with a 503 that looks like a passing fault ("MDB_BAD_VALSIZE"): the
/// lowest limit among the stores platter is tested on.
const MAX_KEY_LEN: usize = 479;

impl std::fmt::Display for S3Location {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "{SCHEME}{}/{}", self.endpoint, self.bucket)?;
        if !self.prefix.is_empty() {
            write!(f, "/{}", self.prefix)?;
        }
        Ok(())
    }
}

/// An access key, its secret and the region to sign for.
struct Credentials {
    key: String,
    secret: zeroize::Zeroizing<String>,
    region: String,
}

const DEFAULT_REGION: &str = "us-east-1";

impl Credentials {
    fn from_env(location: &S3Location) -> Result<Credentials> {
        let var = |name: &str| std::env::var(name).ok().filter(|v| !v.is_empty());
        let (Some(key), Some(secret)) = (var("AWS_ACCESS_KEY_ID"), var("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(Error::bad_input(format!(
                "no credentials for {location}: AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY \
                 are not set"
            ))
            .hint("export them (and AWS_REGION if the store's region is not us-east-1)"));
        };
        Ok(Credentials {
            key,
            secret: secret.into(),
            region: var("AWS_REGION")
                .or_else(|| var("AWS_DEFAULT_REGION"))
                .unwrap_or_else(|| DEFAULT_REGION.into()),
        })
    }

    /// Reads `NAME=value` lines (`export ` and `#` comments allowed) naming
    /// AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY and optionally AWS_REGION:
    /// for a second repository whose store wants other credentials. A file
    /// others may read is refused: it holds a secret.
    fn from_file(file: &Path) -> Result<Credentials> {
        use std::os::unix::fs::PermissionsExt;
        let meta = std::fs::metadata(file).map_err(|e| Error::io("read", file, e))?;
        // A FIFO or a device would block or read forever.
        if !meta.is_file() {
            return Err(Error::bad_input(format!(
                "{} is not a regular file: a credentials file is one",
                file.display()
            )));
        }
        if meta.permissions().mode() & 0o077 != 0 {
            return Err(Error::bad_input(format!(
                "{} may be read by others, and it holds a secret key",
                file.display()
            ))
            .hint(format!("chmod 600 {}", file.display())));
        }
        if meta.len() > 64 * 1024 {
            return Err(Error::bad_input(format!(
                "{} is too large to be a credentials file",
                file.display()
            )));
        }
        let text = zeroize::Zeroizing::new(
            std::fs::read_to_string(file).map_err(|e| Error::io("read", file, e))?,
        );
        let value = |name: &str| {
            text.lines()
                .map(|l| l.trim())
                .map(|l| l.strip_prefix("export ").unwrap_or(l))
                .filter(|l| !l.starts_with('#'))
                .find_map(|l| l.strip_prefix(name)?.strip_prefix('='))
                .map(|v| v.trim().trim_matches('"').to_string())
                .filter(|v| !v.is_empty())
        };
        let (Some(key), Some(secret)) =
            (value("AWS_ACCESS_KEY_ID"), value("AWS_SECRET_ACCESS_KEY"))
        else {
            return Err(Error::bad_input(format!(
                "{} does not name AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY",
                file.display()
            ))
            .hint("write one NAME=value per line: AWS_ACCESS_KEY_ID, AWS_SECRET_ACCESS_KEY, and AWS_REGION if needed"));
        };
        Ok(Credentials {
            key,
            secret: secret.into(),
            region: value("AWS_REGION").unwrap_or_else(|| DEFAULT_REGION.into()),
        })
    }
}

/// The runtime opendal's requests run on; platter's threads block on it.
fn runtime() -> Result<&'static tokio::runtime::Runtime> {
    static RUNTIME: OnceLock<std::result::Result<tokio::runtime::Runtime, String>> =
        OnceLock::new();
    RUNTIME
        .get_or_init(|| {
            tokio::runtime::Builder::new_multi_thread()
                .worker_threads(2)
                .enable_all()
                .build()
                .map_err(|e| e.to_string())
        })
        .as_ref()
        .map_err(|e| Error::internal(format!("cannot start the S3 client's runtime: {e}")))
}

/// Attempts per request: transient errors (503, timeouts, a reset
/// connection) are retried with backoff (0.5 s, doubling to 8 s) and
/// jitter, so a request gives up after about `RETRY_SPAN` of failures.
const ATTEMPTS: usize = 5;
const RETRY_SPAN: Duration = Duration::from_millis(500 + 1000 + 2000 + 4000 + 8000);
/// One attempt of one request.
const ATTEMPT_TIMEOUT: Duration = Duration::from_secs(60);

pub struct S3Backend {
    /// Rooted at the repository's prefix.
    op: Operator,
    /// Set once a request failed for want of the store (its retries
    /// spent): later requests of this command fail at once, so a command
    /// gives up after one request's retries, not after each one's.
    down: Arc<AtomicBool>,
    /// Requests in flight at once.
    connections: usize,
    /// Rooted at the bucket: for what lies above the prefix.
    bucket: Operator,
    /// For `init` in a bucket that does not exist yet.
    maker: bucket::BucketMaker,
    location: S3Location,
}

impl S3Backend {
    /// A client for `location` with `credentials` (the environment's
    /// when `None`), for up to `connections` requests at once.
    pub fn open(
        location: &S3Location,
        connections: usize,
        credentials: Option<&Path>,
    ) -> Result<S3Backend> {
        let Credentials {
            key,
            secret,
            region,
        } = match credentials {
            Some(file) => Credentials::from_file(file)?,
            None => Credentials::from_env(location)?,
        };
        opendal::install_default();
        let failed = |e: opendal::Error| {
            Error::bad_input(format!("cannot set up the S3 client for {location}: {e}"))
        };
        let transport =
            opendal::HttpTransporter::new(TlsFailuresAreFinal(http_transport(location)?));
        let operator = |root: &str| -> Result<Operator> {
            let builder = opendal::services::S3::default()
                .endpoint(&location.endpoint)
                .bucket(&location.bucket)
                .region(&region)
                .root(root)
                .access_key_id(&key)
                .secret_access_key(&secret)
                .disable_config_load()
                .disable_ec2_metadata()
                .checksum_algorithm("crc32c");
            let op = opendal::Operator::new(builder).map_err(failed)?;
            let context = op.base_context().with_http_transport(transport.clone());
            // Timeout inside, retries outside: each attempt has its own limit.
            let op = op
                .with_context(context)
                .layer(TimeoutLayer::new().with_timeout(ATTEMPT_TIMEOUT))
                .layer(
                    RetryLayer::new()
                        .with_max_times(ATTEMPTS)
                        .with_min_delay(Duration::from_millis(500))
                        .with_max_delay(Duration::from_secs(8))
                        .with_jitter(),
                );
            let _guard = runtime()?.enter();
            Operator::new(op).map_err(failed)
        };
        let op = if location.prefix.is_empty() {
            operator("/")?
        } else {
            operator(&format!("/{}/", location.prefix))?
        };
        let bucket = operator("/")?;
        Ok(S3Backend {
            op,
            down: Arc::default(),
            connections: connections.max(1),
            bucket,
            maker: bucket::BucketMaker::new(&key, &secret, &region, transport),
            location: location.clone(),
        })
    }

    /// The entries of one listing of `path` (which ends with `/`, or is
    /// empty for the whole repository); `dir` names it in errors.
    fn entries(&self, path: &str, dir: &str) -> Result<Vec<opendal::Entry>> {
        check_up(&self.location, &self.down)?;
        let options = ListOptions {
            recursive: false,
            ..ListOptions::default()
        };
        match self.op.list_options(path, options) {
            Ok(entries) => Ok(entries),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(Vec::new()),
            Err(e) => Err(self.error("list", dir, e)),
        }
    }

    fn error(&self, what: &str, name: &str, e: opendal::Error) -> Error {
        self.error_on(what, &self.describe(name), e)
    }

    /// `error` for an object named in full.
    fn error_on(&self, what: &str, object: &str, e: opendal::Error) -> Error {
        // A HEAD answer has no body to name the S3 error code (a wrong
        // region, refused credentials): a listing, which has one, asks.
        let text = e.to_string();
        if text.contains("HeadObject")
            && (text.contains("status: 400") || text.contains("status: 403"))
        {
            let options = ListOptions {
                limit: Some(1),
                ..ListOptions::default()
            };
            if let Err(listed) = self.op.list_options("", options) {
                return s3_error((&self.location, &self.down), what, object, listed);
            }
        }
        s3_error((&self.location, &self.down), what, object, e)
    }
}

/// What went wrong with `what` on object `name` of `location`, as
/// platter's errors say it: a missing object is NotFound; a missing
/// bucket, refused credentials or a wrong region say so and what to check;
/// a store that cannot be reached, or anything else, is an I/O error
/// (exit 6) once the retries are spent.
fn s3_error(
    (location, down): (&S3Location, &AtomicBool),
    what: &str,
    object: &str,
    e: opendal::Error,
) -> Error {
    let error = classify(location, what, object, e);
    if error.is_transient() {
        down.store(true, Ordering::SeqCst);
    }
    error
}

/// Fails at once when an earlier request of this command found the store
/// out of reach.
fn check_up(location: &S3Location, down: &AtomicBool) -> Result<()> {
    if down.load(Ordering::SeqCst) {
        return Err(Error::new(
            crate::error::ErrorKind::Io,
            format!(
                "the object store at {} stopped answering earlier in this command",
                location.endpoint
            ),
        )
        .hint("check that the store is up and reachable from here, then run the command again")
        .transient());
    }
    Ok(())
}

fn classify(location: &S3Location, what: &str, object: &str, e: opendal::Error) -> Error {
    if let Some(tls) = tls_failure(&e) {
        let hint = match tls {
            rustls::Error::InvalidMessage(_) => format!(
                "the store does not seem to speak TLS on this port: if it serves plain http, \
                 name the repository s3:{}",
                location
                    .to_string()
                    .trim_start_matches(SCHEME)
                    .replacen("https:", "http:", 1)
            ),
            rustls::Error::InvalidCertificate(_) => "check the host name; if the store's \
                 certificate is signed by a private CA, add that CA to the system's trusted \
                 certificates"
                .to_string(),
            _ => "check that the store serves https on this port".to_string(),
        };
        return Error::bad_input(format!(
            "the TLS handshake with {} failed ({tls}), so {what} {object} could not even be \
             asked",
            location.endpoint
        ))
        .hint(hint);
    }
    let text = e.to_string();
    match e.kind() {
        opendal::ErrorKind::NotFound => Error::storage(what, object, io::ErrorKind::NotFound.into()),
        _ if text.contains("NoSuchBucket") => Error::not_found(format!(
            "the bucket {} does not exist at {}",
            location.bucket, location.endpoint
        ))
        .hint(
            "check the repository's URL, or create the bucket (`platter init` creates a \
             missing one when the credentials may)",
        ),
        _ if text.contains("AuthorizationHeaderMalformed") => Error::bad_input(format!(
            "{} refused the request's region: {}",
            location.endpoint,
            region_hint(&text)
        ))
        .hint("set AWS_REGION to the store's region"),
        opendal::ErrorKind::PermissionDenied => Error::storage(
            what,
            object,
            io::Error::new(
                io::ErrorKind::PermissionDenied,
                format!("{} refused the credentials", location.endpoint),
            ),
        )
        .hint("check AWS_ACCESS_KEY_ID and AWS_SECRET_ACCESS_KEY, and that the key may use this bucket (and write, for commands that write)"),
        _ if text.contains("error sending request") => Error::new(
            crate::error::ErrorKind::Io,
            format!(
                "cannot reach the object store at {} to {what} {object} ({ATTEMPTS} attempts over \
                 about {} s)",
                location.endpoint,
                RETRY_SPAN.as_secs()
            ),
        )
        .hint("check that the store is up and reachable from here, then run the command again")
        .transient(),
        _ => {
            let error = Error::new(
                crate::error::ErrorKind::Io,
                format!("cannot {what} {object}: {}", short(&text)),
            );
            if e.is_temporary() || text.contains("ServiceUnavailable") || text.contains("status: 5") {
                error.transient()
            } else {
                error
            }
        }
    }
}

/// The HTTP client requests to `location` go through. An https endpoint
/// needs the system's CA certificates, and their absence is an error that
/// says so (reqwest's default client panics instead); a plain http one is
/// served without looking for any.
fn http_transport(location: &S3Location) -> Result<opendal::HttpTransporter> {
    let builder = reqwest::Client::builder();
    let builder = if location.endpoint.starts_with("http://") {
        builder.tls_certs_only([])
    } else {
        builder
    };
    let client = builder.build().map_err(|e| {
        Error::unsupported(format!(
            "cannot set up HTTPS for {location}: {}",
            std::error::Error::source(&e).map_or_else(|| e.to_string(), |s| s.to_string())
        ))
        .hint("install the system's CA certificates (Debian: ca-certificates) or name a bundle with SSL_CERT_FILE")
    })?;
    Ok(opendal::HttpTransporter::new(
        opendal_http_transport_reqwest::ReqwestTransport::new(client),
    ))
}

/// opendal's HTTP transport, with one change: a failed TLS handshake is
/// final. It fails the same way on every attempt (an https URL for a store
/// that serves plain http, a certificate this system does not trust), so
/// it must not be retried for 15 s as if the store were out of reach.
struct TlsFailuresAreFinal(opendal::HttpTransporter);

impl opendal::HttpTransport for TlsFailuresAreFinal {
    async fn fetch(
        &self,
        request: http::Request<opendal::Buffer>,
    ) -> opendal::Result<http::Response<opendal::HttpBody>> {
        self.0.fetch(request).await.map_err(|e| {
            if tls_failure(&e).is_some() {
                e.set_permanent()
            } else {
                e
            }
        })
    }
}

/// The TLS error among `e`'s causes, if any.
fn tls_failure<'a>(e: &'a (dyn std::error::Error + 'static)) -> Option<&'a rustls::Error> {
    let mut next = Some(e);
    while let Some(error) = next {
        if let Some(tls) = error.downcast_ref::<rustls::Error>() {
            return Some(tls);
        }
        // An io::Error's `source` skips the error it wraps: look inside.
        if let Some(inner) = error
            .downcast_ref::<io::Error>()
            .and_then(io::Error::get_ref)
            && let Some(tls) = tls_failure(inner)
        {
            return Some(tls);
        }
        next = error.source();
    }
    None
}

/// An opendal error's text without its context dump.
fn short(text: &str) -> &str {
    text.split(", context:").next().unwrap_or(text)
}

/// The region a store said it expects, out of its error text.
fn region_hint(text: &str) -> String {
    text.split("expected: ")
        .nth(1)
        .and_then(|scope| scope.split('/').nth(1))
        .map_or("the region is wrong".into(), |region| {
            format!("it expects the region {region}")
        })
}

impl Backend for S3Backend {
    fn create(&self, name: &str) -> Result<Box<dyn NewFile>> {
        Ok(Box::new(S3NewFile {
            op: self.op.clone(),
            down: Arc::clone(&self.down),
            location: self.location.clone(),
            name: name.to_string(),
            bytes: Vec::new(),
        }))
    }

    fn open(&self, name: &str) -> Result<Box<dyn StoredFile>> {
        check_up(&self.location, &self.down)?;
        let meta = self
            .op
            .stat(name)
            .map_err(|e| self.error("open", name, e))?;
        Ok(Box::new(S3File {
            op: self.op.clone(),
            down: Arc::clone(&self.down),
            location: self.location.clone(),
            name: name.to_string(),
            what: self.describe(name),
            len: meta.content_length(),
            modified: meta.last_modified().map(std::time::SystemTime::from),
            window: std::sync::Mutex::new(None),
        }))
    }

    /// One ranged GET, without the HEAD an `open` sends first.
    fn read_at(&self, name: &str, buf: &mut [u8], offset: u64) -> Result<()> {
        if buf.is_empty() {
            return Ok(());
        }
        check_up(&self.location, &self.down)?;
        let what = self.describe(name);
        let got = get_range(
            &self.op,
            (&self.location, &self.down),
            name,
            &what,
            offset,
            buf.len(),
        )?;
        copy_pieces(got, buf);
        Ok(())
    }

    /// One GET, without the HEAD an `open` sends first.
    fn read_whole(&self, name: &str) -> Result<Vec<u8>> {
        check_up(&self.location, &self.down)?;
        let got = self
            .op
            .read(name)
            .map_err(|e| self.error("read", name, e))?;
        Ok(got.to_vec())
    }

    /// One listing: S3 lists each object's length and time.
    fn list_files(&self, dir: &str) -> Result<Vec<super::Listed>> {
        let path = format!("{dir}/");
        let mut files: Vec<super::Listed> = self
            .entries(&path, dir)?
            .iter()
            .filter(|entry| entry.metadata().is_file())
            .filter_map(|entry| {
                let name = entry.path().strip_prefix(&path)?;
                (!name.is_empty() && !name.contains('/')).then(|| super::Listed {
                    name: name.to_string(),
                    len: entry.metadata().content_length(),
                    modified: entry
                        .metadata()
                        .last_modified()
                        .map(std::time::SystemTime::from),
                    is_file: true,
                })
            })
            .collect();
        files.sort_by(|a, b| a.name.cmp(&b.name));
        files.dedup_by(|a, b| a.name == b.name);
        Ok(files)
    }

    fn list(&self, dir: &str) -> Result<Vec<String>> {
        check_up(&self.location, &self.down)?;
        // Always end with `/`: "a" would also list "ab/...".
        let path = if dir.is_empty() {
            String::new()
        } else {
            format!("{dir}/")
        };
        let mut names: Vec<String> = self
            .entries(&path, dir)?
            .iter()
            .filter_map(|entry| {
                let rest = entry.path().strip_prefix(&path)?;
                let name = rest.trim_end_matches('/');
                (!name.is_empty()).then(|| name.to_string())
            })
            .collect();
        names.sort();
        names.dedup();
        Ok(names)
    }

    fn remove(&self, name: &str) -> Result<()> {
        check_up(&self.location, &self.down)?;
        match self.op.delete(name) {
            Ok(()) => Ok(()),
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => Ok(()),
            Err(e) => Err(self.error("remove", name, e)),
        }
    }

    fn remove_unfinished(&self, _dir: &str, _no_writers: bool) -> Result<Vec<String>> {
        // A file is one PUT: an unfinished one never becomes an object.
        Ok(Vec::new())
    }

    fn describe(&self, name: &str) -> String {
        format!("{}/{name}", self.location)
    }

    fn location(&self) -> String {
        self.location.to_string()
    }

    fn write_new(&self, name: &str, bytes: &[u8]) -> Result<()> {
        check_up(&self.location, &self.down)?;
        match self.op.stat(name) {
            Ok(_) => {
                return Err(Error::bad_input(format!(
                    "{} exists already: it was not replaced",
                    self.describe(name)
                )));
            }
            Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
            Err(e) => return Err(self.error("look for", name, e)),
        }
        self.op
            .write(name, bytes.to_vec())
            .map(drop)
            .map_err(|e| self.error("write", name, e))
    }

    fn remove_on_interrupt(&self, name: &str) -> Option<Registration> {
        // One delete, given up after a few seconds: the interrupted
        // process waits for it before it exits.
        let (op, name) = (self.op.clone(), name.to_string());
        Some(crate::interrupt::call_on_interrupt(move || {
            let (done, wait) = crossbeam_channel::bounded(1);
            let (op, name) = (op.clone(), name.clone());
            std::thread::spawn(move || {
                let _ = done.send(op.delete(&name).is_ok());
            });
            wait.recv_timeout(INTERRUPT_PATIENCE).unwrap_or(false)
        }))
    }

    fn concurrency(&self) -> usize {
        self.connections
    }

    fn enclosing_repository(&self) -> Result<Option<String>> {
        let parts: Vec<&str> = self
            .location
            .prefix
            .split('/')
            .filter(|p| !p.is_empty())
            .collect();
        for depth in 0..parts.len() {
            let above = parts[..depth].join("/");
            let config = if above.is_empty() {
                "config".to_string()
            } else {
                format!("{above}/config")
            };
            match self.bucket.stat(&config) {
                Ok(_) => {
                    let outer = S3Location {
                        prefix: above,
                        ..self.location.clone()
                    };
                    return Ok(Some(outer.to_string()));
                }
                Err(e) if e.kind() == opendal::ErrorKind::NotFound => {}
                Err(e) => {
                    let object = format!(
                        "{SCHEME}{}/{}/{config}",
                        self.location.endpoint, self.location.bucket
                    );
                    return Err(self.error_on("look for", &object, e));
                }
            }
        }
        Ok(None)
    }

    fn read_span(&self) -> u64 {
        READ_SPAN
    }

    fn pack_target(&self) -> Option<u64> {
        Some(PACK_TARGET)
    }

    fn missing_bucket(&self) -> Result<Option<String>> {
        check_up(&self.location, &self.down)?;
        let options = ListOptions {
            limit: Some(1),
            ..ListOptions::default()
        };
        // Under the prefix: credentials limited to it may list there.
        let first = self
            .op
            .lister_options("", options)
            .and_then(|mut listed| listed.next().transpose());
        match first {
            Ok(_) => Ok(None),
            Err(e) if e.to_string().contains("NoSuchBucket") => {
                bucket::check_name(&self.location)?;
                Ok(Some(self.location.bucket.clone()))
            }
            Err(e) => Err(self.error_on("list", &self.location.to_string(), e)),
        }
    }

    fn create_bucket(&self) -> Result<bool> {
        check_up(&self.location, &self.down)?;
        self.maker.create(&self.location)
    }
}

/// Packs are held in memory until their PUT: 16 MiB each keeps a backup
/// with several uploads in flight well under 200 MiB.
const PACK_TARGET: u64 = 16 << 20;

/// Neighbouring chunks are read with one ranged GET of up to this much:
/// Garage answered 444 MiB of 16 MiB packs in 0.73 s as 8 MiB ranges (8 in
/// flight), 0.82 s as 4 MiB ranges and 1.7 s as chunk-sized ones, against
/// 0.68 s as whole objects; 8 in flight then hold 64 MiB.
const READ_SPAN: u64 = 8 << 20;

/// A file being written: its bytes are sent in one PUT at `commit`.
struct S3NewFile {
    op: Operator,
    down: Arc<AtomicBool>,
    location: S3Location,
    name: String,
    bytes: Vec<u8>,
}

impl Write for S3NewFile {
    fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
        self.bytes.extend_from_slice(buf);
        Ok(buf.len())
    }

    fn flush(&mut self) -> io::Result<()> {
        Ok(())
    }
}

impl NewFile for S3NewFile {
    fn commit(self: Box<Self>) -> Result<()> {
        let this = *self;
        check_up(&this.location, &this.down)?;
        this.op
            .write(&this.name, this.bytes)
            .map(drop)
            .map_err(|e| {
                s3_error(
                    (&this.location, &this.down),
                    "write",
                    &format!("{}/{}", this.location, this.name),
                    e,
                )
            })
    }
}

/// An object opened for reading: each read is one ranged GET, whose length
/// is checked (a store that answered with the whole object would give
/// wrong bytes).
struct S3File {
    op: Operator,
    down: Arc<AtomicBool>,
    location: S3Location,
    name: String,
    what: String,
    len: u64,
    /// Last-Modified, by the store's clock.
    modified: Option<std::time::SystemTime>,
    /// The last window fetched around a small read, and where it starts.
    window: std::sync::Mutex<Option<(u64, Vec<u8>)>>,
}

/// How long an interrupted command waits to remove its lock object.
const INTERRUPT_PATIENCE: Duration = Duration::from_secs(3);

/// Reads smaller than this fetch this much (or up to the end).
const READ_AHEAD: usize = 256 << 10;

impl StoredFile for S3File {
    fn read_exact_at(&self, buf: &mut [u8], offset: u64) -> Result<()> {
        let end = offset.checked_add(buf.len() as u64);
        if end.is_none_or(|end| end > self.len) {
            return Err(Error::corrupt(format!(
                "{} ends before offset {} (it is {} bytes): the object was cut short",
                self.what,
                end.map_or_else(|| "beyond 2^64".into(), |n| n.to_string()),
                self.len
            )));
        }
        if buf.is_empty() {
            return Ok(());
        }
        check_up(&self.location, &self.down)?;
        if let Ok(window) = self.window.lock()
            && let Some((start, bytes)) = window.as_ref()
            && let Some(from) = offset.checked_sub(*start)
            && let Some(hit) = bytes.get(from as usize..from as usize + buf.len())
        {
            buf.copy_from_slice(hit);
            return Ok(());
        }
        // A small read fetches a window around it (a map's header and its
        // first blocks, a pack's head): one request instead of several.
        let want = if buf.len() < READ_AHEAD {
            (self.len - offset).min(READ_AHEAD as u64) as usize
        } else {
            buf.len()
        };
        let store = (&self.location, &*self.down);
        let got = get_range(&self.op, store, &self.name, &self.what, offset, want)?;
        if want == buf.len() {
            copy_pieces(got, buf);
            return Ok(());
        }
        let got = got.to_vec();
        buf.copy_from_slice(&got[..buf.len()]);
        if let Ok(mut window) = self.window.lock() {
            *window = Some((offset, got));
        }
        Ok(())
    }

    fn len(&self) -> u64 {
        self.len
    }

    fn modified(&self) -> Option<std::time::SystemTime> {
        self.modified
    }
}

/// `want` bytes of object `name` from `offset`, with one ranged GET whose
/// length is checked (a store that answered with the whole object would
/// give wrong bytes).
fn get_range(
    op: &Operator,
    store: (&S3Location, &AtomicBool),
    name: &str,
    what: &str,
    offset: u64,
    want: usize,
) -> Result<opendal::Buffer> {
    let options = ReadOptions {
        range: (offset..offset + want as u64).into(),
        ..ReadOptions::default()
    };
    let got = op
        .read_options(name, options)
        .map_err(|e| s3_error(store, "read", what, e))?;
    if got.len() != want {
        return Err(Error::storage(
            "read",
            what,
            io::Error::other(format!(
                "asked for {want} bytes at {offset}, got {}",
                got.len()
            )),
        ));
    }
    Ok(got)
}

/// Copies a checked read into `buf` piece by piece: no second copy of a
/// large read.
fn copy_pieces(got: opendal::Buffer, buf: &mut [u8]) {
    let mut at = 0;
    for piece in got {
        let n = piece.len().min(buf.len() - at);
        buf[at..at + n].copy_from_slice(&piece[..n]);
        at += n;
    }
}
