//! The event buses against their real backends: `NatsBus` against a real
//! `nats-server` with JetStream (installed by `scripts/nats`; each test
//! starts its own private server on a free port with its own store), and
//! `InProcessBus`.

use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{Context as _, bail, ensure};
use futures::StreamExt;
use nimbus_events::in_process::InProcessBus;
use nimbus_events::nats::{NatsBus, NatsConfig};
use nimbus_types::events::{BusError, Event, EventActor, EventBus, EventData, EventRepository};

/// A private `nats-server -js` on its own port and store directory, killed
/// on drop. `stop` and `start` keep the port and the directory, so a
/// restarted server has the same address and the events stored before.
///
/// The first start lets nats-server choose a free port (`-p -1`) and reads
/// it from the log: a port found free by the test and handed over later
/// could be taken by a parallel test's server in between, and the test
/// would then talk to that one.
struct NatsServer {
    binary: PathBuf,
    /// None until the first start.
    port: Option<u16>,
    store: tempfile::TempDir,
    log: PathBuf,
    process: Option<Child>,
}

impl NatsServer {
    fn start_new() -> anyhow::Result<NatsServer> {
        let store = tempfile::tempdir()?;
        let mut server = NatsServer {
            binary: nats_server_binary()?,
            port: None,
            log: store.path().join("server.log"),
            store,
            process: None,
        };
        server.start()?;
        Ok(server)
    }

    fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port.unwrap_or_default())
    }

    fn start(&mut self) -> anyhow::Result<()> {
        ensure!(self.process.is_none(), "nats-server is already running");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)?;
        // Only what this run of the server writes counts.
        let log_start = log.metadata()?.len() as usize;
        let port = self
            .port
            .map_or_else(|| "-1".to_owned(), |port| port.to_string());
        let child = Command::new(&self.binary)
            .arg("-js")
            .args(["-a", "127.0.0.1", "-p", &port])
            .arg("-sd")
            .arg(self.store.path().join("jetstream"))
            .stdin(Stdio::null())
            .stdout(log.try_clone()?)
            .stderr(log)
            .spawn()
            .with_context(|| format!("starting {}", self.binary.display()))?;
        self.process = Some(child);
        let deadline = Instant::now() + Duration::from_secs(30);
        loop {
            let log = self.log_text();
            let this_run = log.get(log_start..).unwrap_or_default();
            if this_run.contains("Server is ready") {
                let listening = this_run
                    .lines()
                    .find_map(|line| {
                        line.split("Listening for client connections on 127.0.0.1:")
                            .nth(1)
                    })
                    .context("nats-server did not log its client port")?;
                let listening: u16 = listening.trim().parse()?;
                ensure!(
                    self.port.is_none_or(|port| port == listening),
                    "nats-server listens on {listening} instead of {port}"
                );
                self.port = Some(listening);
                return Ok(());
            }
            if let Some(status) = self
                .process
                .as_mut()
                .and_then(|process| process.try_wait().ok().flatten())
            {
                self.process = None;
                bail!("nats-server exited ({status}); its log:\n{this_run}");
            }
            if Instant::now() > deadline {
                bail!("nats-server was not ready within 30 s; its log:\n{this_run}");
            }
            std::thread::sleep(Duration::from_millis(20));
        }
    }

    fn stop(&mut self) {
        if let Some(mut process) = self.process.take() {
            let _ = process.kill();
            let _ = process.wait();
        }
    }

    /// Freezes (`SIGSTOP`) or thaws (`SIGCONT`) the server: it keeps its
    /// connections open but answers nothing, like a hung or unreachable host.
    fn signal(&self, signal: &str) -> anyhow::Result<()> {
        let process = self
            .process
            .as_ref()
            .context("nats-server is not running")?;
        let status = Command::new("kill")
            .args([signal, &process.id().to_string()])
            .status()?;
        ensure!(status.success(), "kill {signal} failed");
        Ok(())
    }

    fn log_text(&self) -> String {
        std::fs::read_to_string(&self.log).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// `nats-server` from PATH, or where Debian's package puts it
/// (`/usr/sbin`, not on every user's PATH).
fn nats_server_binary() -> anyhow::Result<PathBuf> {
    let on_path = std::env::var_os("PATH")
        .map(|path| std::env::split_paths(&path).collect::<Vec<_>>())
        .unwrap_or_default();
    on_path
        .iter()
        .map(|dir| dir.join("nats-server"))
        .chain([
            PathBuf::from("/usr/sbin/nats-server"),
            PathBuf::from("/usr/bin/nats-server"),
        ])
        .find(|candidate| is_executable(candidate))
        .context(
            "nats-server is not installed: run scripts/nats (or scripts/test), which installs it",
        )
}

fn is_executable(path: &Path) -> bool {
    use std::os::unix::fs::PermissionsExt;
    path.metadata()
        .map(|metadata| metadata.is_file() && metadata.permissions().mode() & 0o111 != 0)
        .unwrap_or(false)
}

/// A port nothing listens on right now (for a connection that must fail).
fn free_port() -> anyhow::Result<u16> {
    Ok(TcpListener::bind("127.0.0.1:0")?.local_addr()?.port())
}

fn event(repository: &str, data: EventData) -> Event {
    Event::new(
        EventRepository {
            id: 7,
            name: repository.to_owned(),
        },
        Some(EventActor {
            id: 1,
            name: "owner".to_owned(),
        }),
        1_700_000_000,
        data,
    )
}

fn push(repository: &str, after: char) -> Event {
    event(
        repository,
        EventData::Push {
            ref_name: "refs/heads/main".to_owned(),
            before: "0".repeat(40),
            after: after.to_string().repeat(40),
            created: true,
            deleted: false,
            forced: false,
            commits: Vec::new(),
            commit_count: 1,
            commits_truncated: false,
        },
    )
}

fn branch_created(repository: &str) -> Event {
    event(
        repository,
        EventData::BranchCreated {
            ref_name: "refs/heads/topic".to_owned(),
            target: "a".repeat(40),
        },
    )
}

type PullConsumer = async_nats::jetstream::consumer::PullConsumer;

/// The messages of `consumer` as (subject, event), each acknowledged, until
/// `enough` holds. Fetches without leaving a pull request waiting on the
/// server: a waiting request outlives a dropped consumer handle and would
/// swallow the next message until the ack wait (30 s) ran out.
async fn fetch_until(
    consumer: &PullConsumer,
    enough: impl Fn(&[(String, Event)]) -> bool,
) -> anyhow::Result<Vec<(String, Event)>> {
    let deadline = Instant::now() + Duration::from_secs(20);
    let mut received = Vec::new();
    while !enough(&received) {
        ensure!(
            Instant::now() < deadline,
            "only {} messages arrived: {received:?}",
            received.len()
        );
        let mut batch = consumer.fetch().max_messages(100).messages().await?;
        let mut fetched_any = false;
        while let Some(message) = batch.next().await {
            let message = message.map_err(|error| anyhow::anyhow!("fetch: {error}"))?;
            let event: Event = serde_json::from_slice(&message.payload)?;
            received.push((message.subject.to_string(), event));
            message
                .ack()
                .await
                .map_err(|error| anyhow::anyhow!("ack: {error}"))?;
            fetched_any = true;
        }
        if !fetched_any {
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }
    Ok(received)
}

/// Exactly `count` messages of `consumer`, each acknowledged.
async fn receive(consumer: &PullConsumer, count: usize) -> anyhow::Result<Vec<(String, Event)>> {
    let received = fetch_until(consumer, |received| received.len() >= count).await?;
    ensure!(
        received.len() == count,
        "{} messages instead of {count}: {received:?}",
        received.len()
    );
    let mut more = consumer.fetch().max_messages(1).messages().await?;
    if let Some(extra) = more.next().await {
        bail!(
            "an unexpected extra message on {}",
            extra
                .map_err(|error| anyhow::anyhow!("fetch: {error}"))?
                .subject
        );
    }
    Ok(received)
}

async fn stored_messages(bus: &NatsBus) -> anyhow::Result<u64> {
    let mut stream = bus.jetstream().get_stream(&bus.config().stream).await?;
    Ok(stream.info().await?.state.messages)
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn published_events_reach_a_durable_consumer_in_order() -> anyhow::Result<()> {
    let server = NatsServer::start_new()?;
    let bus = NatsBus::connect(NatsConfig::new(server.url())).await?;
    assert_eq!(bus.name(), "nats");
    let consumer = bus
        .durable_consumer("everything", "nimbus.events.>")
        .await?;

    let events = [
        branch_created("demo"),
        push("demo", 'a'),
        push("my.repo", 'b'),
        push("demo", 'c'),
    ];
    for event in &events {
        bus.publish(event).await?;
    }

    let received = receive(&consumer, events.len()).await?;
    let subjects: Vec<&str> = received
        .iter()
        .map(|(subject, _)| subject.as_str())
        .collect();
    assert_eq!(
        subjects,
        [
            "nimbus.events.demo.branch.created",
            "nimbus.events.demo.push",
            "nimbus.events.my%2Erepo.push",
            "nimbus.events.demo.push",
        ]
    );
    for ((subject, received), sent) in received.iter().zip(&events) {
        assert_eq!(received, sent, "the JSON round trip on {subject}");
        assert_eq!(subject, &bus.subject(sent));
    }

    // The documented filters: one repository, one type everywhere.
    let demo = bus.durable_consumer("demo", "nimbus.events.demo.>").await?;
    let demo_ids: Vec<String> = receive(&demo, 3)
        .await?
        .into_iter()
        .map(|(_, e)| e.id)
        .collect();
    assert_eq!(
        demo_ids,
        [events[0].id.as_str(), &events[1].id, &events[3].id]
    );
    let pushes = bus
        .durable_consumer("pushes", "nimbus.events.*.push")
        .await?;
    let push_ids: Vec<String> = receive(&pushes, 3)
        .await?
        .into_iter()
        .map(|(_, e)| e.id)
        .collect();
    assert_eq!(
        push_ids,
        [events[1].id.as_str(), &events[2].id, &events[3].id]
    );
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_same_event_published_twice_is_stored_once() -> anyhow::Result<()> {
    let server = NatsServer::start_new()?;
    let bus = NatsBus::connect(NatsConfig::new(server.url())).await?;
    let first = push("demo", 'a');
    let second = push("demo", 'b');
    bus.publish(&first).await?;
    bus.publish(&first).await?;
    bus.publish(&second).await?;
    bus.publish(&first).await?;
    assert_eq!(stored_messages(&bus).await?, 2);

    let consumer = bus.durable_consumer("dedup", "nimbus.events.>").await?;
    let ids: Vec<String> = receive(&consumer, 2)
        .await?
        .into_iter()
        .map(|(_, e)| e.id)
        .collect();
    assert_eq!(ids, [first.id, second.id]);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_durable_consumer_catches_up_on_events_published_before_it_existed() -> anyhow::Result<()>
{
    let server = NatsServer::start_new()?;
    let bus = NatsBus::connect(NatsConfig::new(server.url())).await?;
    let events: Vec<Event> = (0..25)
        .map(|n| push(&format!("repo-{}", n % 3), 'a'))
        .collect();
    for event in &events {
        bus.publish(event).await?;
    }

    // A subscriber in another process, arriving late.
    let late = NatsBus::connect(NatsConfig::new(server.url())).await?;
    let consumer = late.durable_consumer("late", "nimbus.events.>").await?;
    let received = receive(&consumer, events.len()).await?;
    let received: Vec<Event> = received.into_iter().map(|(_, event)| event).collect();
    assert_eq!(received, events);

    // It stops and comes back: acknowledged events are not delivered again,
    // new ones are.
    drop(consumer);
    let more = push("repo-0", 'b');
    bus.publish(&more).await?;
    let consumer = late.durable_consumer("late", "nimbus.events.>").await?;
    let received = receive(&consumer, 1).await?;
    assert_eq!(received[0].1, more);
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_fails_while_nats_is_down_and_works_again_after_a_restart() -> anyhow::Result<()> {
    let mut server = NatsServer::start_new()?;
    let bus = NatsBus::connect(NatsConfig::new(server.url())).await?;
    let before = push("demo", 'a');
    bus.publish(&before).await?;

    server.stop();
    // Whether the client has noticed yet or not, publishing returns (within
    // the publish timeout) with Unavailable; the outer bound only keeps a
    // hanging publish from hanging the test.
    for _ in 0..2 {
        let outcome =
            tokio::time::timeout(Duration::from_secs(30), bus.publish(&push("demo", 'x')))
                .await
                .context("publish hung while NATS was down")?;
        match outcome {
            Err(BusError::Unavailable(message)) => {
                assert!(message.contains(&server.url()), "{message}")
            }
            other => bail!("publishing while NATS is down gave {other:?}"),
        }
    }

    server.start()?;
    let after = push("demo", 'b');
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        match bus.publish(&after).await {
            Ok(()) => break,
            Err(BusError::Unavailable(message)) if Instant::now() < deadline => {
                eprintln!("not yet: {message}");
                tokio::time::sleep(Duration::from_millis(200)).await;
            }
            Err(error) => bail!(
                "publishing after the restart: {error}\n{}",
                server.log_text()
            ),
        }
    }

    let consumer = bus
        .durable_consumer("after-restart", "nimbus.events.>")
        .await?;
    let received: Vec<Event> = receive_at_least(&consumer, &[&before, &after]).await?;
    // The event stored before the restart is still there, first; failed
    // publishes may have reached the stream too (at least once), but
    // nothing is lost.
    assert_eq!(received.first(), Some(&before));
    assert!(received.contains(&after));
    Ok(())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn publish_to_a_hung_nats_returns_unavailable_instead_of_hanging() -> anyhow::Result<()> {
    let server = NatsServer::start_new()?;
    let bus = NatsBus::connect(NatsConfig::new(server.url())).await?;
    bus.publish(&push("demo", 'a')).await?;

    // The connection stays up, so only the acknowledgement timeout can end
    // the publish.
    server.signal("-STOP")?;
    let outcome =
        tokio::time::timeout(Duration::from_secs(30), bus.publish(&push("demo", 'b'))).await;
    server.signal("-CONT")?;
    match outcome.context("publish hung while NATS did not answer")? {
        Err(BusError::Unavailable(message)) => {
            assert!(message.contains(&server.url()), "{message}")
        }
        other => bail!("publishing while NATS hangs gave {other:?}"),
    }

    let after = push("demo", 'c');
    let deadline = Instant::now() + Duration::from_secs(60);
    while let Err(error) = bus.publish(&after).await {
        ensure!(
            Instant::now() < deadline,
            "publishing once NATS answers again: {error}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
    Ok(())
}

/// Every message of `consumer` until all of `expected` arrived.
async fn receive_at_least(
    consumer: &PullConsumer,
    expected: &[&Event],
) -> anyhow::Result<Vec<Event>> {
    let received = fetch_until(consumer, |received| {
        expected
            .iter()
            .all(|event| received.iter().any(|(_, got)| got == *event))
    })
    .await?;
    Ok(received.into_iter().map(|(_, event)| event).collect())
}

#[tokio::test]
async fn connecting_to_nothing_names_the_url() -> anyhow::Result<()> {
    let port = free_port()?;
    let url = format!("nats://127.0.0.1:{port}");
    let error = NatsBus::connect(NatsConfig::new(&url))
        .await
        .err()
        .context("connected to nothing")?;
    let message = error.to_string();
    assert!(message.contains(&url), "{message}");
    Ok(())
}

#[tokio::test]
async fn in_process_subscribers_get_events_in_order() -> anyhow::Result<()> {
    let bus = InProcessBus::new();
    assert_eq!(bus.name(), "in-process");
    // Nobody listens yet: publishing still succeeds.
    bus.publish(&push("demo", 'z')).await?;

    let mut first = bus.subscribe();
    let mut second = bus.subscribe();
    let events = [
        branch_created("demo"),
        push("demo", 'a'),
        push("other", 'b'),
    ];
    for event in &events {
        bus.publish(event).await?;
    }
    for subscriber in [&mut first, &mut second] {
        for event in &events {
            assert_eq!(*subscriber.recv().await?, *event);
        }
        assert!(subscriber.try_recv().is_err(), "no more events");
    }
    Ok(())
}

#[tokio::test]
async fn a_lagging_in_process_subscriber_is_told_what_it_lost() -> anyhow::Result<()> {
    let bus = InProcessBus::with_capacity(2);
    let mut subscriber = bus.subscribe();
    let events = [push("demo", 'a'), push("demo", 'b'), push("demo", 'c')];
    for event in &events {
        bus.publish(event).await?;
    }
    match subscriber.recv().await {
        Err(tokio::sync::broadcast::error::RecvError::Lagged(1)) => {}
        other => bail!("expected Lagged(1), got {other:?}"),
    }
    assert_eq!(*subscriber.recv().await?, events[1]);
    assert_eq!(*subscriber.recv().await?, events[2]);
    Ok(())
}
