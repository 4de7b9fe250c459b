//! `rampart serve` end to end: the service on a loopback port, prepared by
//! `scripts/serve-demo.sh` (signed reference cnn, a noise-trained mlp backup, detectors, drift
//! reference), playing scripted traffic: hostile requests, benign clients with feedback, a
//! burst of PGD inputs, an extraction client, a drifted stream that degrades the primary
//! (fail-over) and recovers (fail-back), a tampered model at reload, a webhook receiver that
//! hangs, kill -9 during traffic and a restart; then the incident log, the metrics and the
//! report.

mod common;

use std::collections::HashSet;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::TcpListener;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use rand::SeedableRng;
use rand::rngs::StdRng;
use rand_distr::{Distribution, Normal};
use serde_json::{Value, json};

const BENIGN: &str = "benign-key";
const ATTACKER: &str = "attacker-key";
const THIEF: &str = "thief-key";
const FIELD: &str = "field-key";
const OPS: &str = "ops-key";
const RECOVERY: &str = "recovery-key";

fn sha(key: &str) -> String {
    rampart::artifact::digest::sha256_hex(key.as_bytes())
}

struct Server {
    child: Child,
    addr: String,
    stderr: Arc<Mutex<String>>,
}

impl Server {
    fn start(dir: &Path) -> Server {
        let mut child = Command::new(env!("CARGO_BIN_EXE_rampart"))
            .args(["serve", "--config", "serve.toml"])
            .current_dir(dir)
            .stderr(Stdio::piped())
            .stdout(Stdio::null())
            .spawn()
            .expect("start rampart serve");
        let stderr = Arc::new(Mutex::new(String::new()));
        let (tx, rx) = std::sync::mpsc::channel();
        let pipe = child.stderr.take().unwrap();
        let log = stderr.clone();
        std::thread::spawn(move || {
            for line in BufReader::new(pipe).lines().map_while(Result::ok) {
                if let Some(a) = line.strip_prefix("rampart serve: listening on http://") {
                    let _ = tx.send(a.to_string());
                }
                log.lock().unwrap().push_str(&(line + "\n"));
            }
        });
        let addr = rx
            .recv_timeout(Duration::from_secs(120))
            .unwrap_or_else(|_| panic!("the service did not start:\n{}", stderr.lock().unwrap()));
        Server {
            child,
            addr,
            stderr,
        }
    }

    fn url(&self, path: &str) -> String {
        format!("http://{}{path}", self.addr)
    }

    fn post(&self, path: &str, key: Option<&str>, body: &[u8]) -> (u16, Value) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent
            .post(&self.url(path))
            .header("content-type", "application/json");
        if let Some(k) = key {
            req = req.header("authorization", &format!("Bearer {k}"));
        }
        let mut resp = req.send(body).expect("the service answers");
        let status = resp.status().as_u16();
        let text = resp.body_mut().read_to_string().unwrap_or_default();
        (
            status,
            serde_json::from_str(&text).unwrap_or(Value::String(text)),
        )
    }

    fn get(&self, path: &str) -> (u16, String) {
        self.get_as(path, None)
    }

    fn get_as(&self, path: &str, key: Option<&str>) -> (u16, String) {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let mut req = agent.get(&self.url(path));
        if let Some(k) = key {
            req = req.header("authorization", &format!("Bearer {k}"));
        }
        let mut resp = req.call().expect("the service answers");
        let status = resp.status().as_u16();
        (status, resp.body_mut().read_to_string().unwrap_or_default())
    }

    fn status(&self) -> Value {
        serde_json::from_str(&self.get_as("/v1/status", Some(OPS)).1).unwrap()
    }

    fn predict(&self, key: &str, images: &[Vec<f32>]) -> (u16, Value) {
        let body = json!({ "inputs": images });
        self.post(
            "/v1/predict",
            Some(key),
            &serde_json::to_vec(&body).unwrap(),
        )
    }
}

impl Drop for Server {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A webhook receiver that records what it is sent and holds every answer until released.
struct Receiver {
    url: String,
    got: Arc<Mutex<Vec<Value>>>,
    release: Arc<AtomicBool>,
}

fn receiver() -> Receiver {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/hook", listener.local_addr().unwrap());
    let got = Arc::new(Mutex::new(Vec::new()));
    let release = Arc::new(AtomicBool::new(false));
    let (g, r) = (got.clone(), release.clone());
    std::thread::spawn(move || {
        for stream in listener.incoming().map_while(Result::ok) {
            let (g, r) = (g.clone(), r.clone());
            std::thread::spawn(move || {
                let mut s = stream;
                let mut reader = BufReader::new(s.try_clone().unwrap());
                let mut length = 0;
                loop {
                    let mut line = String::new();
                    if reader.read_line(&mut line).unwrap_or(0) == 0 {
                        return;
                    }
                    if let Some(v) = line.to_ascii_lowercase().strip_prefix("content-length:") {
                        length = v.trim().parse().unwrap_or(0);
                    }
                    if line == "\r\n" {
                        break;
                    }
                }
                let mut body = vec![0; length];
                if reader.read_exact(&mut body).is_err() {
                    return;
                }
                g.lock()
                    .unwrap()
                    .push(serde_json::from_slice(&body).unwrap_or(Value::Null));
                while !r.load(Ordering::SeqCst) {
                    std::thread::sleep(Duration::from_millis(20));
                }
                let _ = s.write_all(
                    b"HTTP/1.1 200 OK\r\ncontent-length: 0\r\nconnection: close\r\n\r\n",
                );
            });
        }
    });
    Receiver { url, got, release }
}

/// Test images `ids` as [28, 28]-shaped rows (flattened), with their labels.
fn images(set: &rampart::data::ImageSet, ids: std::ops::Range<usize>) -> (Vec<Vec<f32>>, Vec<i64>) {
    let (x, y) = set.range(ids.start, ids.end);
    let px = common::floats(x);
    (
        px.chunks(784).map(<[f32]>::to_vec).collect(),
        common::ints(y),
    )
}

/// Adds clipped Gaussian noise of standard deviation `sigma`.
fn noisy(images: &[Vec<f32>], sigma: f32, seed: u64) -> Vec<Vec<f32>> {
    let mut rng = StdRng::seed_from_u64(seed);
    let normal = Normal::new(0.0f32, sigma).unwrap();
    images
        .iter()
        .map(|im| {
            im.iter()
                .map(|p| (p + normal.sample(&mut rng)).clamp(0.0, 1.0))
                .collect()
        })
        .collect()
}

/// Predicts `images` in requests of `per` as client `key`, sends their labels back, and
/// returns the classes answered (None: blocked or abstained).
fn predict_with_feedback(
    s: &Server,
    key: &str,
    images: &[Vec<f32>],
    labels: &[i64],
    per: usize,
) -> Vec<Option<i64>> {
    let mut classes = Vec::new();
    for (chunk, truth) in images.chunks(per).zip(labels.chunks(per)) {
        let (code, v) = s.predict(key, chunk);
        assert_eq!(code, 200, "{v}");
        for p in v["predictions"].as_array().unwrap() {
            classes.push(p["class"].as_i64());
        }
        let fb = json!({ "request_id": v["request_id"], "labels": truth });
        let (code, r) = s.post("/v1/feedback", Some(key), &serde_json::to_vec(&fb).unwrap());
        assert_eq!(code, 200, "{r}");
    }
    classes
}

fn accuracy(classes: &[Option<i64>], labels: &[i64]) -> f64 {
    classes
        .iter()
        .zip(labels)
        .filter(|(c, l)| **c == Some(**l))
        .count() as f64
        / labels.len() as f64
}

/// The value of a metric line starting with `prefix` (labels included).
fn metric(text: &str, prefix: &str) -> f64 {
    text.lines()
        .filter(|l| l.starts_with(prefix))
        .map(|l| l.rsplit(' ').next().unwrap().parse::<f64>().unwrap())
        .sum()
}

fn entries(log: &Path) -> Vec<Value> {
    std::fs::read_to_string(log)
        .unwrap()
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

fn of_type<'a>(entries: &'a [Value], kind: &str) -> Vec<&'a Value> {
    entries
        .iter()
        .filter(|e| e["alert"]["type"] == kind)
        .collect()
}

/// Runs headless Chromium on the dashboard (with the admin key) and returns its output.
fn chromium(s: &Server, args: &[&str], dir: &Path) -> String {
    let profile = dir.join(format!("chromium-{}", args.len()));
    let out = Command::new("chromium")
        .args([
            "--headless",
            "--no-sandbox",
            "--disable-gpu",
            "--disable-quic",
            "--no-first-run",
            "--disable-background-networking",
            "--disable-component-update",
            "--disable-sync",
            "--virtual-time-budget=5000",
            &format!("--user-data-dir={}", profile.display()),
        ])
        .args(args)
        .arg(format!("{}/#key={OPS}", s.url("")))
        .output()
        .expect("chromium runs the dashboard test: install it (scripts/test.sh does)");
    assert!(
        out.status.success(),
        "{}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn prepare(dir: &Path) -> PathBuf {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let out = Command::new("bash")
        .arg(root.join("scripts/serve-demo.sh"))
        .env("OUT", dir)
        .env("BIN", env!("CARGO_BIN_EXE_rampart"))
        .env("PREPARE_ONLY", "1")
        .current_dir(root)
        .output()
        .unwrap();
    common::ok(&out);
    // A ledger with a small cap and a rate check out of reach of this test's clients (300
    // queries per 0.1 s interval).
    common::ok(&common::rampart(
        &[
            "detect",
            "fit",
            "--kind",
            "extraction",
            "--model",
            "primary.safetensors",
            "--rate",
            "300",
            "--alert-rate",
            "600",
            "--max-queries",
            "500",
            "--out",
            "ledger-test.safetensors",
            "--device",
            "flex",
        ],
        dir,
    ));
    common::ok(&common::rampart(
        &[
            "attack",
            "--model",
            "primary.safetensors",
            "--attack",
            "pgd",
            "--eps",
            "0.3",
            "--steps",
            "20",
            "--offset",
            "3000",
            "--limit",
            "64",
            "--device",
            "flex",
            "--save-examples",
            "pgd",
        ],
        dir,
    ));
    dir.join("pgd/examples.safetensors")
}

fn write_config(dir: &Path, hooks: &[(&str, u32)]) {
    let clients: String = [("benign", BENIGN, false), ("attacker", ATTACKER, false), ("thief", THIEF, false), ("field", FIELD, false), ("recovery", RECOVERY, false), ("ops", OPS, true)]
        .iter()
        .map(|(name, key, admin)| format!("[[clients]]\nname = \"{name}\"\nkey_sha256 = \"{}\"\nrate = 1000.0\nburst = 1000.0\nadmin = {admin}\n\n", sha(key)))
        .collect();
    let webhooks: String = hooks
        .iter()
        .map(|(url, attempts)| format!("[[webhooks]]\nurl = \"{url}\"\nmin_severity = \"high\"\nattempts = {attempts}\ntimeout_ms = 300\n\n"))
        .collect();
    let cfg = format!(
        r#"listen = "127.0.0.1:0"
device = "flex"
verify_key = "release.pub"
incident_log = "incidents.jsonl"

[model]
primary = "primary.safetensors"
detectors = "detectors.safetensors"
drift_reference = "drift.safetensors"
ledger = "ledger-test.safetensors"
backups = ["backup.safetensors"]

[batch]
max_batch = 64
max_wait_ms = 2
max_inputs = 64
max_body_bytes = 1048576

[monitor]
drift_window = 200
drift_alpha = 0.001
online_window = 20
online_ert = 200.0
feedback_window = 100
health_threshold = 0.6
health_windows = 2
failback_margin = 0.05
check_seconds = 3600
interval_seconds = 0.1

[policy]
block_p = 0.005
degrade_to = "label"
limited_rate = 1.0
block_after = 3
escalate_queries = 200

{clients}{webhooks}"#
    );
    std::fs::write(dir.join("serve.toml"), cfg).unwrap();
}

#[test]
fn serve_end_to_end() {
    let _g = common::serial();
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let pgd = prepare(dir);
    let hook = receiver();
    write_config(dir, &[(&hook.url, 1), ("http://127.0.0.1:1/down", 2)]);
    let log = dir.join("incidents.jsonl");
    let set = common::fashion_test(1, 10_000);
    let s = Server::start(dir);
    assert_eq!(s.get("/readyz").0, 200);
    assert_eq!(s.get("/healthz").0, 200);

    // Hostile and malformed requests: 4xx, named, and the process keeps serving.
    let (clean, _) = images(&set, 2000..2001);
    let one = serde_json::to_vec(&json!({ "inputs": clean })).unwrap();
    assert_eq!(s.post("/v1/predict", None, &one).0, 401);
    assert_eq!(s.post("/v1/predict", Some("wrong"), &one).0, 401);
    let bad: Vec<(Vec<u8>, &str)> = vec![
        (b"{\"inputs\": [[0.5, ".to_vec(), "not a prediction request"),
        (br#"{"inputs": [[0.5, 0.5]]}"#.to_vec(), "shape [2]"),
        (
            serde_json::to_vec(&json!({ "inputs": [vec![vec![1.5f32; 28]; 28]] })).unwrap(),
            "[0, 1]",
        ),
        (
            serde_json::to_vec(&json!({ "inputs": [vec![vec!["NaN"; 28]; 28]] })).unwrap(),
            "a string",
        ),
        (br#"{"inputs": []}"#.to_vec(), "no inputs"),
        (
            serde_json::to_vec(&json!({ "inputs": vec![vec![0.5f32; 784]; 65] })).unwrap(),
            "at most 64",
        ),
        (br#"{"inputs": [], "extra": 1}"#.to_vec(), "unknown field"),
        (
            format!("{{\"inputs\": [{}]}}", "[".repeat(5000)).into_bytes(),
            "not a prediction request",
        ),
        (br#"{"png": ["not base64!"]}"#.to_vec(), "png 0"),
    ];
    for (body, says) in &bad {
        let (code, v) = s.post("/v1/predict", Some(BENIGN), body);
        assert_eq!(code, 400, "{v}");
        assert!(
            v["error"].as_str().unwrap().contains(says),
            "{v} should say {says}"
        );
    }
    // A body over batch.max_body_bytes is refused from its declared length, before it is read.
    let mut raw = std::net::TcpStream::connect(&s.addr).unwrap();
    let head = format!(
        "POST /v1/predict HTTP/1.1\r\nhost: x\r\nauthorization: Bearer {BENIGN}\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n",
        2 << 20
    );
    raw.write_all(head.as_bytes()).unwrap();
    raw.write_all(&[b' '; 4096]).unwrap();
    let mut answer = [0u8; 12];
    raw.read_exact(&mut answer).unwrap();
    assert_eq!(
        &answer,
        b"HTTP/1.1 413",
        "{}",
        String::from_utf8_lossy(&answer)
    );
    assert_eq!(s.get("/v1/predict").0, 401, "no key: nothing else is said");
    assert_eq!(s.get_as("/v1/predict", Some(BENIGN)).0, 405);
    let (code, v) = s.post(
        "/v1/feedback",
        Some(BENIGN),
        br#"{"request_id": "nope", "label": 1}"#,
    );
    assert_eq!(code, 404, "{v}");
    assert_eq!(s.get("/healthz").0, 200);
    // The status holds detector scores and other clients' standing: admins only.
    assert_eq!(s.get("/v1/status").0, 401);
    assert_eq!(s.get_as("/v1/status", Some(BENIGN)).0, 403);

    // Benign traffic with feedback: right answers, no fail-over.
    let (benign, labels) = images(&set, 2000..2400);
    let classes = predict_with_feedback(&s, BENIGN, &benign, &labels, 8);
    assert!(
        accuracy(&classes, &labels) > 0.8,
        "{}",
        accuracy(&classes, &labels)
    );
    let st = s.status();
    assert_eq!(st["status"]["active"], "primary.safetensors", "{st}");
    assert_eq!(st["status"]["failovers"], 0);
    let primary_window = st["status"]["models"][0]["accuracy"][0].as_f64().unwrap();
    assert!(primary_window > 0.8, "{st}");
    let benign_flags = of_type(&entries(&log), "adversarial_input").len();
    // ?smooth=1: CERTIFY's class and radius under the full policy.
    let body = serde_json::to_vec(&json!({ "inputs": &benign[..2] })).unwrap();
    let (code, v) = s.post("/v1/predict?smooth=1", Some(BENIGN), &body);
    assert_eq!(code, 200, "{v}");
    for (p, label) in v["predictions"].as_array().unwrap().iter().zip(&labels) {
        let c = &p["certificate"];
        match c["class"].as_i64() {
            Some(k) => {
                assert_eq!(p["class"].as_i64(), Some(k));
                assert!(c["radius"].as_f64().unwrap() > 0.0, "{p}");
                let _ = label;
            }
            None => assert_eq!(c["radius"].as_f64(), Some(0.0), "{p}"),
        }
        assert!(c["p_a_lower"].as_f64().is_some(), "{p}");
    }
    assert_eq!(s.post("/v1/predict?smooth=2", Some(BENIGN), &body).0, 400);
    // Only the client that made a request may label it.
    let (_, v) = s.predict(BENIGN, &benign[..1]);
    let fb = serde_json::to_vec(&json!({ "request_id": v["request_id"], "label": 0 })).unwrap();
    assert_eq!(s.post("/v1/feedback", Some(ATTACKER), &fb).0, 404);
    assert_eq!(s.post("/v1/feedback", Some(BENIGN), &fb).0, 200);
    assert_eq!(
        s.post("/v1/feedback", Some(BENIGN), &fb).0,
        404,
        "one feedback per request"
    );

    // A burst of PGD inputs (eps 0.3): flagged and blocked far more often than clean ones.
    let (_, adv) = common::tensor_f32(&pgd, "adversarial");
    let adv: Vec<Vec<f32>> = adv.chunks(784).map(<[f32]>::to_vec).collect();
    let mut blocked = 0;
    let mut flagged = 0;
    for chunk in adv.chunks(8) {
        let (code, v) = s.predict(ATTACKER, chunk);
        assert_eq!(code, 200, "{v}");
        for p in v["predictions"].as_array().unwrap() {
            if p["blocked"] == true {
                blocked += 1;
                assert!(
                    p["class"].is_null() && p.get("probabilities").is_none(),
                    "{p}"
                );
            }
            if p["detector"]["alarm"] == true {
                flagged += 1;
            }
        }
    }
    let all = entries(&log);
    let attacker_flags = of_type(&all, "adversarial_input")
        .iter()
        .filter(|e| e["alert"]["client"] == "attacker")
        .count();
    eprintln!(
        "PGD: {flagged} of 64 flagged, {blocked} blocked; benign: {benign_flags} flagged requests of 50"
    );
    assert!(
        flagged >= 32 && blocked >= 8,
        "flagged {flagged}, blocked {blocked}"
    );
    assert!(attacker_flags >= 4, "{attacker_flags}");

    // An extraction client: near-copies of a few seeds. PRADA degrades it, going on limits
    // its rate, going on after that blocks it.
    let (seeds, _) = images(&set, 5000..5010);
    let mut rng = StdRng::seed_from_u64(7);
    let jitter = Normal::new(0.0f32, 0.02).unwrap();
    let mut codes = Vec::new();
    let mut degraded_seen = false;
    for round in 0..400 {
        let batch: Vec<Vec<f32>> = (0..32)
            .map(|i| {
                // Exact repeats and slightly jittered copies: distances of 0 and about 0.8,
                // far from the normal distribution PRADA expects of natural queries.
                let seed = &seeds[(round * 32 + i) % 10];
                let scale = if i % 2 == 0 { 0.0 } else { 1.0 };
                seed.iter()
                    .map(|p| (p + scale * jitter.sample(&mut rng)).clamp(0.0, 1.0))
                    .collect()
            })
            .collect();
        let (code, v) = s.predict(THIEF, &batch);
        codes.push(code);
        if code == 200 && v["output"] == "label" {
            degraded_seen = true;
            let p = &v["predictions"][0];
            assert!(
                p.get("probabilities").is_none() && p["detector"].get("scores").is_none(),
                "{v}"
            );
        }
        if code == 429 {
            std::thread::sleep(Duration::from_millis(200));
        }
        if code == 403 {
            eprintln!("thief refused: {v}");
            break;
        }
    }
    let _ = std::fs::copy(&log, "/tmp/serve-debug.jsonl");
    let thefts: Vec<Value> = of_type(&entries(&log), "extraction")
        .into_iter()
        .cloned()
        .collect();
    assert!(degraded_seen, "{codes:?} {thefts:#?}");
    assert!(codes.contains(&429), "{codes:?}");
    assert_eq!(codes.last(), Some(&403), "{codes:?}");
    let all = entries(&log);
    let thefts = of_type(&all, "extraction");
    let actions: Vec<&str> = thefts
        .iter()
        .filter_map(|e| e["alert"]["action"].as_str())
        .collect();
    assert_eq!(actions.len(), 3, "{actions:?}");
    assert!(
        actions[0].contains("degraded")
            && actions[1].contains("rate limited")
            && actions[2] == "blocked",
        "{actions:?}"
    );
    assert!(thefts.iter().all(|e| e["alert"]["client"] == "thief"));
    assert_eq!(thefts[0]["alert"]["evidence"]["check"], "prada");
    let clients = s.status()["clients"].clone();
    let standing = |name: &str| {
        clients
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .unwrap()
            .clone()
    };
    assert_eq!(standing("thief")["blocked"], true);
    assert_eq!(standing("benign")["blocked"], false);

    // A webhook receiver that hangs does not hold up predictions: it has been sent alerts
    // and answered none of them, and predictions still come back.
    assert!(
        !hook.got.lock().unwrap().is_empty(),
        "the receiver got the high alerts"
    );
    let (code, _) = s.predict(BENIGN, &benign[..8]);
    assert_eq!(code, 200);
    hook.release.store(true, Ordering::SeqCst);

    // A drifted stream (Gaussian noise, sigma 0.5) on which the primary fails: drift alarms,
    // then two bad health windows fail over to the noise-trained backup.
    let (field, field_labels) = images(&set, 4000..4300);
    let drifted = noisy(&field, 0.5, 11);
    let classes = predict_with_feedback(&s, FIELD, &drifted, &field_labels, 8);
    let st = s.status();
    eprintln!("drifted: models {}", st["status"]["models"]);
    let _ = classes;
    let all = entries(&log);
    assert!(
        !of_type(&all, "drift").is_empty(),
        "no drift alarm: {}",
        st["status"]
    );
    assert!(
        !of_type(&all, "concept_drift").is_empty(),
        "DDM on the labelled errors"
    );
    let drifts = of_type(&all, "drift");
    assert!(
        drifts
            .iter()
            .any(|e| e["alert"]["statistic"] == "online_mmd"),
        "the sliding window alarmed too"
    );
    assert!(
        drifts
            .iter()
            .any(|e| e["alert"]["statistic"] == "bonferroni_p_value")
    );
    let failover = of_type(&all, "failover");
    assert_eq!(failover.len(), 1, "{}", st["status"]);
    assert_eq!(st["status"]["active"], "backup.safetensors");
    let (code, v) = s.predict(RECOVERY, &drifted[..8]);
    assert_eq!(
        (code, v["model"].as_str()),
        (200, Some("backup.safetensors"))
    );

    // Back to clean inputs: the primary recovers and the service fails back.
    let (clean2, clean2_labels) = images(&set, 4300..4600);
    predict_with_feedback(&s, RECOVERY, &clean2, &clean2_labels, 8);
    let st = s.status();
    assert_eq!(
        st["status"]["active"], "primary.safetensors",
        "{}",
        st["status"]
    );
    assert_eq!(of_type(&entries(&log), "failback").len(), 1);

    // The dashboard, rendered by headless Chromium with the admin key: the active model, the
    // fail-over count and the blocked thief; a screenshot for people.
    let dom = chromium(&s, &["--dump-dom"], dir);
    assert!(dom.contains("id=\"active\">primary.safetensors<"), "{dom}");
    assert!(dom.contains("id=\"failovers\">1<"), "{dom}");
    assert!(
        dom.contains("<td>thief</td>") && dom.contains(">blocked<"),
        "{dom}"
    );
    let shot = Path::new(env!("CARGO_MANIFEST_DIR")).join("target/serve-dashboard.png");
    chromium(
        &s,
        &[
            "--window-size=1280,1100",
            &format!("--screenshot={}", shot.display()),
        ],
        dir,
    );
    assert!(std::fs::read(&shot).unwrap().starts_with(b"\x89PNG"));

    // A model tampered on disk is refused at reload; the service keeps the last good ones.
    let backup = dir.join("backup.safetensors");
    let good = std::fs::read(&backup).unwrap();
    let mut bad = good.clone();
    let n = bad.len();
    bad[n - 5] ^= 1;
    std::fs::write(&backup, &bad).unwrap();
    let (code, v) = s.post("/v1/admin/reload", Some(OPS), b"");
    assert_eq!(code, 409, "{v}");
    assert!(v["error"].as_str().unwrap().contains("signature"), "{v}");
    assert_eq!(s.post("/v1/admin/reload", Some(BENIGN), b"").0, 403);
    assert_eq!(s.predict(BENIGN, &benign[..4]).0, 200);
    std::fs::write(&backup, &good).unwrap();
    assert_eq!(s.post("/v1/admin/reload", Some(OPS), b"").0, 200);

    // The metrics say the same.
    let (code, text) = s.get("/metrics");
    assert_eq!(code, 200);
    assert_eq!(metric(&text, "rampart_failovers_total"), 1.0);
    assert_eq!(metric(&text, "rampart_failbacks_total"), 1.0);
    assert!(metric(&text, "rampart_drift_alarms_total") >= 1.0);
    assert_eq!(
        metric(&text, "rampart_extraction_alarms_total{check=\"prada\"}"),
        1.0
    );
    assert!(
        metric(
            &text,
            "rampart_requests_total{endpoint=\"predict\",code=\"401\""
        ) >= 2.0
    );
    assert!(
        metric(
            &text,
            "rampart_requests_total{endpoint=\"predict\",code=\"403\""
        ) >= 1.0
    );
    assert_eq!(
        metric(&text, "rampart_active_model{model=\"primary.safetensors\""),
        1.0
    );
    assert_eq!(
        metric(&text, "rampart_reloads_total{outcome=\"refused\"}"),
        1.0
    );
    assert!(
        metric(&text, "rampart_webhook_failed_total") >= 1.0,
        "the dead receiver"
    );
    assert!(text.contains("rampart_request_duration_seconds_bucket"));
    let payloads = hook.got.lock().unwrap().clone();
    let names: HashSet<String> = payloads
        .iter()
        .map(|p| {
            p["alerts"][0]["labels"]["alertname"]
                .as_str()
                .unwrap_or("")
                .to_string()
        })
        .collect();
    assert!(
        payloads
            .iter()
            .all(|p| p["version"] == "4" && p["status"] == "firing")
    );
    assert!(
        names.contains("rampart_extraction") && names.contains("rampart_failover"),
        "{names:?}"
    );

    // kill -9 during traffic: every acknowledged response's incident is on disk.
    let acknowledged = Arc::new(Mutex::new(Vec::new()));
    let (ack, addr) = (acknowledged.clone(), s.addr.clone());
    let burst: Vec<Vec<f32>> = adv[..8].to_vec();
    let traffic = std::thread::spawn(move || {
        let agent: ureq::Agent = ureq::Agent::config_builder()
            .http_status_as_error(false)
            .build()
            .into();
        let body = serde_json::to_vec(&json!({ "inputs": burst })).unwrap();
        for _ in 0..500 {
            let r = agent
                .post(&format!("http://{addr}/v1/predict"))
                .header("authorization", &format!("Bearer {ATTACKER}"))
                .send(&body[..]);
            match r {
                Ok(mut resp) if resp.status() == 200 => {
                    let v: Value =
                        serde_json::from_str(&resp.body_mut().read_to_string().unwrap()).unwrap();
                    if v["predictions"]
                        .as_array()
                        .unwrap()
                        .iter()
                        .any(|p| p["detector"]["alarm"] == true)
                    {
                        ack.lock()
                            .unwrap()
                            .push(v["request_id"].as_str().unwrap().to_string());
                    }
                }
                Ok(_) => {}
                Err(_) => break,
            }
        }
    });
    std::thread::sleep(Duration::from_millis(1500));
    let mut s = s;
    s.child.kill().unwrap();
    s.child.wait().unwrap();
    traffic.join().unwrap();
    let acknowledged = acknowledged.lock().unwrap().clone();
    assert!(
        !acknowledged.is_empty(),
        "no flagged request was answered before the kill"
    );
    let out = common::rampart(
        &["incidents", "verify", "--log", "incidents.jsonl", "--json"],
        dir,
    );
    let chain = common::json(&out);
    let logged: HashSet<String> = entries(&log)
        .iter()
        .filter_map(|e| {
            e["alert"]["evidence"]["request_id"]
                .as_str()
                .map(String::from)
        })
        .collect();
    for id in &acknowledged {
        assert!(
            logged.contains(id),
            "request {id} was answered but its incident is not in the log"
        );
    }
    drop(s);

    // A restart continues the chain.
    let before = chain["entries"].as_u64().unwrap();
    let s = Server::start(dir);
    assert_eq!(s.predict(BENIGN, &benign[..2]).0, 200);
    let stop = unsafe { libc::kill(s.child.id() as i32, libc::SIGTERM) };
    assert_eq!(stop, 0);
    let mut s = s;
    let status = s.child.wait().unwrap();
    assert!(status.success(), "{}", s.stderr.lock().unwrap());
    let chain = common::json(&common::rampart(
        &["incidents", "verify", "--log", "incidents.jsonl", "--json"],
        dir,
    ));
    let after = chain["entries"].as_u64().unwrap();
    assert!(after >= before + 2, "{before} -> {after}");
    let last = entries(&log);
    assert_eq!(last.last().unwrap()["alert"]["type"], "stop");

    // The report.
    let r = common::json(&common::rampart(
        &[
            "report",
            "--log",
            "incidents.jsonl",
            "--html",
            "report.html",
            "--json",
        ],
        dir,
    ));
    assert_eq!(r["verified"], true);
    assert!(
        r["extraction"]
            .as_array()
            .unwrap()
            .iter()
            .any(|c| c["client"] == "thief")
    );
    assert!(!r["drift"].as_array().unwrap().is_empty());
    assert!(
        r["operations"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["type"] == "failover")
    );
    assert!(r["recommendations"].as_array().unwrap().len() >= 3);
    let recent = common::json(&common::rampart(
        &[
            "report",
            "--log",
            "incidents.jsonl",
            "--since",
            "1h",
            "--json",
        ],
        dir,
    ));
    assert_eq!(recent["entries"], recent["entries_in_log"]);
    assert!(recent["since"].as_str().is_some());
    let html = std::fs::read_to_string(dir.join("report.html")).unwrap();
    assert!(html.starts_with("<!doctype html>") && html.contains("<svg") && html.contains("thief"));

    // A tampered log is refused, by the verifier and by the service.
    let mut lines: Vec<String> = std::fs::read_to_string(&log)
        .unwrap()
        .lines()
        .map(String::from)
        .collect();
    lines[3] = lines[3].replacen("\"time\":\"2", "\"time\":\"1", 1);
    std::fs::write(&log, lines.join("\n") + "\n").unwrap();
    let e = common::failed(&common::rampart(
        &["incidents", "verify", "--log", "incidents.jsonl"],
        dir,
    ));
    assert!(e.contains("incidents.jsonl:4"), "{e}");
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["serve", "--config", "serve.toml"])
        .current_dir(dir)
        .output()
        .unwrap();
    assert!(!out.status.success());
    assert!(String::from_utf8_lossy(&out.stderr).contains("changed since it was written"));
}

/// `configs/serve.toml` and the Kubernetes ConfigMap's `serve.toml` are valid service configs
/// once their key-hash placeholders are filled in.
#[test]
fn shipped_configs_parse() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let template = std::fs::read_to_string(root.join("configs/serve.toml")).unwrap();
    let manifest = std::fs::read_to_string(root.join("deploy/kubernetes/rampart.yaml")).unwrap();
    let start = manifest.find("serve.toml: |\n").unwrap() + "serve.toml: |\n".len();
    let end = start + manifest[start..].find("\n---").unwrap();
    let configmap: String = manifest[start..end]
        .lines()
        .map(|l| l.strip_prefix("    ").unwrap_or(l).to_string() + "\n")
        .collect();
    for (name, text) in [("template", template), ("configmap", configmap)] {
        let filled = text
            .replace("SHA256_OF_ALICE_KEY", &sha("a"))
            .replace("SHA256_OF_OPS_KEY", &sha("b"))
            .replace("REPLACE_WITH_SHA256_OF_THE_FRONTEND_KEY", &sha("a"))
            .replace("REPLACE_WITH_SHA256_OF_THE_OPS_KEY", &sha("b"));
        let path = tmp.path().join(format!("{name}.toml"));
        std::fs::write(&path, filled).unwrap();
        let out = common::rampart(
            &[
                "serve",
                "--config",
                path.to_str().unwrap(),
                "--print-config",
            ],
            tmp.path(),
        );
        let printed = common::ok(&out);
        assert!(
            printed.contains("[model]") && printed.contains("[[clients]]"),
            "{name}: {printed}"
        );
        // Flags override the file, and a bad value names its key.
        let out = common::rampart(
            &[
                "serve",
                "--config",
                path.to_str().unwrap(),
                "--drift-alpha",
                "2",
                "--print-config",
            ],
            tmp.path(),
        );
        let e = common::failed(&out);
        assert!(e.contains("monitor.drift_alpha"), "{name}: {e}");
    }
    // An unfilled placeholder is refused with the key named.
    let out = common::rampart(
        &[
            "serve",
            "--config",
            root.join("configs/serve.toml").to_str().unwrap(),
            "--print-config",
        ],
        tmp.path(),
    );
    let e = common::failed(&out);
    assert!(e.contains("clients.key_sha256"), "{e}");
}

/// A fusion model served on records: the answers are PyTorch's softmax of the same records
/// (the fixture's logits), records are checked against the model's schema, and images are
/// refused.
#[test]
fn serves_a_fusion_model_on_records() {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    std::fs::copy(
        root.join("tests/fixtures/torch-fusion.safetensors"),
        dir.join("fusion.safetensors"),
    )
    .unwrap();
    let config = format!(
        "listen = \"127.0.0.1:0\"\ndevice = \"flex\"\nincident_log = \"incidents.jsonl\"\n\n[model]\nprimary = \"fusion.safetensors\"\n\n[monitor]\ncheck_seconds = 1\nlatency_p99_ms = 0.000001\n\n[[clients]]\nname = \"soc\"\nkey_sha256 = \"{}\"\n",
        sha(BENIGN)
    );
    std::fs::write(dir.join("serve.toml"), config).unwrap();
    let s = Server::start(dir);
    let records: Vec<Value> =
        std::fs::read_to_string(root.join("tests/fixtures/torch-fusion-records.jsonl"))
            .unwrap()
            .lines()
            .map(|l| {
                let mut v: Value = serde_json::from_str(l).unwrap();
                v.as_object_mut().unwrap().remove("label");
                v
            })
            .collect();
    let expected: Value = serde_json::from_str(
        &std::fs::read_to_string(root.join("tests/fixtures/torch-fusion-expected.json")).unwrap(),
    )
    .unwrap();
    let body = serde_json::to_vec(&json!({ "records": records })).unwrap();
    let (code, v) = s.post("/v1/predict", Some(BENIGN), &body);
    assert_eq!(code, 200, "{v}");
    let predictions = v["predictions"].as_array().unwrap();
    assert_eq!(predictions.len(), records.len());
    for (p, logits) in predictions
        .iter()
        .zip(expected["logits"].as_array().unwrap())
    {
        let z: Vec<f64> = logits
            .as_array()
            .unwrap()
            .iter()
            .map(|x| x.as_f64().unwrap())
            .collect();
        let m = z.iter().cloned().fold(f64::MIN, f64::max);
        let e: Vec<f64> = z.iter().map(|x| (x - m).exp()).collect();
        let sum: f64 = e.iter().sum();
        for (c, ec) in e.iter().enumerate() {
            let got = p["probabilities"][c.to_string()].as_f64().unwrap();
            assert!(
                (got - ec / sum).abs() < 1e-4,
                "class {c}: {got} vs {}",
                ec / sum
            );
        }
        let top = (0..z.len()).max_by(|a, b| z[*a].total_cmp(&z[*b])).unwrap();
        assert_eq!(p["class"].as_u64(), Some(top as u64));
        assert!(p["label"].as_str().is_some());
    }
    // A record outside the schema is refused by name; images are for image models.
    let bad = json!({ "records": [{ "network": [0.5, 1.0] }] });
    let (code, v) = s.post(
        "/v1/predict",
        Some(BENIGN),
        &serde_json::to_vec(&bad).unwrap(),
    );
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("record 0"), "{v}");
    let (code, v) = s.predict(BENIGN, &[vec![0.5; 784]]);
    assert_eq!(code, 400, "{v}");
    assert!(v["error"].as_str().unwrap().contains("records"), "{v}");
    // The latency check (every second here, against an unreachable 1 ns p99) raises an alert.
    let log = dir.join("incidents.jsonl");
    let mut latency = Vec::new();
    for _ in 0..50 {
        std::thread::sleep(Duration::from_millis(100));
        latency = of_type(&entries(&log), "latency")
            .into_iter()
            .cloned()
            .collect();
        if !latency.is_empty() {
            break;
        }
    }
    assert!(!latency.is_empty(), "no latency alert");
    assert_eq!(latency[0]["alert"]["statistic"], "p99_ms");
    assert!(latency[0]["alert"]["value"].as_f64().unwrap() > 0.0);
}

/// An encrypted primary and backup (age), opened with the config's `decrypt_key` and served;
/// the models are known by their plaintext's digest. Without the key the service refuses to
/// start, naming the file.
#[test]
fn serves_encrypted_models() {
    let tmp = tempfile::tempdir().unwrap();
    let dir = tmp.path();
    let model = common::reference_path();
    let model = model.to_str().unwrap();
    common::ok(&common::rampart(
        &[
            "keygen",
            "--for",
            "encryption",
            "--private",
            "key.txt",
            "--public",
            "key.pub",
        ],
        dir,
    ));
    for out in ["primary.age", "backup.age"] {
        common::ok(&common::rampart(
            &["encrypt", model, "--recipients", "key.pub", "--out", out],
            dir,
        ));
    }
    let config = |key: &str| {
        format!(
            "listen = \"127.0.0.1:0\"\ndevice = \"flex\"\nincident_log = \"incidents.jsonl\"\n{key}\n\
             [model]\nprimary = \"primary.age\"\nbackups = [\"backup.age\"]\n\n\
             [[clients]]\nname = \"ops\"\nkey_sha256 = \"{}\"\nadmin = true\n",
            sha(OPS)
        )
    };
    std::fs::write(dir.join("serve.toml"), config("decrypt_key = \"key.txt\"")).unwrap();
    let s = Server::start(dir);
    let set = common::fashion_test(1, 10);
    let (x, labels) = images(&set, 0..8);
    let (code, v) = s.predict(OPS, &x);
    assert_eq!(code, 200, "{v}");
    let classes: Vec<i64> = v["predictions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["class"].as_i64().unwrap())
        .collect();
    assert!(accuracy(&classes.into_iter().map(Some).collect::<Vec<_>>(), &labels) >= 0.75);
    let plain = sha256_file(&common::reference_path());
    let models = s.status()["status"]["models"].clone();
    assert_eq!(models[0]["sha256"], plain.as_str(), "{models}");
    assert_eq!(models[1]["sha256"], plain.as_str(), "{models}");
    drop(s);
    std::fs::write(dir.join("serve.toml"), config("")).unwrap();
    let out = Command::new(env!("CARGO_BIN_EXE_rampart"))
        .args(["serve", "--config", "serve.toml"])
        .current_dir(dir)
        .env_remove("RAMPART_DECRYPT_KEY")
        .env_remove("RAMPART_DECRYPT_KEY_FILE")
        .output()
        .unwrap();
    assert!(!out.status.success());
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(
        err.contains("primary.age") && err.contains("--decrypt-key"),
        "{err}"
    );
}

fn sha256_file(path: &Path) -> String {
    use sha2::Digest;
    let bytes = std::fs::read(path).unwrap();
    format!("{:x}", sha2::Sha256::digest(bytes))
}
