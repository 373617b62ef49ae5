//! Storage outages while a server runs: with the S3 server or the database
//! unreachable, clones and pushes fail with a clean error (no hang, no
//! half-moved ref), and once the service is back everything works and
//! nothing is corrupt. The outage is a TCP proxy between Nimbus and the
//! real service that the test cuts and restores.

mod support;

use std::io;
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use support::cloud::{cloud_env, fresh_bucket, fresh_database, s3_endpoint, unique_name};
use support::{Git, NimbusServer, ServerOptions};

/// Forwards connections to `target` while up; while down, closes every open
/// connection and accepts new ones only to close them.
struct Proxy {
    address: SocketAddr,
    up: Arc<AtomicBool>,
    open: Arc<Mutex<Vec<TcpStream>>>,
}

impl Proxy {
    fn start(target: SocketAddr) -> Proxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("bind the proxy");
        let address = listener.local_addr().expect("proxy address");
        let up = Arc::new(AtomicBool::new(true));
        let open: Arc<Mutex<Vec<TcpStream>>> = Arc::default();
        let (accept_up, accept_open) = (up.clone(), open.clone());
        std::thread::spawn(move || {
            for client in listener.incoming() {
                let Ok(client) = client else { continue };
                if !accept_up.load(Ordering::SeqCst) {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                }
                let Ok(server) = TcpStream::connect(target) else {
                    let _ = client.shutdown(Shutdown::Both);
                    continue;
                };
                {
                    let mut open = accept_open.lock().expect("proxy lock");
                    for stream in [&client, &server] {
                        if let Ok(copy) = stream.try_clone() {
                            open.push(copy);
                        }
                    }
                }
                for (from, to) in [(&client, &server), (&server, &client)] {
                    let (Ok(mut from), Ok(mut to)) = (from.try_clone(), to.try_clone()) else {
                        continue;
                    };
                    std::thread::spawn(move || {
                        let _ = io::copy(&mut from, &mut to);
                        let _ = to.shutdown(Shutdown::Write);
                    });
                }
            }
        });
        Proxy { address, up, open }
    }

    fn cut(&self) {
        self.up.store(false, Ordering::SeqCst);
        for stream in self.open.lock().expect("proxy lock").drain(..) {
            let _ = stream.shutdown(Shutdown::Both);
        }
    }

    fn restore(&self) {
        self.up.store(true, Ordering::SeqCst);
    }
}

fn socket_address(url: &str) -> SocketAddr {
    let authority = url
        .split_once("://")
        .map_or(url, |(_, rest)| rest)
        .split(['/', '?'])
        .next()
        .expect("an authority");
    let host_port = authority.rsplit_once('@').map_or(authority, |(_, hp)| hp);
    host_port
        .parse()
        .unwrap_or_else(|_| panic!("{host_port:?} is not an IP address and port"))
}

/// `url` with its host and port replaced by `address`.
fn through(url: &str, address: SocketAddr) -> String {
    let original = socket_address(url).to_string();
    url.replacen(&original, &address.to_string(), 1)
}

/// Runs `git args`, expecting a failure within a minute.
fn fails_cleanly(git: &Git, dir: &std::path::Path, args: &[&str]) -> String {
    let started = Instant::now();
    let output = git.output(dir, args);
    assert!(
        !output.status.success(),
        "git {args:?} succeeded during the outage"
    );
    assert!(
        started.elapsed() < Duration::from_secs(60),
        "git {args:?} took {:?} to fail",
        started.elapsed()
    );
    // The server answers with an error status (and a message on the
    // side-band where the protocol has one), never a broken pack.
    assert!(
        output.stderr.contains("500"),
        "git {args:?} during the outage: {}",
        output.stderr
    );
    output.stderr
}

fn outage_test(cut_database: bool) {
    let name = unique_name("nimbus_e2e_outage");
    let database = fresh_database(&name);
    let bucket = fresh_bucket(&name);
    let database_proxy = Proxy::start(socket_address(&database));
    let s3_proxy = Proxy::start(socket_address(&s3_endpoint()));
    let mut env = cloud_env(
        &through(&database, database_proxy.address),
        &bucket,
        "outage",
    );
    for (variable, value) in &mut env {
        if variable == "AWS_ENDPOINT_URL" {
            *value = format!("http://{}", s3_proxy.address);
        }
    }
    let proxy = if cut_database {
        &database_proxy
    } else {
        &s3_proxy
    };
    let options = ServerOptions {
        env,
        ..ServerOptions::default()
    };
    let server = NimbusServer::start_with(options.clone());
    let git = Git::new(2);
    server.create_repo("outage", false);
    let work = tempfile::tempdir().expect("tempdir");
    git.init(work.path());
    let first = git.commit(work.path(), "first", &[("f", "1\n")], 1_700_000_000);
    git.run(
        work.path(),
        &["push", "-q", &server.push_url("outage"), "main"],
    );

    // A second process that has served nothing yet: its cache is empty.
    let cold = NimbusServer::start_with(options.clone());
    proxy.cut();
    let second = git.commit(work.path(), "second", &[("f", "2\n")], 1_700_000_100);
    let error = fails_cleanly(
        &git,
        work.path(),
        &["push", &server.push_url("outage"), "main"],
    );
    assert!(
        error.contains("500") || error.contains("error") || error.contains("failed"),
        "{error}"
    );
    // A process with an empty cache cannot serve without the store; it
    // says so instead of hanging or sending a broken pack.
    if !cut_database {
        let clone_dir = tempfile::tempdir().expect("tempdir");
        fails_cleanly(&git, clone_dir.path(), &["clone", &cold.url("outage"), "c"]);
        assert!(!clone_dir.path().join("c/.git/refs/heads/main").exists());
    } else {
        let clone_dir = tempfile::tempdir().expect("tempdir");
        fails_cleanly(
            &git,
            clone_dir.path(),
            &["clone", &server.url("outage"), "c"],
        );
    }

    proxy.restore();
    // Nothing of the failed push is visible.
    let deadline = Instant::now() + Duration::from_secs(30);
    let visible = loop {
        let output = git.output(
            work.path(),
            &["ls-remote", &server.url("outage"), "refs/heads/main"],
        );
        if output.status.success() {
            break output.stdout_text();
        }
        assert!(
            Instant::now() < deadline,
            "the server did not recover: {}",
            server.logs()
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    assert_eq!(visible.trim(), format!("{first}\trefs/heads/main"));
    // And once the service is back, the push and clones work.
    git.run(
        work.path(),
        &["push", "-q", &server.push_url("outage"), "main"],
    );
    let fresh = NimbusServer::start_with(options);
    for url in [server.url("outage"), fresh.url("outage")] {
        let clone = tempfile::tempdir().expect("tempdir");
        git.run(clone.path(), &["clone", "-q", &url, "c"]);
        git.fsck(&clone.path().join("c"));
        assert_eq!(git.rev_parse(&clone.path().join("c"), "HEAD"), second);
    }
}

#[test]
fn an_object_store_outage_gives_clean_errors_and_loses_nothing() {
    outage_test(false);
}

#[test]
fn a_database_outage_gives_clean_errors_and_loses_nothing() {
    outage_test(true);
}
