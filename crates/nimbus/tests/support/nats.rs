//! Private `nats-server` instances for the event tests: each on its own
//! free port with its own JetStream directory, stopped and started again on
//! the same port and directory, killed when dropped. `nats-server` comes
//! from Debian's package, installed by `scripts/nats` (run by
//! `scripts/test`).

use std::net::TcpStream;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub struct NatsServer {
    port: u16,
    dir: tempfile::TempDir,
    child: Option<Child>,
}

impl NatsServer {
    pub fn start() -> NatsServer {
        let mut server = NatsServer {
            port: super::free_port(),
            dir: tempfile::tempdir().expect("a JetStream directory"),
            child: None,
        };
        server.restart();
        server
    }

    pub fn url(&self) -> String {
        format!("nats://127.0.0.1:{}", self.port)
    }

    /// Start (again) on the same port and store directory.
    pub fn restart(&mut self) {
        assert!(self.child.is_none(), "already running");
        let log = std::fs::File::create(self.dir.path().join("server.log")).expect("log");
        let binary = ["/usr/sbin/nats-server", "/usr/bin/nats-server"]
            .into_iter()
            .find(|path| std::path::Path::new(path).exists())
            .unwrap_or("nats-server");
        let child = Command::new(binary)
            .args([
                "-js",
                "-a",
                "127.0.0.1",
                "-p",
                &self.port.to_string(),
                "-sd",
            ])
            .arg(self.dir.path().join("store"))
            .stdout(Stdio::null())
            .stderr(Stdio::from(log))
            .spawn()
            .expect("start nats-server (installed by scripts/nats)");
        self.child = Some(child);
        let deadline = Instant::now() + Duration::from_secs(20);
        while TcpStream::connect(("127.0.0.1", self.port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "nats-server did not start:\n{}",
                self.log()
            );
            std::thread::sleep(Duration::from_millis(50));
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    pub fn log(&self) -> String {
        std::fs::read_to_string(self.dir.path().join("server.log")).unwrap_or_default()
    }
}

impl Drop for NatsServer {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Every event in the stream `NIMBUS_EVENTS` at `url`, in stream order,
/// waiting until there are at least `expected` (or `timeout` passes).
pub fn stream_events(url: &str, expected: usize, timeout: Duration) -> Vec<serde_json::Value> {
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("a runtime");
    runtime.block_on(async {
        use futures::StreamExt as _;
        let client = async_nats::connect(url).await.expect("connect to NATS");
        let jetstream = async_nats::jetstream::new(client);
        let deadline = Instant::now() + timeout;
        let stream = loop {
            match jetstream.get_stream("NIMBUS_EVENTS").await {
                Ok(stream) => break stream,
                Err(error) => {
                    assert!(
                        Instant::now() < deadline,
                        "no NIMBUS_EVENTS stream: {error}"
                    );
                    tokio::time::sleep(Duration::from_millis(100)).await;
                }
            }
        };
        let mut events = Vec::new();
        loop {
            // A new ordered consumer reads the whole stream each time.
            events.clear();
            let consumer = stream
                .create_consumer(async_nats::jetstream::consumer::pull::OrderedConfig {
                    deliver_policy: async_nats::jetstream::consumer::DeliverPolicy::All,
                    ..Default::default()
                })
                .await
                .expect("an ordered consumer");
            let info = stream.get_info().await.expect("stream info");
            let total = info.state.messages as usize;
            let mut messages = consumer.messages().await.expect("messages");
            while events.len() < total {
                let Ok(Some(message)) =
                    tokio::time::timeout(Duration::from_secs(5), messages.next()).await
                else {
                    break;
                };
                let message = message.expect("a message");
                events.push(serde_json::from_slice(&message.payload).expect("event JSON"));
            }
            if events.len() >= expected || Instant::now() >= deadline {
                return events;
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    })
}
