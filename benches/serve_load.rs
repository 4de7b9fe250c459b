//! Load test of `rampart serve` on loopback: `cargo bench --bench serve_load`.
//!
//! Prepares the demo service (`scripts/serve-demo.sh`, under `target/serve-load/`), starts it
//! with every monitor on (detectors, drift windows, the extraction ledger without escalation,
//! the incident log), and sends single-image requests from 1, 8 and 64 concurrent clients
//! (each its own API key and keep-alive connection): a fixed number of requests per level,
//! and at most `SERVE_LOAD_SECONDS` (default 60) each. Prints requests per second and p50/p99
//! latency per level, then checks that no request failed and that every answered request whose
//! input was flagged has its incident in the log, and that the log's hash chain verifies.
//! The server and the clients share this machine's cores.

use std::io::{BufRead, BufReader};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use rampart::data::{self, Split};
use serde_json::{Value, json};

const LEVELS: [(usize, usize); 3] = [(1, 300), (8, 800), (64, 1600)];

fn key(i: usize) -> String {
    format!("load-client-{i}")
}

fn prepare(root: &Path, out: &Path) {
    let status = Command::new("bash")
        .arg(root.join("scripts/serve-demo.sh"))
        .env("OUT", out)
        .env("BIN", env!("CARGO_BIN_EXE_rampart"))
        .env("PREPARE_ONLY", "1")
        .current_dir(root)
        .status()
        .expect("run scripts/serve-demo.sh");
    assert!(status.success(), "scripts/serve-demo.sh failed");
    let clients: String = (0..64)
        .map(|i| {
            format!(
                "[[clients]]\nname = \"c{i}\"\nkey_sha256 = \"{}\"\nrate = 100000.0\nburst = 100000.0\n\n",
                rampart::artifact::digest::sha256_hex(key(i).as_bytes())
            )
        })
        .collect();
    let config = format!(
        r#"listen = "127.0.0.1:0"
device = "flex"
verify_key = "release.pub"
incident_log = "load-incidents.jsonl"

[model]
primary = "primary.safetensors"
detectors = "detectors.safetensors"
drift_reference = "drift.safetensors"
backups = ["backup.safetensors"]

[batch]
max_batch = 64
max_wait_ms = 2
queue = 1024

[policy]
escalate_queries = 1000000
block_after = 1000

{clients}"#
    );
    std::fs::write(out.join("load.toml"), config).unwrap();
    let _ = std::fs::remove_file(out.join("load-incidents.jsonl"));
}

fn start(out: &Path) -> (Child, String) {
    let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["serve", "--config", "load.toml"])
        .current_dir(out)
        .stderr(Stdio::piped())
        .stdout(Stdio::null())
        .spawn()
        .expect("start rampart serve");
    let pipe = child.stderr.take().unwrap();
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(pipe).lines().map_while(Result::ok) {
            if let Some(a) = line.strip_prefix("rampart serve: listening on http://") {
                let _ = tx.send(a.to_string());
            }
        }
    });
    let addr = rx
        .recv_timeout(Duration::from_secs(120))
        .expect("the service starts");
    (child, addr)
}

struct Level {
    clients: usize,
    requests: usize,
    errors: usize,
    seconds: f64,
    latencies: Vec<f64>,
    flagged: Vec<String>,
}

fn run_level(
    addr: &str,
    clients: usize,
    total: usize,
    images: &Arc<Vec<Vec<f32>>>,
    budget: Duration,
) -> Level {
    let latencies = Arc::new(Mutex::new(Vec::new()));
    let flagged = Arc::new(Mutex::new(Vec::new()));
    let errors = Arc::new(Mutex::new(0usize));
    let started = Instant::now();
    let threads: Vec<_> = (0..clients)
        .map(|c| {
            let (lat, fl, err, imgs, addr) = (
                latencies.clone(),
                flagged.clone(),
                errors.clone(),
                images.clone(),
                addr.to_string(),
            );
            std::thread::spawn(move || {
                let agent: ureq::Agent = ureq::Agent::config_builder()
                    .http_status_as_error(false)
                    .build()
                    .into();
                let auth = format!("Bearer {}", key(c));
                for r in 0..total / clients {
                    if started.elapsed() > budget {
                        break;
                    }
                    let image = &imgs[(c * 7919 + r) % imgs.len()];
                    let body = serde_json::to_vec(&json!({ "inputs": [image] })).unwrap();
                    let t = Instant::now();
                    let resp = agent
                        .post(&format!("http://{addr}/v1/predict"))
                        .header("authorization", &auth)
                        .send(&body[..]);
                    let ms = t.elapsed().as_secs_f64() * 1000.0;
                    match resp {
                        Ok(mut resp) if resp.status() == 200 => {
                            let v: Value =
                                serde_json::from_str(&resp.body_mut().read_to_string().unwrap())
                                    .unwrap();
                            lat.lock().unwrap().push(ms);
                            if v["predictions"][0]["detector"]["alarm"] == true {
                                fl.lock()
                                    .unwrap()
                                    .push(v["request_id"].as_str().unwrap().to_string());
                            }
                        }
                        _ => *err.lock().unwrap() += 1,
                    }
                }
            })
        })
        .collect();
    for t in threads {
        t.join().unwrap();
    }
    let seconds = started.elapsed().as_secs_f64();
    let mut latencies = latencies.lock().unwrap().clone();
    latencies.sort_by(f64::total_cmp);
    Level {
        clients,
        requests: latencies.len(),
        errors: *errors.lock().unwrap(),
        seconds,
        latencies,
        flagged: flagged.lock().unwrap().clone(),
    }
}

fn quantile(sorted: &[f64], q: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    sorted[((sorted.len() as f64 * q).ceil() as usize).clamp(1, sorted.len()) - 1]
}

fn main() {
    // `cargo bench` passes --bench; `cargo test --benches` passes nothing and must not load.
    if !std::env::args().any(|a| a == "--bench") {
        return;
    }
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let out = root.join("target/serve-load");
    std::fs::create_dir_all(&out).unwrap();
    prepare(&root, &out);
    let budget = Duration::from_secs(
        std::env::var("SERVE_LOAD_SECONDS")
            .ok()
            .and_then(|s| s.parse().ok())
            .unwrap_or(60),
    );
    let dir = data::resolve_data_dir(None).expect("Fashion-MNIST: run scripts/fetch-data.sh");
    let set = data::load_split(&dir, Split::Test, &burn::tensor::Device::flex()).unwrap();
    let (x, _) = set.range(5000, 6000);
    let px: Vec<f32> = x.into_data().convert::<f32>().try_to_vec().unwrap();
    let images = Arc::new(px.chunks(784).map(<[f32]>::to_vec).collect::<Vec<_>>());
    let (mut child, addr) = start(&out);
    // Warm up the batch path once.
    run_level(&addr, 4, 40, &images, budget);
    println!(
        "rampart serve load test on {addr}: single-image requests, every monitor on (flex CPU, server and clients on the same cores)"
    );
    println!(
        "{:>8} {:>9} {:>7} {:>9} {:>9} {:>9}",
        "clients", "requests", "errors", "req/s", "p50 ms", "p99 ms"
    );
    let mut levels = Vec::new();
    for (clients, total) in LEVELS {
        let l = run_level(&addr, clients, total, &images, budget);
        println!(
            "{:>8} {:>9} {:>7} {:>9.1} {:>9.2} {:>9.2}",
            l.clients,
            l.requests,
            l.errors,
            l.requests as f64 / l.seconds,
            quantile(&l.latencies, 0.5),
            quantile(&l.latencies, 0.99)
        );
        levels.push(l);
    }
    // Graceful stop, then the log: every flagged answer's incident is in it, the chain holds.
    unsafe { libc::kill(child.id() as i32, libc::SIGTERM) };
    let _ = child.wait();
    let log = out.join("load-incidents.jsonl");
    let verify = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["incidents", "verify", "--log", log.to_str().unwrap()])
        .output()
        .unwrap();
    assert!(
        verify.status.success(),
        "{}",
        String::from_utf8_lossy(&verify.stderr)
    );
    let text = std::fs::read_to_string(&log).unwrap();
    let logged: std::collections::HashSet<String> = text
        .lines()
        .filter_map(|l| serde_json::from_str::<Value>(l).ok())
        .filter_map(|e| {
            e["alert"]["evidence"]["request_id"]
                .as_str()
                .map(String::from)
        })
        .collect();
    let flagged: Vec<&String> = levels.iter().flat_map(|l| &l.flagged).collect();
    let lost = flagged.iter().filter(|id| !logged.contains(**id)).count();
    let errors: usize = levels.iter().map(|l| l.errors).sum();
    println!(
        "errors {errors}; flagged answers {}, their incidents in the log {}, lost {lost}; chain verified ({} entries)",
        flagged.len(),
        flagged.len() - lost,
        text.lines().count()
    );
    let json = json!({
        "levels": levels.iter().map(|l| json!({
            "clients": l.clients, "requests": l.requests, "errors": l.errors,
            "requests_per_second": l.requests as f64 / l.seconds,
            "p50_ms": quantile(&l.latencies, 0.5), "p99_ms": quantile(&l.latencies, 0.99),
        })).collect::<Vec<_>>(),
        "flagged": flagged.len(), "lost_log_entries": lost, "errors": errors,
    });
    std::fs::write(
        root.join("target/serve-load.json"),
        serde_json::to_string_pretty(&json).unwrap(),
    )
    .unwrap();
    assert_eq!(errors, 0, "requests failed under load");
    assert_eq!(
        lost, 0,
        "answered requests whose incidents are not in the log"
    );
}
