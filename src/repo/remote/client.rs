//! The object-storage client: `object_store`'s S3 implementation behind a few blocking calls, on a
//! private tokio runtime (the rest of strata is threads, not futures). Every request is counted
//! ([`requests`]) so that commands can report what they cost against a bucket; retries with
//! backoff are `object_store`'s own ([`RetryConfig`]), bounded by `STRATA_S3_RETRY_TIMEOUT` (seconds,
//! 120 by default).

use std::ops::Range;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use futures::StreamExt;
use object_store::aws::{AmazonS3, AmazonS3Builder, AmazonS3ConfigKey};
use object_store::path::Path as ObjPath;
use object_store::{
    BackoffConfig, ClientConfigKey, GetOptions, GetRange, ObjectStore, ObjectStoreExt, PutPayload,
    RetryConfig,
};
use serde::Serialize;

use crate::error::{Error, Result};

/// Requests made by this process, by kind: what `--json` and the metrics report.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq, Serialize)]
pub struct Requests {
    /// GET requests (whole objects and ranges).
    pub get: u64,
    /// PUT requests.
    pub put: u64,
    /// LIST requests (one per page of up to 1,000 names).
    pub list: u64,
    /// DELETE requests.
    pub delete: u64,
    /// Bytes received in GET responses.
    pub bytes_down: u64,
    /// Bytes sent in PUT requests.
    pub bytes_up: u64,
}

static GETS: AtomicU64 = AtomicU64::new(0);
static PUTS: AtomicU64 = AtomicU64::new(0);
static LISTS: AtomicU64 = AtomicU64::new(0);
static DELETES: AtomicU64 = AtomicU64::new(0);
static DOWN: AtomicU64 = AtomicU64::new(0);
static UP: AtomicU64 = AtomicU64::new(0);

/// What this process has asked of object storage so far (all zero for a local repository).
pub fn requests() -> Requests {
    let r = |a: &AtomicU64| a.load(Ordering::Relaxed);
    Requests {
        get: r(&GETS),
        put: r(&PUTS),
        list: r(&LISTS),
        delete: r(&DELETES),
        bytes_down: r(&DOWN),
        bytes_up: r(&UP),
    }
}

fn count(a: &AtomicU64, n: u64) {
    a.fetch_add(n, Ordering::Relaxed);
}

/// Bytes per part of a multipart upload (S3 wants at least 5 MiB for all parts but the last).
pub const PART: u64 = 16 << 20;

/// Objects up to this size are written with one PUT by default (`STRATA_S3_SINGLE_PUT_MB`). A
/// multipart upload costs the server a second pass over the data when it assembles the parts
/// (s3s-fs: a copy and an MD5 of the whole object), so a pack, which closes a little past its
/// target size, must not need one.
pub const SINGLE_PUT: u64 = 64 << 20;

/// The largest object written with one PUT: [`SINGLE_PUT`], or `STRATA_S3_SINGLE_PUT_MB` MiB
/// (at least 5, S3's smallest part), for a service that limits the size of a request.
fn single_put_limit() -> u64 {
    std::env::var("STRATA_S3_SINGLE_PUT_MB")
        .ok()
        .and_then(|s| s.trim().parse::<u64>().ok())
        .map_or(SINGLE_PUT, |mb| mb.max(5) << 20)
}

/// An object in a listing.
#[derive(Clone, Debug)]
pub struct Listed {
    /// Its name below the listed prefix.
    pub name: String,
    /// Its size in bytes.
    pub size: u64,
    /// When the server last wrote it, in seconds since the epoch (the server's clock).
    pub modified_s: i64,
}

/// A bucket and a prefix in it, reached with the standard AWS environment.
pub struct Client {
    store: Arc<AmazonS3>,
    rt: tokio::runtime::Runtime,
    prefix: String,
    /// `s3://bucket/prefix`, for messages.
    url: String,
}

/// How long requests are retried (with exponential backoff) before an error is reported.
fn retry_timeout() -> Duration {
    std::env::var("STRATA_S3_RETRY_TIMEOUT")
        .ok()
        .and_then(|s| s.trim().trim_end_matches('s').parse::<u64>().ok())
        .map(Duration::from_secs)
        .unwrap_or(Duration::from_secs(120))
}

/// Whether every request goes over plain HTTP: an `http://` endpoint with static keys (no
/// credential service that might be reached over HTTPS). Then the system's TLS roots, which take
/// tens of milliseconds to read from a cold disk at every start, are not loaded.
fn plain_http_only() -> bool {
    let endpoint = std::env::var("AWS_ENDPOINT_URL")
        .or_else(|_| std::env::var("AWS_ENDPOINT"))
        .unwrap_or_default();
    endpoint.starts_with("http://")
        && std::env::var_os("AWS_ACCESS_KEY_ID").is_some()
        && std::env::var_os("AWS_SECRET_ACCESS_KEY").is_some()
}

impl Client {
    /// A client for `bucket` below `prefix` (no leading or trailing `/`), configured from the
    /// environment: `AWS_ACCESS_KEY_ID`, `AWS_SECRET_ACCESS_KEY`, `AWS_SESSION_TOKEN`,
    /// `AWS_REGION`, `AWS_ENDPOINT_URL`, `AWS_ALLOW_HTTP`, and the other sources `object_store`
    /// knows (instance metadata, web identity).
    pub fn new(bucket: &str, prefix: &str, url: &str) -> Result<Client> {
        let timeout = retry_timeout();
        let retry = RetryConfig {
            backoff: BackoffConfig {
                init_backoff: Duration::from_millis(100),
                max_backoff: Duration::from_secs(10),
                base: 2.,
            },
            max_retries: 20,
            retry_timeout: timeout,
        };
        // Unsigned payloads: SigV4 would hash every byte sent with SHA-256 (a CPU second per
        // 600 MB here); every record strata stores carries its own blake3 hash or AEAD tag, and
        // TLS protects the transfer.
        let mut b = AmazonS3Builder::from_env()
            .with_bucket_name(bucket)
            .with_unsigned_payload(true)
            .with_retry(retry);
        if plain_http_only() {
            b = b.with_config(
                AmazonS3ConfigKey::Client(ClientConfigKey::NoSystemCertificates),
                "true",
            );
        }
        if std::env::var_os("AWS_REGION").is_none()
            && std::env::var_os("AWS_DEFAULT_REGION").is_none()
        {
            b = b.with_region("us-east-1");
        }
        let store = b.build().map_err(|e| Error::Remote {
            url: url.to_string(),
            detail: format!("cannot configure the S3 client: {e}"),
        })?;
        let rt = tokio::runtime::Builder::new_multi_thread()
            .worker_threads(2)
            .enable_all()
            .thread_name("strata-s3")
            .build()
            .map_err(|e| Error::Remote {
                url: url.to_string(),
                detail: format!("cannot start the I/O runtime: {e}"),
            })?;
        Ok(Client {
            store: Arc::new(store),
            rt,
            prefix: prefix.to_string(),
            url: url.to_string(),
        })
    }

    /// The repository's address, `s3://bucket/prefix`.
    pub fn url(&self) -> &str {
        &self.url
    }

    fn path(&self, key: &str) -> ObjPath {
        if self.prefix.is_empty() {
            ObjPath::from(key)
        } else {
            ObjPath::from(format!("{}/{key}", self.prefix))
        }
    }

    fn err(&self, what: &str, key: &str, e: object_store::Error) -> Error {
        if let object_store::Error::NotFound { .. } = e {
            return Error::Io {
                context: "Reading object",
                path: format!("{}/{key}", self.url).into(),
                source: std::io::Error::from(std::io::ErrorKind::NotFound),
            };
        }
        Error::Remote {
            url: self.url.clone(),
            detail: format!("{what} {key}: {e}"),
        }
    }

    /// The whole object `key`; `None` when there is none.
    pub fn get(&self, key: &str) -> Result<Option<Bytes>> {
        count(&GETS, 1);
        let p = self.path(key);
        let r = self.rt.block_on(async {
            let got = self.store.get(&p).await?;
            got.bytes().await
        });
        match r {
            Ok(b) => {
                count(&DOWN, b.len() as u64);
                Ok(Some(b))
            }
            Err(object_store::Error::NotFound { .. }) => Ok(None),
            Err(e) => Err(self.err("reading", key, e)),
        }
    }

    /// Bytes `range` of object `key` (fewer at its end), and the object's whole size.
    pub fn get_range(&self, key: &str, range: Range<u64>) -> Result<(Bytes, u64)> {
        count(&GETS, 1);
        let p = self.path(key);
        let r = self.rt.block_on(async {
            let opts = GetOptions {
                range: Some(GetRange::Bounded(range)),
                ..Default::default()
            };
            let got = self.store.get_opts(&p, opts).await?;
            let size = got.meta.size;
            Ok::<_, object_store::Error>((got.bytes().await?, size))
        });
        match r {
            Ok((b, size)) => {
                count(&DOWN, b.len() as u64);
                Ok((b, size))
            }
            Err(e) => Err(self.err("reading", key, e)),
        }
    }

    /// Writes object `key` (atomically: readers see all of it or none).
    pub fn put(&self, key: &str, data: Bytes) -> Result<()> {
        count(&PUTS, 1);
        count(&UP, data.len() as u64);
        let p = self.path(key);
        self.rt
            .block_on(async { self.store.put(&p, PutPayload::from_bytes(data)).await })
            .map(|_| ())
            .map_err(|e| self.err("writing", key, e))
    }

    /// Writes object `key` from the file at `path`: with one PUT up to [`single_put_limit`] bytes,
    /// beyond that as a multipart upload in parts of [`PART`] bytes read one at a time, so
    /// memory stays bounded whatever the file's size. The object appears whole when the upload
    /// completes, or not at all.
    pub fn put_file(&self, key: &str, path: &std::path::Path) -> Result<()> {
        use std::os::unix::fs::FileExt;
        let io = |e: std::io::Error| Error::Io {
            context: "Reading spooled pack",
            path: path.to_path_buf(),
            source: e,
        };
        let f = std::fs::File::open(path).map_err(io)?;
        let size = f.metadata().map_err(io)?.len();
        let read = |at: u64, len: u64| -> Result<Bytes> {
            let mut buf = vec![0u8; len as usize];
            f.read_exact_at(&mut buf, at).map_err(io)?;
            Ok(Bytes::from(buf))
        };
        if size <= single_put_limit() {
            return self.put(key, read(0, size)?);
        }
        let p = self.path(key);
        let mut upload = self
            .rt
            .block_on(self.store.put_multipart(&p))
            .map_err(|e| self.err("starting the upload of", key, e))?;
        count(&PUTS, 1);
        // Two parts in flight: one travels while the next is read.
        let r: Result<()> = self.rt.block_on(async {
            let mut inflight = std::collections::VecDeque::new();
            let mut at = 0;
            while at < size {
                let part = read(at, PART.min(size - at))?;
                count(&PUTS, 1);
                count(&UP, part.len() as u64);
                at += part.len() as u64;
                inflight.push_back(upload.put_part(PutPayload::from_bytes(part)));
                if inflight.len() >= 2 {
                    let next = inflight.pop_front().expect("two in flight");
                    next.await.map_err(|e| self.err("writing", key, e))?;
                }
            }
            for part in inflight {
                part.await.map_err(|e| self.err("writing", key, e))?;
            }
            count(&PUTS, 1);
            upload
                .complete()
                .await
                .map(|_| ())
                .map_err(|e| self.err("completing", key, e))
        });
        if r.is_err() {
            let _ = self.rt.block_on(upload.abort());
        }
        r
    }

    /// Deletes object `key`; deleting one that is not there is not an error.
    pub fn delete(&self, key: &str) -> Result<()> {
        count(&DELETES, 1);
        let p = self.path(key);
        match self.rt.block_on(async { self.store.delete(&p).await }) {
            Ok(()) | Err(object_store::Error::NotFound { .. }) => Ok(()),
            Err(e) => Err(self.err("deleting", key, e)),
        }
    }

    /// Every object whose name starts with `dir/` (recursively), names relative to `dir/`.
    pub fn list(&self, dir: &str) -> Result<Vec<Listed>> {
        let p = self.path(dir);
        let strip = format!("{}/", p.as_ref());
        let r: std::result::Result<Vec<_>, object_store::Error> = self.rt.block_on(async {
            let mut s = self.store.list(Some(&p));
            let mut out = Vec::new();
            let mut n = 0u64;
            while let Some(m) = s.next().await {
                let m = m?;
                n += 1;
                if n % 1000 == 1 {
                    count(&LISTS, 1);
                }
                let name = m
                    .location
                    .as_ref()
                    .strip_prefix(&strip)
                    .unwrap_or(m.location.as_ref())
                    .to_string();
                out.push(Listed {
                    name,
                    size: m.size,
                    modified_s: m.last_modified.timestamp(),
                });
            }
            if n == 0 {
                count(&LISTS, 1);
            }
            Ok(out)
        });
        r.map_err(|e| self.err("listing", dir, e))
    }
}
