//! The `nimbus` command: `nimbus serve` runs the server; `nimbus repo ...`,
//! `nimbus user ...`, `nimbus token ...` and `nimbus collaborator ...`
//! administer repositories and accounts directly on the configured storage,
//! recording what they do in the audit log (`nimbus audit`) as the owner.

mod import;
mod webhook_cmd;

use anyhow::{Context, Result};
use clap::{Args, Parser, Subcommand};
use nimbus_auth::limit::AuthLimits;
use nimbus_auth::oidc::{ProviderConfig, ProviderKind, Providers};
use nimbus_auth::session::{SessionKeys, Sessions};
use nimbus_git::bundle_uri::{BundleOutcome, BundleUriConfig};
use nimbus_git::maintenance::{Maintainer, MaintenanceConfig, MaintenanceKind};
use nimbus_git::receive_pack::ingest::IngestLimits;
use nimbus_git::service::{GitService, GitServiceConfig};
use nimbus_git::upload_pack::{ClonePackCache, ReachIndex};
use nimbus_store::{LocalObjectStore, PackCache, PgMetadata, SqliteMetadata};
use nimbus_types::identity::{AuditQuery, NewInvitation};
use nimbus_types::metadata::MetadataStore;
use nimbus_types::storage::ObjectStore;
use nimbus_types::{Access, RepoName, RepoUpdate, Scopes, Visibility};
use nimbus_web::{App, AppConfig, Audit};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;

/// mimalloc returns freed memory to the system, where glibc's arenas kept
/// hundreds of MiB after a large clone or push (see docs/BENCHMARKS.md).
#[global_allocator]
static ALLOCATOR: mimalloc::MiMalloc = mimalloc::MiMalloc;

/// mimalloc's `purge_delay` option: its number in `mi_option_t` (mimalloc
/// 3's `mimalloc.h`; `libmimalloc-sys` names no constant for it).
const MI_OPTION_PURGE_DELAY: libmimalloc_sys::mi_option_t = 15;

/// Have mimalloc return freed memory to the system at once, not a second
/// later (mimalloc 3's default), unless `MIMALLOC_PURGE_DELAY` is set.
/// Receiving a large push frees and allocates decoded objects all the time;
/// with the delay, what was freed in the last second stayed resident: the
/// large benchmark's initial push peaked at 237–256 MiB with it and at
/// 217–220 MiB without, for the same CPU time. (mimalloc 2, whose delay is
/// 10 ms, peaked at 317 MiB.)
#[allow(unsafe_code)]
fn purge_freed_memory_at_once() {
    if std::env::var_os("MIMALLOC_PURGE_DELAY").is_none() {
        // SAFETY: sets one of mimalloc's options to a value it documents
        // (0: purge at once); options may be set at any time, from any
        // thread, and this takes no pointers.
        unsafe { libmimalloc_sys::mi_option_set(MI_OPTION_PURGE_DELAY, 0) };
    }
}

/// Nimbus: a self-hosted git server. Every option can also be set through
/// the environment variable shown with it.
#[derive(Parser, Debug)]
#[command(name = "nimbus", version)]
struct Cli {
    #[command(flatten)]
    storage: StorageArgs,
    #[command(subcommand)]
    command: Command,
}

#[derive(Args, Debug)]
struct StorageArgs {
    /// Directory for the database, the object store and caches.
    #[arg(
        long,
        env = "NIMBUS_DATA_DIR",
        default_value = "./nimbus-data",
        global = true
    )]
    data_dir: PathBuf,
    /// PostgreSQL for metadata (`postgres://user:password@host/db`). Without
    /// it, metadata lives in SQLite inside the data directory.
    #[arg(
        long,
        env = "NIMBUS_DATABASE_URL",
        hide_env_values = true,
        global = true
    )]
    database_url: Option<String>,
    /// Where packs are stored: a directory (`/path` or `file:///path`) that
    /// several server processes may share, or an S3 bucket
    /// (`s3://bucket/optional/prefix`; endpoint, region and credentials from
    /// the standard AWS_ENDPOINT_URL, AWS_REGION, AWS_ACCESS_KEY_ID and
    /// AWS_SECRET_ACCESS_KEY or AWS profiles). Default: `objects` in the
    /// data directory.
    #[arg(long, env = "NIMBUS_OBJECT_STORE", global = true)]
    object_store: Option<String>,
    /// Address S3 buckets as `endpoint/bucket` rather than
    /// `bucket.endpoint`, as most S3-compatible services need.
    #[arg(long, env = "NIMBUS_S3_PATH_STYLE", global = true)]
    s3_path_style: bool,
    /// Disk space for packs downloaded into the local cache, in MiB; least
    /// recently used packs are evicted beyond it (packs that requests are
    /// reading stay until they finish). Packs hard-linked from a local
    /// object store take no space and are not counted.
    #[arg(long, env = "NIMBUS_CACHE_MIB", default_value_t = 2048, global = true)]
    cache_mib: u64,
    /// Disk space for packs generated for clones (requests without haves),
    /// in MiB: an identical clone (same commits, depth and filter) is then
    /// streamed from disk instead of generated again. Least recently used
    /// packs go first; `0` turns the cache off.
    #[arg(
        long,
        env = "NIMBUS_CLONE_CACHE_MIB",
        default_value_t = 1024,
        global = true
    )]
    clone_cache_mib: u64,
    /// Offer clones a bundle of the repository to download before they
    /// fetch (the protocol v2 `bundle-uri` command, which git uses with
    /// `transfer.bundleURI`); on S3, clients download it straight from the
    /// bucket by a presigned URL.
    #[arg(
        long,
        env = "NIMBUS_BUNDLE_URI",
        default_value_t = true,
        action = clap::ArgAction::Set,
        global = true
    )]
    bundle_uri: bool,
    /// Write a new bundle after a push once the repository's newest bundle
    /// is older than this (`6h`, `30m`); `0` leaves bundles to
    /// `nimbus repo bundle`.
    #[arg(long, env = "NIMBUS_BUNDLE_REFRESH", default_value = "6h", value_parser = parse_duration, global = true)]
    bundle_refresh: std::time::Duration,
    /// Repositories with fewer MiB of packs than this get no bundle after
    /// pushes (a single request clones them quickly anyway).
    #[arg(
        long,
        env = "NIMBUS_BUNDLE_MIN_MIB",
        default_value_t = 16,
        global = true
    )]
    bundle_min_mib: u64,
    /// Log filter, e.g. `info` or `nimbus_git=debug` (RUST_LOG syntax).
    #[arg(long, env = "NIMBUS_LOG", default_value = "info", global = true)]
    log: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Run the server.
    Serve(Box<ServeArgs>),
    /// Administer repositories.
    #[command(subcommand)]
    Repo(RepoCommand),
    /// Manage user accounts (the owner's collaborators).
    #[command(subcommand)]
    User(UserCommand),
    /// Manage personal access tokens.
    #[command(subcommand)]
    Token(TokenCommand),
    /// Manage who may read, push to or administer a repository.
    #[command(subcommand)]
    Collaborator(CollaboratorCommand),
    /// Show the audit log, newest first.
    Audit(AuditArgs),
    /// Manage webhooks and see their deliveries.
    Webhook(webhook_cmd::WebhookArgs),
}

#[derive(Args, Debug)]
struct AuditArgs {
    /// An action (`push`) or a prefix ending in a dot (`token.`).
    #[arg(long)]
    action: Option<String>,
    /// Only events done by this user.
    #[arg(long)]
    actor: Option<String>,
    /// Only events about this repository.
    #[arg(long)]
    repo: Option<String>,
    /// Only events older than this event id (to page back).
    #[arg(long)]
    before: Option<i64>,
    /// How many events to show (at most 1000).
    #[arg(long, default_value_t = 50)]
    limit: u32,
}

#[derive(Subcommand, Debug)]
enum UserCommand {
    /// Create an account.
    Add { name: String },
    /// List accounts.
    List,
    /// Delete an account with its tokens and collaborations.
    Remove { name: String },
    /// Create an invitation link to make an account, and print it (once).
    Invite {
        /// A repository the new account becomes a collaborator of.
        #[arg(long, requires = "access")]
        repo: Option<String>,
        /// The level on that repository: read, write or admin.
        #[arg(long, requires = "repo")]
        access: Option<String>,
        /// How long the link works (`7d`, `12h`; at most 30d).
        #[arg(long, default_value = "7d", value_parser = parse_duration)]
        expires: std::time::Duration,
        /// A note for the owner's list, such as whom it is for.
        #[arg(long, default_value = "")]
        note: String,
        /// The URL users reach the server at, to print a whole link.
        #[arg(long, env = "NIMBUS_PUBLIC_URL")]
        public_url: Option<String>,
    },
    /// List invitations and their state (never their links).
    Invitations,
    /// Revoke a pending invitation.
    Uninvite { id: i64 },
    /// Set a user's password, read as one line from standard input; signs
    /// the user out of every web session.
    Password { name: String },
    /// Link an external identity (a provider's subject) to an account.
    Link {
        name: String,
        provider: String,
        subject: String,
    },
    /// Unlink an external identity from an account.
    Unlink {
        name: String,
        provider: String,
        subject: String,
    },
}

#[derive(Subcommand, Debug)]
enum TokenCommand {
    /// Create a token and print it (once).
    Create {
        /// Whose token it is.
        #[arg(long)]
        user: String,
        /// Comma-separated: repo:read, repo:write, admin, api.
        #[arg(long)]
        scopes: String,
        /// Lifetime (`30d`, `12h`); default: no expiry.
        #[arg(long, value_parser = parse_duration)]
        expires: Option<std::time::Duration>,
        /// What the token is for.
        #[arg(long, default_value = "")]
        description: String,
    },
    /// List a user's tokens.
    List {
        #[arg(long)]
        user: String,
    },
    /// Revoke a token.
    Revoke {
        #[arg(long)]
        user: String,
        id: i64,
    },
}

#[derive(Subcommand, Debug)]
enum CollaboratorCommand {
    /// Give a user access to a repository (or change their level).
    Add {
        repo: String,
        user: String,
        /// read, write or admin.
        #[arg(long, default_value = "read")]
        access: String,
    },
    /// List a repository's collaborators.
    List { repo: String },
    /// Take a user's access to a repository away.
    Remove { repo: String, user: String },
}

#[derive(Args, Debug)]
struct ServeArgs {
    /// Address to listen on (`127.0.0.1:0` picks a free port).
    #[arg(long, env = "NIMBUS_LISTEN", default_value = "127.0.0.1:8080")]
    listen: SocketAddr,
    /// The URL users reach this server at, for clone URLs (default: from
    /// each request's Host header).
    #[arg(long, env = "NIMBUS_PUBLIC_URL")]
    public_url: Option<String>,
    /// The owner's token. On first start without it, a token is generated
    /// and printed once. Prefer the environment variable: flags are visible
    /// to other users of the machine.
    #[arg(long, env = "NIMBUS_OWNER_TOKEN", hide_env_values = true)]
    owner_token: Option<String>,
    /// Whether anonymous users may clone public and hidden repositories.
    #[arg(long, env = "NIMBUS_ANONYMOUS_READ", default_value_t = true, action = clap::ArgAction::Set)]
    anonymous_read: bool,
    /// Expensive web pages (archives, diffs, history, comparisons) an
    /// anonymous client address may load per minute; git traffic and
    /// signed-in users are not limited.
    #[arg(long, env = "NIMBUS_ANONYMOUS_PAGE_LIMIT", default_value_t = 60)]
    anonymous_page_limit: u32,
    /// The largest pack a push may send, in MiB.
    #[arg(long, env = "NIMBUS_MAX_PACK_MIB", default_value_t = 4096)]
    max_pack_mib: u64,
    /// The most objects a pushed pack may hold (receiving one keeps about
    /// 75 bytes per object in memory).
    #[arg(long, env = "NIMBUS_MAX_PACK_OBJECTS", default_value_t = 20_000_000)]
    max_pack_objects: u32,
    /// Compact a repository once a push leaves it with more packs than this.
    #[arg(long, env = "NIMBUS_COMPACT_THRESHOLD", default_value_t = 16)]
    compact_threshold: usize,
    /// Garbage collect every repository this often (`24h`, `30m`; `0`
    /// never).
    #[arg(long, env = "NIMBUS_GC_INTERVAL", default_value = "24h", value_parser = parse_duration)]
    gc_interval: std::time::Duration,
    #[command(flatten)]
    grace: GraceArgs,
    #[command(flatten)]
    sign_in: SignInArgs,
    /// Publish events to NATS JetStream at this URL (`nats://host:4222`);
    /// without it, to in-process subscribers only. Events wait in the
    /// database while NATS is unreachable.
    #[arg(long, env = "NIMBUS_NATS_URL")]
    nats_url: Option<String>,
    /// The JetStream stream that holds the events.
    #[arg(long, env = "NIMBUS_NATS_STREAM", default_value = "NIMBUS_EVENTS")]
    nats_stream: String,
    #[command(flatten)]
    webhooks: WebhookServeArgs,
}

/// How webhooks are sent.
#[derive(Args, Debug)]
struct WebhookServeArgs {
    /// Non-public networks or addresses webhooks may reach, comma-separated
    /// (`127.0.0.1,10.0.0.0/8,fd00::/8`). Loopback, private, link-local and
    /// other non-public addresses are refused unless listed.
    #[arg(long, env = "NIMBUS_WEBHOOK_ALLOW")]
    webhook_allow: Option<String>,
    /// The wait before the first retry of a failed delivery; it doubles
    /// with every attempt, up to an hour.
    #[arg(long, env = "NIMBUS_WEBHOOK_RETRY", default_value = "15s", value_parser = parse_duration)]
    webhook_retry: std::time::Duration,
    /// Attempts of one delivery, the first included.
    #[arg(long, env = "NIMBUS_WEBHOOK_ATTEMPTS", default_value_t = 10)]
    webhook_attempts: u32,
    /// How long one attempt may take.
    #[arg(long, env = "NIMBUS_WEBHOOK_TIMEOUT", default_value = "10s", value_parser = parse_duration)]
    webhook_timeout: std::time::Duration,
    /// How long the delivery log keeps finished attempts.
    #[arg(long, env = "NIMBUS_WEBHOOK_LOG_DAYS", default_value_t = 30)]
    webhook_log_days: u64,
}

/// Sign-in settings: identity providers and abuse limits.
#[derive(Args, Debug)]
struct SignInArgs {
    /// An OpenID Connect provider's issuer URL (discovery at
    /// `<issuer>/.well-known/openid-configuration`). Needs
    /// NIMBUS_PUBLIC_URL; the redirect URI is `<public URL>/login/oidc/callback`.
    #[arg(long, env = "NIMBUS_OIDC_ISSUER")]
    oidc_issuer: Option<String>,
    #[arg(long, env = "NIMBUS_OIDC_CLIENT_ID")]
    oidc_client_id: Option<String>,
    #[arg(long, env = "NIMBUS_OIDC_CLIENT_SECRET", hide_env_values = true)]
    oidc_client_secret: Option<String>,
    /// The provider's name on the sign-in page.
    #[arg(long, env = "NIMBUS_OIDC_NAME", default_value = "OpenID Connect")]
    oidc_name: String,
    /// A GitHub OAuth app's client id (redirect URI
    /// `<public URL>/login/github/callback`).
    #[arg(long, env = "NIMBUS_GITHUB_CLIENT_ID")]
    github_client_id: Option<String>,
    #[arg(long, env = "NIMBUS_GITHUB_CLIENT_SECRET", hide_env_values = true)]
    github_client_secret: Option<String>,
    /// GitHub Enterprise: its web URL (default https://github.com).
    #[arg(long, env = "NIMBUS_GITHUB_URL")]
    github_url: Option<String>,
    /// GitHub Enterprise: its API URL (default https://api.github.com).
    #[arg(long, env = "NIMBUS_GITHUB_API_URL")]
    github_api_url: Option<String>,
    /// Failed sign-ins or token uses per client address in 15 minutes
    /// before it is refused (half as many per account).
    #[arg(long, env = "NIMBUS_AUTH_MAX_FAILURES", default_value_t = 20)]
    auth_max_failures: u32,
    /// Take the client address from the last X-Forwarded-For entry (only
    /// behind a proxy that sets it).
    #[arg(long, env = "NIMBUS_TRUST_FORWARDED_FOR", default_value_t = false, action = clap::ArgAction::Set)]
    trust_forwarded_for: bool,
}

/// The identity providers configured by `args`.
fn providers(args: &SignInArgs, public_url: Option<&str>) -> Result<Vec<ProviderConfig>> {
    let mut configs = Vec::new();
    let needs_url = |what: &str| {
        anyhow::anyhow!(
            "{what} needs NIMBUS_PUBLIC_URL (the provider redirects browsers back to it)"
        )
    };
    match (
        &args.oidc_issuer,
        &args.oidc_client_id,
        &args.oidc_client_secret,
    ) {
        (None, None, None) => {}
        (Some(issuer), Some(id), Some(secret)) => {
            public_url.ok_or_else(|| needs_url("NIMBUS_OIDC_ISSUER"))?;
            configs.push(ProviderConfig {
                id: "oidc".into(),
                display_name: args.oidc_name.clone(),
                kind: ProviderKind::Oidc {
                    issuer: issuer.clone(),
                },
                client_id: id.clone(),
                client_secret: secret.clone(),
            });
        }
        _ => anyhow::bail!(
            "OpenID Connect needs all of NIMBUS_OIDC_ISSUER, NIMBUS_OIDC_CLIENT_ID and NIMBUS_OIDC_CLIENT_SECRET"
        ),
    }
    match (&args.github_client_id, &args.github_client_secret) {
        (None, None) => {}
        (Some(id), Some(secret)) => {
            public_url.ok_or_else(|| needs_url("NIMBUS_GITHUB_CLIENT_ID"))?;
            configs.push(ProviderConfig::github(
                id.clone(),
                secret.clone(),
                args.github_url.clone(),
                args.github_api_url.clone(),
            ));
        }
        _ => anyhow::bail!(
            "GitHub sign-in needs both NIMBUS_GITHUB_CLIENT_ID and NIMBUS_GITHUB_CLIENT_SECRET"
        ),
    }
    Ok(configs)
}

#[derive(Args, Debug)]
struct GraceArgs {
    /// How long replaced packs and unrecorded uploads stay in the object
    /// store before maintenance deletes them (`1h`, `10m`, `30s`). Must be
    /// longer than the slowest clone or push.
    #[arg(long, env = "NIMBUS_GC_GRACE", default_value = "1h", value_parser = parse_duration)]
    gc_grace: std::time::Duration,
}

fn parse_visibility(text: &str) -> Result<Visibility, String> {
    Visibility::parse(text).ok_or_else(|| format!("{text:?} is not public, private or hidden"))
}

/// `90`, `90s`, `10m`, `1h`, `2d`.
fn parse_duration(text: &str) -> Result<std::time::Duration, String> {
    let text = text.trim();
    let split = text
        .find(|c: char| !c.is_ascii_digit())
        .unwrap_or(text.len());
    let (number, unit) = text.split_at(split);
    let number: u64 = number
        .parse()
        .map_err(|_| format!("{text:?} is not a duration like 30s, 10m, 1h or 2d"))?;
    let seconds = match unit {
        "" | "s" => 1,
        "m" => 60,
        "h" => 3600,
        "d" => 86400,
        _ => {
            return Err(format!(
                "{text:?} is not a duration like 30s, 10m, 1h or 2d"
            ));
        }
    };
    Ok(std::time::Duration::from_secs(
        number.saturating_mul(seconds),
    ))
}

#[derive(Subcommand, Debug)]
enum RepoCommand {
    /// Create a repository.
    Create {
        name: String,
        /// Only the owner and collaborators can read it (`--visibility private`).
        #[arg(long, conflicts_with = "visibility")]
        private: bool,
        /// public, private or hidden (readable by URL, not listed).
        #[arg(long, value_parser = parse_visibility)]
        visibility: Option<Visibility>,
        /// The branch HEAD points at.
        #[arg(long, default_value = "main")]
        default_branch: String,
    },
    /// List repositories.
    List,
    /// Delete a repository and everything stored for it.
    Delete { name: String },
    /// Rename a repository.
    Rename { name: String, new_name: String },
    /// Create a repository as a mirror of another one: its branches, tags
    /// and HEAD, from a git bundle file or a smart-HTTP(S) URL.
    Import {
        name: String,
        /// An `http(s)://` repository URL (credentials may be in the URL) or
        /// the path of a git bundle (`git bundle create FILE --all`).
        #[arg(long = "from", value_name = "URL|BUNDLE")]
        source: String,
        /// Only the owner can read it.
        #[arg(long)]
        private: bool,
        /// A token for the source, sent as the HTTP Basic password.
        #[arg(long, env = "NIMBUS_IMPORT_TOKEN", hide_env_values = true)]
        token: Option<String>,
    },
    /// Compact a repository's packs and collect its garbage: one pack of
    /// what the refs reach; replaced packs and unrecorded uploads older
    /// than the grace period are deleted. Safe while servers run.
    Gc {
        name: String,
        /// Merge the packs but keep unreachable objects.
        #[arg(long)]
        compact_only: bool,
        #[command(flatten)]
        grace: GraceArgs,
    },
    /// Write the bundle offered to clones by `bundle-uri` now (servers
    /// write one after pushes once the newest is older than
    /// NIMBUS_BUNDLE_REFRESH). Nothing is written when the newest bundle
    /// already holds the current refs.
    Bundle { name: String },
    /// Write a repository as a git bundle (every ref, HEAD and all objects).
    Export {
        name: String,
        /// The bundle file (default: NAME.bundle); `-` for standard output.
        #[arg(long, short)]
        output: Option<PathBuf>,
    },
}

struct Backends {
    meta: Arc<dyn MetadataStore>,
    app: Arc<App>,
}

async fn open(storage: &StorageArgs, serve: Option<&ServeArgs>) -> Result<Backends> {
    let data = &storage.data_dir;
    std::fs::create_dir_all(data)
        .with_context(|| format!("cannot create the data directory {}", data.display()))?;
    let meta: Arc<dyn MetadataStore> = match storage.database_url.as_deref() {
        None | Some("") => Arc::new(
            SqliteMetadata::open(&data.join("nimbus.db"))
                .await
                .with_context(|| format!("cannot open the database in {}", data.display()))?,
        ),
        Some(url) if url.starts_with("postgres://") || url.starts_with("postgresql://") => {
            // The URL may hold a password: never print it.
            Arc::new(
                PgMetadata::connect(url)
                    .await
                    .context("cannot connect to the PostgreSQL database in NIMBUS_DATABASE_URL")?,
            )
        }
        Some(_) => anyhow::bail!(
            "NIMBUS_DATABASE_URL must be a postgres:// URL; leave it unset to use SQLite in the data directory"
        ),
    };
    let (store, store_setting): (Arc<dyn ObjectStore>, String) =
        match storage.object_store.as_deref() {
            None | Some("") => (
                Arc::new(LocalObjectStore::new(data.join("objects"))),
                "NIMBUS_DATA_DIR (its objects directory)".to_owned(),
            ),
            Some(url) if url.starts_with("s3://") => {
                let mut config: nimbus_store::S3Config = url
                    .parse()
                    .with_context(|| format!("NIMBUS_OBJECT_STORE={url}"))?;
                config.force_path_style = storage.s3_path_style;
                (
                    Arc::new(nimbus_store::S3ObjectStore::connect(config).await),
                    format!("NIMBUS_OBJECT_STORE={url}"),
                )
            }
            Some(url) => (
                Arc::new(LocalObjectStore::new(PathBuf::from(
                    url.strip_prefix("file://").unwrap_or(url),
                ))),
                format!("NIMBUS_OBJECT_STORE={url}"),
            ),
        };
    if serve.is_some() {
        // A wrong bucket, endpoint or permission stops start-up here rather
        // than failing the first push.
        store.check().await.context(store_setting)?;
    }
    let cache_dir = data.join("cache");
    let cache = PackCache::new(
        cache_dir.clone(),
        store.clone(),
        storage.cache_mib.saturating_mul(1 << 20),
    )
    .with_context(|| format!("cannot open the pack cache in {}", cache_dir.display()))?;
    let clone_packs = match storage.clone_cache_mib {
        0 => None,
        mib => {
            let directory = data.join("clone-packs");
            let cache = ClonePackCache::new(directory.clone(), mib.saturating_mul(1 << 20))
                .with_context(|| {
                    format!(
                        "cannot open the clone pack cache in {}",
                        directory.display()
                    )
                })?;
            Some(Arc::new(cache))
        }
    };
    let max_pack_bytes = serve
        .map(|s| s.max_pack_mib)
        .unwrap_or(4096)
        .saturating_mul(1 << 20);
    let git = Arc::new(GitService::new(
        meta.clone(),
        store,
        cache,
        GitServiceConfig {
            staging_dir: data.join("tmp"),
            ingest_limits: IngestLimits {
                max_pack_bytes,
                max_objects: serve
                    .map(|s| s.max_pack_objects)
                    .unwrap_or(IngestLimits::default().max_objects),
                ..IngestLimits::default()
            },
            clone_packs,
            reach: Some(Arc::new(ReachIndex::new(data.join("reach")).with_context(
                || {
                    format!(
                        "cannot create the reachability index directory in {}",
                        data.display()
                    )
                },
            )?)),
            bundle_uri: storage.bundle_uri.then(|| BundleUriConfig {
                refresh_after: (!storage.bundle_refresh.is_zero())
                    .then_some(storage.bundle_refresh),
                min_pack_bytes: storage.bundle_min_mib.saturating_mul(1 << 20),
                grace: serve.map_or(BundleUriConfig::default().grace, |s| s.grace.gc_grace),
            }),
        },
    ));
    let access = Arc::new(nimbus_auth::AccountAccess::new(
        meta.clone(),
        nimbus_auth::PolicySettings {
            anonymous_read: serve.is_none_or(|s| s.anonymous_read),
        },
    ));
    let maintainer = serve.map(|args| {
        Maintainer::new(
            git.clone(),
            meta.clone(),
            MaintenanceConfig {
                compact_threshold: args.compact_threshold,
                grace: args.grace.gc_grace,
                gc_interval: (!args.gc_interval.is_zero()).then_some(args.gc_interval),
            },
        )
    });
    let public_url = serve
        .and_then(|s| s.public_url.clone())
        .map(|url| url.trim_end_matches('/').to_owned());
    // Session tokens name the instance; without a public URL, a fixed name.
    let issuer = public_url.clone().unwrap_or_else(|| "nimbus".to_owned());
    let keys = SessionKeys::load_or_create(meta.as_ref(), &issuer)
        .await
        .context("cannot load or create the session signing key")?;
    let provider_configs = match serve {
        Some(args) => providers(&args.sign_in, public_url.as_deref())?,
        None => Vec::new(),
    };
    let providers = Providers::new(
        provider_configs,
        meta.clone(),
        public_url.as_deref().unwrap_or(""),
    )
    .context("cannot set up the identity providers")?;
    let relay = serve.map(|args| {
        let bus: Arc<dyn nimbus_types::events::EventBus> = match &args.nats_url {
            Some(url) => {
                let mut config = nimbus_events::nats::NatsConfig::new(url.clone());
                config.stream = args.nats_stream.clone();
                Arc::new(nimbus_events::lazy::LazyNatsBus::new(config))
            }
            None => Arc::new(nimbus_events::in_process::InProcessBus::new()),
        };
        Arc::new(nimbus_events::relay::Relay::new(
            meta.clone(),
            bus,
            nimbus_events::relay::RelayConfig::default(),
        ))
    });
    let webhook_policy = Arc::new(
        match serve.and_then(|s| s.webhooks.webhook_allow.as_deref()) {
            Some(list) => nimbus_webhooks::guard::AddressPolicy::with_allowlist(list)
                .context("invalid NIMBUS_WEBHOOK_ALLOW")?,
            None => nimbus_webhooks::guard::AddressPolicy::public_only(),
        },
    );
    let webhooks = match serve {
        Some(args) => {
            // Links in payloads: the public URL, else the listen address.
            let base_url = public_url
                .clone()
                .unwrap_or_else(|| format!("http://{}", args.listen));
            let hooks = &args.webhooks;
            let mut config = nimbus_webhooks::dispatch::DispatcherConfig::new(
                &base_url,
                webhook_policy.as_ref().clone(),
            );
            config.retry_base = hooks.webhook_retry;
            config.max_attempts = hooks.webhook_attempts.max(1);
            config.timeout = hooks.webhook_timeout;
            config.keep_log =
                std::time::Duration::from_secs(hooks.webhook_log_days.saturating_mul(86400));
            Some(Arc::new(
                nimbus_webhooks::dispatch::Dispatcher::new(meta.clone(), config)
                    .context("cannot set up webhooks")?,
            ))
        }
        None => None,
    };
    let app = Arc::new(App {
        meta: meta.clone(),
        git,
        maintainer,
        access,
        relay,
        webhooks,
        webhook_policy,
        sessions: Arc::new(Sessions::new(meta.clone(), keys)),
        providers: Arc::new(providers),
        limits: Arc::new(AuthLimits::new(
            serve.map_or(20, |s| s.sign_in.auth_max_failures),
            std::time::Duration::from_secs(15 * 60),
        )),
        last_commits: Arc::default(),
        page_limits: Arc::new(nimbus_auth::limit::FailureLimiter::new(
            serve.map_or(60, |s| s.anonymous_page_limit),
            std::time::Duration::from_secs(60),
        )),
        config: AppConfig {
            secure_cookies: public_url
                .as_deref()
                .is_some_and(|url| url.starts_with("https://")),
            trust_forwarded_for: serve.is_some_and(|s| s.sign_in.trust_forwarded_for),
            public_url,
            ..AppConfig::default()
        },
    });
    Ok(Backends { meta, app })
}

fn init_logging(filter: &str) {
    let filter = tracing_subscriber::EnvFilter::try_new(filter)
        .unwrap_or_else(|_| tracing_subscriber::EnvFilter::new("info"));
    tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_ansi(std::io::IsTerminal::is_terminal(&std::io::stderr()))
        .with_writer(std::io::stderr)
        .init();
}

/// The listening socket. TCP_NODELAY is set on it so that every accepted
/// connection inherits it (Linux copies the option): git's exchanges are
/// request, small response, request, and without it each small response
/// can wait for the client's delayed acknowledgement (40 ms).
fn listen(address: SocketAddr) -> std::io::Result<tokio::net::TcpListener> {
    let socket = if address.is_ipv4() {
        tokio::net::TcpSocket::new_v4()?
    } else {
        tokio::net::TcpSocket::new_v6()?
    };
    socket.set_reuseaddr(true)?;
    socket.set_nodelay(true)?;
    socket.bind(address)?;
    socket.listen(1024)
}

async fn serve(storage: &StorageArgs, args: &ServeArgs) -> Result<()> {
    let backends = open(storage, Some(args)).await?;
    // Load the highlighting grammars now rather than on the first file view.
    tokio::task::spawn_blocking(nimbus_web::ui::highlight::warm);
    if let Some(token) =
        nimbus_auth::bootstrap_owner(backends.meta.as_ref(), args.owner_token.as_deref()).await?
    {
        println!("nimbus: created the owner account. Its access token (shown only once):");
        println!("nimbus:   {token}");
        println!(
            "nimbus: use it as the password for git push, or as 'Authorization: Bearer <token>'."
        );
    }
    if let Some(maintainer) = &backends.app.maintainer {
        maintainer.spawn_periodic();
    }
    if let Some(relay) = &backends.app.relay {
        relay.spawn();
    }
    if let Some(dispatcher) = &backends.app.webhooks {
        dispatcher.spawn();
    }
    let listener =
        listen(args.listen).with_context(|| format!("cannot listen on {}", args.listen))?;
    let address = listener.local_addr()?;
    println!("nimbus: listening on http://{address}");
    tracing::info!(%address, data_dir = %storage.data_dir.display(), "serving");
    let shutdown = async {
        let ctrl_c = tokio::signal::ctrl_c();
        #[cfg(unix)]
        {
            let mut term =
                match tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate()) {
                    Ok(term) => term,
                    Err(_) => {
                        let _ = ctrl_c.await;
                        return;
                    }
                };
            tokio::select! {
                _ = ctrl_c => {},
                _ = term.recv() => {},
            }
        }
        #[cfg(not(unix))]
        let _ = ctrl_c.await;
        tracing::info!("shutting down");
    };
    nimbus_web::serve(backends.app, listener, shutdown).await;
    Ok(())
}

async fn repo_command(storage: &StorageArgs, command: &RepoCommand) -> Result<()> {
    let backends = open(storage, None).await?;
    let app = &backends.app;
    let find = |name: &str| {
        let name = RepoName::new(name).map_err(|e| anyhow::anyhow!("{e}"));
        async {
            let name = name?;
            backends
                .meta
                .repository(&name)
                .await?
                .with_context(|| format!("repository '{name}' not found"))
        }
    };
    match command {
        RepoCommand::Create {
            name,
            private,
            visibility,
            default_branch,
        } => {
            let name = RepoName::new(name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let visibility = visibility.unwrap_or(Visibility::from_private(*private));
            let repo = app
                .create_repository(
                    name,
                    visibility,
                    Some(default_branch.clone()),
                    cli_actor(app).await.as_ref(),
                )
                .await?;
            record(
                app,
                Audit::new("repo.created").repo(&repo.name),
                &format!(
                    "{} repository, default branch {}",
                    repo.visibility, repo.default_branch
                ),
            )
            .await;
            println!(
                "created {} repository '{}' (default branch {})",
                repo.visibility, repo.name, repo.default_branch
            );
        }
        RepoCommand::List => {
            for repo in backends.meta.list_repositories().await? {
                println!(
                    "{}\t{}\t{}",
                    repo.name, repo.visibility, repo.default_branch
                );
            }
        }
        RepoCommand::Delete { name } => {
            let repo = find(name).await?;
            app.delete_repository(&repo, cli_actor(app).await.as_ref())
                .await?;
            record(app, Audit::new("repo.deleted").repo(&repo.name), "").await;
            println!("deleted repository '{}'", repo.name);
        }
        RepoCommand::Rename { name, new_name } => {
            let repo = find(name).await?;
            let new_name = RepoName::new(new_name).map_err(|e| anyhow::anyhow!("{e}"))?;
            let renamed = app
                .update_repository(
                    &repo,
                    RepoUpdate {
                        name: Some(new_name),
                        ..RepoUpdate::default()
                    },
                    cli_actor(app).await.as_ref(),
                )
                .await?;
            record(
                app,
                Audit::new("repo.updated").repo(&renamed.name),
                &nimbus_web::api::repo_changes(&repo, &renamed),
            )
            .await;
            println!("renamed '{}' to '{}'", repo.name, renamed.name);
        }
        RepoCommand::Import {
            name,
            source,
            private,
            token,
        } => {
            let name = RepoName::new(name).map_err(|e| anyhow::anyhow!("{e}"))?;
            if backends.meta.repository(&name).await?.is_some() {
                anyhow::bail!("repository '{name}' already exists: import only into a new name");
            }
            // Read the source's refs before creating anything.
            let source = source.clone();
            let credentials = import::Credentials {
                token: token.clone(),
            };
            let prepared =
                tokio::task::spawn_blocking(move || import::prepare(&source, &credentials))
                    .await??;
            let repo = app
                .create_repository(
                    name,
                    Visibility::from_private(*private),
                    prepared.head_branch.clone(),
                    cli_actor(app).await.as_ref(),
                )
                .await?;
            let skipped = prepared.skipped;
            let refs = prepared.refs.clone();
            let imported = async {
                if refs.is_empty() {
                    return Ok(None);
                }
                let pack = tokio::task::spawn_blocking(move || prepared.into_pack()).await??;
                anyhow::Ok(Some(app.git.import_pack(&repo, pack, refs).await?))
            }
            .await;
            let summary = match imported {
                Ok(summary) => summary,
                Err(err) => {
                    // Leave nothing half-imported behind.
                    if let Err(cleanup) = app.delete_repository(&repo, None).await {
                        tracing::warn!(repo = %repo.name, error = %cleanup, "could not remove the failed import");
                    }
                    return Err(err.context(format!("importing '{}' failed", repo.name)));
                }
            };
            match summary {
                Some(summary) => println!(
                    "imported '{}': {} refs, {} objects (default branch {})",
                    repo.name, summary.refs, summary.objects, repo.default_branch
                ),
                None => println!("imported '{}': the source is empty", repo.name),
            }
            if skipped > 0 {
                println!(
                    "skipped {skipped} refs outside refs/heads/ and refs/tags/ (pull requests, notes and the like)"
                );
            }
        }
        RepoCommand::Gc {
            name,
            compact_only,
            grace,
        } => {
            let repo = find(name).await?;
            let kind = if *compact_only {
                MaintenanceKind::Compact
            } else {
                MaintenanceKind::CollectGarbage
            };
            let report = app.git.maintain(&repo, kind, grace.gc_grace).await?;
            app.git.update_reach_index(&repo).await?;
            if let Some(reason) = &report.skipped {
                println!("packs left as they were: {reason}");
            }
            println!(
                "{}: packs {} -> {}, objects {} -> {}, stored bytes {} -> {}; deleted {} replaced and {} unrecorded packs",
                repo.name,
                report.packs_before,
                report.packs_after,
                report.objects_before,
                report.objects_after,
                report.stored_bytes_before,
                report.stored_bytes_after,
                report.retired_deleted,
                report.orphans_deleted
            );
        }
        RepoCommand::Bundle { name } => {
            let repo = find(name).await?;
            match app.git.write_bundle(&repo).await? {
                BundleOutcome::Written { bundle, refs } => println!(
                    "{}: wrote bundle {} ({} refs, {} bytes)",
                    repo.name, bundle.name, refs, bundle.size
                ),
                BundleOutcome::Unchanged { bundle } => println!(
                    "{}: the bundle {} already holds the current refs",
                    repo.name, bundle.name
                ),
                BundleOutcome::Empty => {
                    anyhow::bail!(
                        "repository '{}' is empty: there is nothing to bundle",
                        repo.name
                    )
                }
            }
        }
        RepoCommand::Export { name, output } => {
            let repo = find(name).await?;
            let target = import::export_target(repo.name.as_str(), output.as_deref());
            let summary = if target.as_os_str() == "-" {
                app.git.export_bundle(&repo, std::io::stdout()).await?
            } else {
                // Written beside the target and renamed, so a failed export
                // leaves no partial bundle.
                let partial = target.with_extension("bundle.partial");
                let file = std::fs::File::create(&partial)
                    .with_context(|| format!("cannot create {}", partial.display()))?;
                match app.git.export_bundle(&repo, file).await {
                    Ok(summary) => {
                        std::fs::rename(&partial, &target)
                            .with_context(|| format!("cannot write {}", target.display()))?;
                        summary
                    }
                    Err(err) => {
                        let _ = std::fs::remove_file(&partial);
                        return Err(err.into());
                    }
                }
            };
            eprintln!(
                "exported '{}': {} refs, {} objects",
                repo.name, summary.refs, summary.objects
            );
        }
    }
    Ok(())
}

async fn find_user(meta: &dyn MetadataStore, name: &str) -> Result<nimbus_types::metadata::User> {
    meta.user_by_name(name)
        .await?
        .with_context(|| format!("user '{name}' not found"))
}

/// The command line acts as the owner, in events.
async fn cli_actor(app: &App) -> Option<nimbus_types::events::EventActor> {
    match app.meta.owner().await {
        Ok(owner) => owner.map(|owner| nimbus_types::events::EventActor {
            id: owner.id.0,
            name: owner.name,
        }),
        Err(err) => {
            tracing::warn!(error = %err, "could not find the owner for an event");
            None
        }
    }
}

/// Record an audit event of the command line: done by the owner account,
/// with `command line` in front of its detail.
async fn record(app: &App, audit: Audit, detail: &str) {
    let detail = if detail.is_empty() {
        "command line".to_owned()
    } else {
        format!("command line: {detail}")
    };
    let mut audit = audit.detail(detail);
    match app.meta.owner().await {
        Ok(Some(owner)) => audit = audit.by_user(&owner),
        Ok(None) => {}
        Err(err) => tracing::warn!(error = %err, "could not find the owner for the audit log"),
    }
    app.audit(audit).await;
}

fn unix_now() -> Result<i64> {
    Ok(i64::try_from(
        std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)?
            .as_secs(),
    )?)
}

/// `2026-11-22 13:03:18` (UTC).
fn format_utc(seconds: i64) -> String {
    let days = seconds.div_euclid(86_400);
    let secs = seconds.rem_euclid(86_400);
    // Howard Hinnant's civil_from_days.
    let z = days + 719_468;
    let era = z.div_euclid(146_097);
    let doe = z.rem_euclid(146_097);
    let yoe = (doe - doe / 1460 + doe / 36_524 - doe / 146_096) / 365;
    let doy = doe - (365 * yoe + yoe / 4 - yoe / 100);
    let mp = (5 * doy + 2) / 153;
    let day = doy - (153 * mp + 2) / 5 + 1;
    let month = if mp < 10 { mp + 3 } else { mp - 9 };
    let year = yoe + era * 400 + i64::from(month <= 2);
    format!(
        "{year:04}-{month:02}-{day:02} {:02}:{:02}:{:02}",
        secs / 3600,
        secs % 3600 / 60,
        secs % 60
    )
}

/// Read one line (the password) from standard input.
fn read_password_line() -> Result<String> {
    let mut line = String::new();
    std::io::stdin()
        .read_line(&mut line)
        .context("cannot read the password from standard input")?;
    let password = line.trim_end_matches(['\n', '\r']).to_owned();
    if password.is_empty() {
        anyhow::bail!("no password on standard input: give it as one line");
    }
    Ok(password)
}

async fn user_command(storage: &StorageArgs, command: &UserCommand) -> Result<()> {
    let backends = open(storage, None).await?;
    let meta = backends.meta.as_ref();
    let app = &backends.app;
    match command {
        UserCommand::Add { name } => {
            nimbus_auth::validate_user_name(name)?;
            let user = meta.create_user(name).await?;
            record(app, Audit::new("user.created").target(&user.name), "").await;
            println!("created user '{}'", user.name);
        }
        UserCommand::List => {
            for user in meta.list_users().await? {
                println!(
                    "{}\t{}",
                    user.name,
                    if user.is_owner { "owner" } else { "user" }
                );
            }
        }
        UserCommand::Remove { name } => {
            let user = find_user(meta, name).await?;
            meta.delete_user(user.id).await?;
            record(app, Audit::new("user.deleted").target(&user.name), "").await;
            println!("removed user '{}'", user.name);
        }
        UserCommand::Invite {
            repo,
            access,
            expires,
            note,
            public_url,
        } => {
            let owner = meta.owner().await?.context(
                "there is no owner account yet: start the server once (nimbus serve) to create it",
            )?;
            let max = std::time::Duration::from_secs(30 * 86_400);
            if expires.is_zero() || *expires > max {
                anyhow::bail!("--expires must be between 1s and 30d");
            }
            let grant = match (repo, access) {
                (Some(repo), Some(access)) => {
                    let level = Access::parse(access).with_context(|| {
                        format!("unknown access level {access:?}; use read, write or admin")
                    })?;
                    let name = RepoName::new(repo).map_err(|e| anyhow::anyhow!("{e}"))?;
                    let repo = meta
                        .repository(&name)
                        .await?
                        .with_context(|| format!("repository '{name}' not found"))?;
                    Some((repo, level))
                }
                _ => None,
            };
            let now = unix_now()?;
            let expires_at = now.saturating_add(i64::try_from(expires.as_secs())?);
            let secret = nimbus_auth::token::generate();
            let id = meta
                .create_invitation(&NewInvitation {
                    hash: nimbus_auth::token::hash(&secret).to_vec(),
                    created_by: owner.id,
                    grant: grant.as_ref().map(|(repo, level)| (repo.id, *level)),
                    note: note.clone(),
                    created_at: now,
                    expires_at,
                })
                .await?;
            let mut audit = Audit::new("invitation.created").target(id);
            let detail = match &grant {
                Some((repo, level)) => {
                    audit = audit.repo(&repo.name);
                    format!("{level} access; expires {}", format_utc(expires_at))
                }
                None => format!("expires {}", format_utc(expires_at)),
            };
            record(app, audit, &detail).await;
            let path = format!("/invite/{secret}");
            eprintln!(
                "created invitation {id}, valid until {} UTC; the link is shown only once:",
                format_utc(expires_at)
            );
            match public_url.as_deref().filter(|url| !url.is_empty()) {
                Some(base) => println!("{}{path}", base.trim_end_matches('/')),
                None => {
                    println!("{path}");
                    eprintln!(
                        "prefix it with the server's URL (set --public-url or NIMBUS_PUBLIC_URL to print the whole link)"
                    );
                }
            }
        }
        UserCommand::Invitations => {
            let now = unix_now()?;
            println!("id\tstate\trepo\taccess\texpires\tused_by\tnote");
            for invitation in meta.list_invitations().await? {
                let (repo, access) = match &invitation.grant {
                    Some((repo, access)) => (repo.clone(), access.to_string()),
                    None => ("-".to_owned(), "-".to_owned()),
                };
                println!(
                    "{}\t{}\t{repo}\t{access}\t{}\t{}\t{}",
                    invitation.id,
                    nimbus_web::api_identity::invitation_state(&invitation, now),
                    format_utc(invitation.expires_at),
                    invitation.used_by.as_deref().unwrap_or("-"),
                    invitation.note
                );
            }
        }
        UserCommand::Uninvite { id } => {
            if !meta.revoke_invitation(*id, unix_now()?).await? {
                anyhow::bail!("there is no pending invitation {id}");
            }
            record(app, Audit::new("invitation.revoked").target(id), "").await;
            println!("revoked invitation {id}");
        }
        UserCommand::Password { name } => {
            let user = find_user(meta, name).await?;
            let password = read_password_line()?;
            let user_name = user.name.clone();
            let hashed = tokio::task::spawn_blocking(move || {
                nimbus_auth::password::check_strength(&password, &user_name)?;
                nimbus_auth::password::hash(&password)
            })
            .await??;
            meta.set_password_hash(user.id, Some(&hashed)).await?;
            let revoked = meta.revoke_user_sessions(user.id, unix_now()?).await?;
            record(
                app,
                Audit::new("password.changed").target(&user.name),
                &format!("{revoked} web sessions revoked"),
            )
            .await;
            println!(
                "set the password of '{}'; signed out of {revoked} web sessions",
                user.name
            );
        }
        UserCommand::Link {
            name,
            provider,
            subject,
        } => {
            let user = find_user(meta, name).await?;
            if provider.is_empty() || subject.is_empty() {
                anyhow::bail!("the provider and subject must not be empty");
            }
            match meta.user_by_identity(provider, subject).await? {
                Some(holder) if holder.id == user.id => {
                    println!("'{}' is linked to {provider} {subject} already", user.name);
                    return Ok(());
                }
                Some(holder) => anyhow::bail!(
                    "{provider} {subject} is linked to '{}'; unlink it there first",
                    holder.name
                ),
                None => {}
            }
            if !meta.link_identity(user.id, provider, subject).await? {
                anyhow::bail!("{provider} {subject} is linked to another account");
            }
            record(
                app,
                Audit::new("identity.linked").target(&user.name),
                &format!("{provider} {subject}"),
            )
            .await;
            println!("linked {provider} {subject} to '{}'", user.name);
        }
        UserCommand::Unlink {
            name,
            provider,
            subject,
        } => {
            let user = find_user(meta, name).await?;
            if !meta.unlink_identity(user.id, provider, subject).await? {
                anyhow::bail!(
                    "'{}' has no linked identity {provider} {subject}",
                    user.name
                );
            }
            record(
                app,
                Audit::new("identity.unlinked").target(&user.name),
                &format!("{provider} {subject}"),
            )
            .await;
            println!("unlinked {provider} {subject} from '{}'", user.name);
        }
    }
    Ok(())
}

async fn audit_command(storage: &StorageArgs, args: &AuditArgs) -> Result<()> {
    let backends = open(storage, None).await?;
    if let Some(action) = &args.action
        && !nimbus_web::api_identity::valid_action_filter(action)
    {
        anyhow::bail!(
            "invalid --action {action:?}: use lowercase letters and dots, like token. or push"
        );
    }
    if args.limit == 0 || args.limit > nimbus_web::api_identity::MAX_AUDIT_LIMIT {
        anyhow::bail!(
            "--limit must be between 1 and {}",
            nimbus_web::api_identity::MAX_AUDIT_LIMIT
        );
    }
    let events = backends
        .meta
        .list_audit(&AuditQuery {
            action: args.action.clone(),
            actor: args.actor.clone(),
            repo: args.repo.clone(),
            before: args.before,
            since: None,
            limit: args.limit,
        })
        .await?;
    println!("id\ttime (UTC)\tactor\taction\trepo\ttarget\tclient\tdetail");
    for event in events {
        println!(
            "{}\t{}\t{}\t{}\t{}\t{}\t{}\t{}",
            event.id,
            format_utc(event.at),
            event.actor.as_deref().unwrap_or("-"),
            event.action,
            event.repo.as_deref().unwrap_or("-"),
            event.target.as_deref().unwrap_or("-"),
            event.client.as_deref().unwrap_or("-"),
            event.detail
        );
    }
    Ok(())
}

fn format_time(seconds: Option<i64>) -> String {
    seconds.map_or_else(|| "-".to_owned(), |s| s.to_string())
}

async fn token_command(storage: &StorageArgs, command: &TokenCommand) -> Result<()> {
    let backends = open(storage, None).await?;
    let meta = backends.meta.as_ref();
    let app = &backends.app;
    let now = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_secs();
    match command {
        TokenCommand::Create {
            user,
            scopes,
            expires,
            description,
        } => {
            let user = find_user(meta, user).await?;
            let scopes = Scopes::parse(scopes)?;
            if scopes == Scopes::default() {
                anyhow::bail!("a token needs at least one scope");
            }
            let expires_at = expires
                .map(|lifetime| i64::try_from(now.saturating_add(lifetime.as_secs())))
                .transpose()?;
            let issued =
                nimbus_auth::issue_token(meta, user.id, description, scopes, expires_at).await?;
            record(
                app,
                Audit::new("token.created").target(issued.id),
                &format!("for {} with scopes {scopes}", user.name),
            )
            .await;
            eprintln!(
                "created token {} for '{}' with scopes {scopes}; it is shown only once:",
                issued.id, user.name
            );
            println!("{}", issued.secret);
        }
        TokenCommand::List { user } => {
            let user = find_user(meta, user).await?;
            println!("id\tscopes\tcreated\texpires\tlast_used\trevoked\tdescription");
            for token in meta.list_tokens(user.id).await? {
                println!(
                    "{}\t{}\t{}\t{}\t{}\t{}\t{}",
                    token.id,
                    token.scopes,
                    token.created_at,
                    format_time(token.expires_at),
                    format_time(token.last_used_at),
                    format_time(token.revoked_at),
                    token.description
                );
            }
        }
        TokenCommand::Revoke { user, id } => {
            let user = find_user(meta, user).await?;
            if !meta.revoke_token(user.id, *id, i64::try_from(now)?).await? {
                anyhow::bail!("user '{}' has no token {id}", user.name);
            }
            record(
                app,
                Audit::new("token.revoked").target(id),
                &format!("of {}", user.name),
            )
            .await;
            println!("revoked token {id} of '{}'", user.name);
        }
    }
    Ok(())
}

async fn collaborator_command(storage: &StorageArgs, command: &CollaboratorCommand) -> Result<()> {
    let backends = open(storage, None).await?;
    let meta = backends.meta.as_ref();
    let app = &backends.app;
    let find_repo = |name: &str| {
        let name = RepoName::new(name).map_err(|e| anyhow::anyhow!("{e}"));
        async move {
            let name = name?;
            meta.repository(&name)
                .await?
                .with_context(|| format!("repository '{name}' not found"))
        }
    };
    match command {
        CollaboratorCommand::Add { repo, user, access } => {
            let repo = find_repo(repo).await?;
            let user = find_user(meta, user).await?;
            let access = Access::parse(access).with_context(|| {
                format!("unknown access level {access:?}; use read, write or admin")
            })?;
            if user.is_owner {
                anyhow::bail!("the owner is admin on every repository already");
            }
            let previous = meta.collaborator_access(repo.id, user.id).await?;
            meta.set_collaborator(repo.id, user.id, access).await?;
            let event = match previous {
                None => Some((Audit::new("collaborator.added"), access.to_string())),
                Some(previous) if previous != access => Some((
                    Audit::new("collaborator.changed"),
                    format!("{previous} -> {access}"),
                )),
                Some(_) => None,
            };
            if let Some((audit, detail)) = event {
                record(app, audit.repo(&repo.name).target(&user.name), &detail).await;
            }
            println!("'{}' has {access} access to '{}'", user.name, repo.name);
        }
        CollaboratorCommand::List { repo } => {
            let repo = find_repo(repo).await?;
            for collaborator in meta.list_collaborators(repo.id).await? {
                println!("{}\t{}", collaborator.user.name, collaborator.access);
            }
        }
        CollaboratorCommand::Remove { repo, user } => {
            let repo = find_repo(repo).await?;
            let user = find_user(meta, user).await?;
            if !meta.remove_collaborator(repo.id, user.id).await? {
                anyhow::bail!("'{}' is not a collaborator of '{}'", user.name, repo.name);
            }
            record(
                app,
                Audit::new("collaborator.removed")
                    .repo(&repo.name)
                    .target(&user.name),
                "",
            )
            .await;
            println!("removed '{}' from '{}'", user.name, repo.name);
        }
    }
    Ok(())
}

fn main() -> Result<()> {
    purge_freed_memory_at_once();
    let cli = Cli::parse();
    init_logging(&cli.storage.log);
    let runtime = tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()
        .context("cannot start the async runtime")?;
    runtime
        .block_on(async {
            match &cli.command {
                Command::Serve(args) => serve(&cli.storage, args).await,
                Command::Repo(command) => repo_command(&cli.storage, command).await,
                Command::User(command) => user_command(&cli.storage, command).await,
                Command::Token(command) => token_command(&cli.storage, command).await,
                Command::Collaborator(command) => collaborator_command(&cli.storage, command).await,
                Command::Audit(args) => audit_command(&cli.storage, args).await,
                Command::Webhook(args) => webhook_cmd::webhook_command(&cli.storage, args).await,
            }
        })
        .or_else(|err| {
            // A clear message instead of a debug dump.
            eprintln!("nimbus: error: {err:#}");
            std::process::exit(1)
        })
}

#[cfg(test)]
mod tests {
    /// `MI_OPTION_PURGE_DELAY` is the option whose default is mimalloc 3's
    /// purge delay (1000 ms), and setting it takes: a mimalloc upgrade that
    /// renumbered its options fails here.
    #[test]
    #[allow(unsafe_code)]
    fn the_purge_delay_is_the_option_set() {
        if std::env::var_os("MIMALLOC_PURGE_DELAY").is_some() {
            return;
        }
        // SAFETY: reads one of mimalloc's options; no pointers involved.
        let get = || unsafe { libmimalloc_sys::mi_option_get(super::MI_OPTION_PURGE_DELAY) };
        assert_eq!(get(), 1000);
        super::purge_freed_memory_at_once();
        assert_eq!(get(), 0);
    }
}
