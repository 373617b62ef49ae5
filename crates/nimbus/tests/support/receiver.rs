//! A real HTTP server that receives webhooks: it records every request and
//! answers from a script (then 200), on its own thread and runtime.

use std::collections::VecDeque;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};
use warp::Filter;
use warp::http::{Response, StatusCode};

/// One request as the receiver saw it.
#[derive(Debug, Clone)]
pub struct Received {
    pub path: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Received {
    pub fn header(&self, name: &str) -> &str {
        self.headers
            .iter()
            .find(|(header, _)| header.eq_ignore_ascii_case(name))
            .map(|(_, value)| value.as_str())
            .unwrap_or_else(|| panic!("no {name} header in {:#?}", self.headers))
    }

    pub fn json(&self) -> serde_json::Value {
        serde_json::from_slice(&self.body).expect("a JSON body")
    }
}

/// What to answer.
#[derive(Debug, Clone)]
pub enum Reply {
    Status(u16, &'static str),
    Redirect(String),
}

type Shared<T> = Arc<Mutex<T>>;

pub struct Receiver {
    pub address: SocketAddr,
    requests: Shared<Vec<Received>>,
    script: Shared<VecDeque<Reply>>,
    stop: Option<tokio::sync::oneshot::Sender<()>>,
    thread: Option<std::thread::JoinHandle<()>>,
}

impl Receiver {
    /// Listen on `ip` (any free port).
    pub fn start(ip: &str) -> Receiver {
        let requests: Shared<Vec<Received>> = Arc::default();
        let script: Shared<VecDeque<Reply>> = Arc::default();
        let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
        let (bound, address) = std::sync::mpsc::channel();
        let ip: std::net::IpAddr = ip.parse().expect("an IP address");
        let (log, answers) = (requests.clone(), script.clone());
        let thread = std::thread::spawn(move || {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()
                .expect("a runtime");
            runtime.block_on(async move {
                let route = warp::path::full()
                    .and(warp::header::headers_cloned())
                    .and(warp::body::bytes())
                    .map(
                        move |path: warp::path::FullPath,
                              headers: warp::http::HeaderMap,
                              body: bytes::Bytes| {
                            let headers = headers
                                .iter()
                                .map(|(name, value)| {
                                    (
                                        name.as_str().to_owned(),
                                        String::from_utf8_lossy(value.as_bytes()).into_owned(),
                                    )
                                })
                                .collect();
                            log.lock().expect("log").push(Received {
                                path: path.as_str().to_owned(),
                                headers,
                                body: body.to_vec(),
                            });
                            let reply = answers
                                .lock()
                                .expect("script")
                                .pop_front()
                                .unwrap_or(Reply::Status(200, "thanks"));
                            match reply {
                                Reply::Status(status, body) => Response::builder()
                                    .status(StatusCode::from_u16(status).expect("a status"))
                                    .header("Set-Cookie", "receiver-session=abc123")
                                    .body(body.to_owned()),
                                Reply::Redirect(location) => Response::builder()
                                    .status(StatusCode::TEMPORARY_REDIRECT)
                                    .header("Location", location)
                                    .body(String::new()),
                            }
                            .expect("a response")
                        },
                    );
                let listener = tokio::net::TcpListener::bind((ip, 0))
                    .await
                    .expect("bind the receiver");
                bound
                    .send(listener.local_addr().expect("address"))
                    .expect("report the address");
                warp::serve(route)
                    .incoming(listener)
                    .graceful(async {
                        let _ = stopped.await;
                    })
                    .run()
                    .await;
            });
        });
        Receiver {
            address: address.recv().expect("the receiver starts"),
            requests,
            script,
            stop: Some(stop),
            thread: Some(thread),
        }
    }

    pub fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.address)
    }

    /// Answer the next requests with `replies`, then 200 again.
    pub fn script(&self, replies: Vec<Reply>) {
        self.script.lock().expect("script").extend(replies);
    }

    pub fn received(&self) -> Vec<Received> {
        self.requests.lock().expect("log").clone()
    }

    /// Wait until at least `count` requests came; all of them.
    pub fn wait_for(&self, count: usize, context: impl Fn() -> String) -> Vec<Received> {
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let got = self.received();
            if got.len() >= count {
                return got;
            }
            if Instant::now() > deadline {
                panic!(
                    "the receiver got {} of {count} requests: {got:#?}\n{}",
                    got.len(),
                    context()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
}

impl Drop for Receiver {
    fn drop(&mut self) {
        if let Some(stop) = self.stop.take() {
            let _ = stop.send(());
        }
        if let Some(thread) = self.thread.take() {
            let _ = thread.join();
        }
    }
}
