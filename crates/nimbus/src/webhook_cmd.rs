//! `nimbus webhook …`: webhooks and their delivery log, on the configured
//! storage directly. A running server sends what these commands schedule.

use crate::{StorageArgs, format_utc, open, record};
use anyhow::{Context, Result, bail};
use clap::{Args, Subcommand};
use nimbus_types::webhooks::{Delivery, HookId, NewWebhook, Webhook, WebhookUpdate};
use nimbus_types::{RepoName, Repository, unix_now};
use nimbus_web::{App, Audit};
use nimbus_webhooks::guard::AddressPolicy;
use nimbus_webhooks::{MAX_SECRET_BYTES, MAX_URL_BYTES, redact_url, validate_events};

#[derive(Args, Debug)]
pub struct WebhookArgs {
    /// Non-public networks webhooks may reach (`127.0.0.1,10.0.0.0/8`): the
    /// same setting as the server's.
    #[arg(long, env = "NIMBUS_WEBHOOK_ALLOW", global = true)]
    allow: Option<String>,
    #[command(subcommand)]
    command: WebhookCommand,
}

#[derive(Subcommand, Debug)]
enum WebhookCommand {
    /// Create a webhook and print its id (and its secret, once, when
    /// generated).
    Add {
        /// The URL to POST events to.
        url: String,
        /// The repository whose events it gets.
        #[arg(
            long,
            required_unless_present = "instance",
            conflicts_with = "instance"
        )]
        repo: Option<String>,
        /// Every repository's events (instance-wide).
        #[arg(long)]
        instance: bool,
        /// Event types, comma-separated (`push,tag.created`), or `*`.
        #[arg(long, default_value = "push", value_delimiter = ',')]
        events: Vec<String>,
        /// The signing secret (default: generated). Prefer the environment:
        /// flags are visible to other users of the machine.
        #[arg(long, env = "NIMBUS_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// Create it disabled.
        #[arg(long)]
        inactive: bool,
    },
    /// List webhooks: of one repository, the instance-wide ones, or all.
    List {
        #[arg(long, conflicts_with = "instance")]
        repo: Option<String>,
        #[arg(long)]
        instance: bool,
    },
    /// Change a webhook.
    Update {
        id: HookId,
        #[arg(long)]
        url: Option<String>,
        #[arg(long, value_delimiter = ',')]
        events: Option<Vec<String>>,
        #[arg(long, env = "NIMBUS_WEBHOOK_SECRET", hide_env_values = true)]
        secret: Option<String>,
        /// true or false.
        #[arg(long, action = clap::ArgAction::Set)]
        active: Option<bool>,
    },
    /// Delete a webhook and its delivery log.
    Remove { id: HookId },
    /// A webhook's delivery log, newest first.
    Deliveries {
        id: HookId,
        /// Only attempts older than this delivery id (to page back).
        #[arg(long)]
        before: Option<i64>,
        #[arg(long, default_value_t = 20)]
        limit: u32,
    },
    /// One attempt: its request and response.
    Delivery { id: HookId, delivery: i64 },
    /// Send a delivery again (the running server sends it within a second).
    Redeliver { id: HookId, delivery: i64 },
}

fn check_url(policy: &AddressPolicy, url: &str) -> Result<String> {
    if url.len() > MAX_URL_BYTES {
        bail!("the URL is longer than {MAX_URL_BYTES} bytes");
    }
    Ok(policy
        .parse_url(url)
        .with_context(|| format!("cannot use {} as a webhook URL", redact_url(url)))?
        .to_string())
}

fn check_secret(secret: &str) -> Result<()> {
    if secret.len() < 8 || secret.len() > MAX_SECRET_BYTES {
        bail!("the secret must be 8 to {MAX_SECRET_BYTES} bytes long");
    }
    Ok(())
}

async fn repository(app: &App, name: &str) -> Result<Repository> {
    let name = RepoName::new(name).map_err(|e| anyhow::anyhow!("{e}"))?;
    app.meta
        .repository(&name)
        .await?
        .with_context(|| format!("repository '{name}' not found"))
}

async fn existing(app: &App, id: HookId) -> Result<Webhook> {
    app.meta
        .webhook(id)
        .await?
        .with_context(|| format!("webhook {id} not found"))
}

async fn repo_label(app: &App, hook: &Webhook) -> Result<String> {
    let Some(repo) = hook.repo else {
        return Ok("(instance)".to_owned());
    };
    let all = app.meta.list_repositories().await?;
    Ok(all
        .into_iter()
        .find(|candidate| candidate.id == repo)
        .map_or_else(|| format!("repository {}", repo.0), |r| r.name.to_string()))
}

fn print_delivery_line(delivery: &Delivery) {
    let outcome = delivery.outcome.as_ref();
    println!(
        "{}\t{}\t{}\t{}\t{}{}\t{}\t{}",
        delivery.id,
        delivery.guid,
        delivery.event_type,
        delivery.status.as_str(),
        delivery.attempt,
        if delivery.redelivery {
            " (redelivery)"
        } else {
            ""
        },
        outcome
            .and_then(|o| o.response_status)
            .map_or_else(|| "-".to_owned(), |s| s.to_string()),
        outcome.map_or_else(
            || format!("due {}", format_utc(delivery.due_at)),
            |o| o
                .error
                .clone()
                .unwrap_or_else(|| format_utc(o.delivered_at))
        ),
    );
}

pub async fn webhook_command(storage: &StorageArgs, args: &WebhookArgs) -> Result<()> {
    let policy = match &args.allow {
        Some(list) => {
            AddressPolicy::with_allowlist(list).context("invalid NIMBUS_WEBHOOK_ALLOW")?
        }
        None => AddressPolicy::public_only(),
    };
    let backends = open(storage, None).await?;
    let app = &backends.app;
    match &args.command {
        WebhookCommand::Add {
            url,
            repo,
            instance: _,
            events,
            secret,
            inactive,
        } => {
            let url = check_url(&policy, url)?;
            let events = validate_events(events)?;
            if let Some(secret) = secret {
                check_secret(secret)?;
            }
            let repo = match repo {
                Some(name) => Some(repository(app, name).await?),
                None => None,
            };
            let generated = secret
                .is_none()
                .then(nimbus_webhooks::sign::generate_secret);
            let hook = app
                .meta
                .create_webhook(&NewWebhook {
                    repo: repo.as_ref().map(|repo| repo.id),
                    url,
                    secret: secret
                        .clone()
                        .or_else(|| generated.clone())
                        .unwrap_or_default(),
                    events,
                    active: !inactive,
                    created_by: app.meta.owner().await?.map(|owner| owner.id),
                    now: unix_now(),
                })
                .await?;
            let mut audit = Audit::new("webhook.created").target(format!("webhook {}", hook.id));
            if let Some(repo) = &repo {
                audit = audit.repo(&repo.name);
            }
            record(app, audit, &redact_url(&hook.url)).await;
            println!("created webhook {}", hook.id);
            if let Some(secret) = generated {
                println!("its secret (shown only once): {secret}");
            }
        }
        WebhookCommand::List { repo, instance } => {
            let mut hooks = Vec::new();
            if let Some(name) = repo {
                let repo = repository(app, name).await?;
                hooks.extend(app.meta.list_webhooks(Some(repo.id)).await?);
            } else {
                hooks.extend(app.meta.list_webhooks(None).await?);
                if !instance {
                    for repo in app.meta.list_repositories().await? {
                        hooks.extend(app.meta.list_webhooks(Some(repo.id)).await?);
                    }
                }
            }
            println!("id\trepository\tactive\tevents\turl");
            for hook in &hooks {
                println!(
                    "{}\t{}\t{}\t{}\t{}",
                    hook.id,
                    repo_label(app, hook).await?,
                    hook.active,
                    hook.events.join(","),
                    redact_url(&hook.url)
                );
            }
        }
        WebhookCommand::Update {
            id,
            url,
            events,
            secret,
            active,
        } => {
            existing(app, *id).await?;
            let url = url
                .as_deref()
                .map(|url| check_url(&policy, url))
                .transpose()?;
            let events = events.as_deref().map(validate_events).transpose()?;
            if let Some(secret) = secret {
                check_secret(secret)?;
            }
            let hook = app
                .meta
                .update_webhook(
                    *id,
                    &WebhookUpdate {
                        url,
                        secret: secret.clone(),
                        events,
                        active: *active,
                        now: unix_now(),
                    },
                )
                .await?
                .with_context(|| format!("webhook {id} not found"))?;
            record(
                app,
                Audit::new("webhook.updated").target(format!("webhook {id}")),
                &redact_url(&hook.url),
            )
            .await;
            println!("updated webhook {id}");
        }
        WebhookCommand::Remove { id } => {
            let hook = existing(app, *id).await?;
            app.meta.delete_webhook(*id).await?;
            record(
                app,
                Audit::new("webhook.deleted").target(format!("webhook {id}")),
                &redact_url(&hook.url),
            )
            .await;
            println!("removed webhook {id}");
        }
        WebhookCommand::Deliveries { id, before, limit } => {
            if *limit == 0 || *limit > 100 {
                bail!("--limit must be between 1 and 100");
            }
            existing(app, *id).await?;
            println!("id\tguid\tevent\tstatus\tattempt\tresponse\tresult");
            for delivery in app.meta.deliveries(*id, *before, *limit).await? {
                print_delivery_line(&delivery);
            }
        }
        WebhookCommand::Delivery { id, delivery } => {
            existing(app, *id).await?;
            let delivery = app
                .meta
                .delivery(*id, *delivery)
                .await?
                .with_context(|| format!("delivery {delivery} of webhook {id} not found"))?;
            println!("id\tguid\tevent\tstatus\tattempt\tresponse\tresult");
            print_delivery_line(&delivery);
            if let Some(outcome) = &delivery.outcome {
                println!("\nrequest headers:");
                for (name, value) in &outcome.request_headers {
                    println!("  {name}: {value}");
                }
            }
            println!("\nrequest body:\n{}", delivery.body);
            if let Some(outcome) = &delivery.outcome
                && let Some(status) = outcome.response_status
            {
                println!(
                    "\nresponse {status} in {} ms, headers:",
                    outcome.duration_ms
                );
                for (name, value) in &outcome.response_headers {
                    println!("  {name}: {value}");
                }
                println!("\nresponse body:\n{}", outcome.response_body);
            }
        }
        WebhookCommand::Redeliver { id, delivery } => {
            existing(app, *id).await?;
            let original = app
                .meta
                .delivery(*id, *delivery)
                .await?
                .with_context(|| format!("delivery {delivery} of webhook {id} not found"))?;
            let queued = app
                .meta
                .add_delivery(&nimbus_webhooks::redelivery(&original, unix_now()))
                .await?;
            record(
                app,
                Audit::new("webhook.redelivered").target(format!("webhook {id}")),
                &format!("delivery {delivery}"),
            )
            .await;
            println!("queued delivery {} (a redelivery of {delivery})", queued.id);
        }
    }
    Ok(())
}
