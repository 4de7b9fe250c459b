//! `rampart report`: the monitoring report from an incident log (verified first): drift
//! windows with their statistics and thresholds, adversarial inputs, extraction suspects
//! with their query counts and evidence, fail-overs and reloads, and recommendations; in the
//! terminal and as a self-contained HTML page with plots (inline SVG).

use std::collections::BTreeMap;
use std::fmt::Write as _;
use std::path::Path;
use std::time::{Duration, SystemTime};

use serde::Serialize;

use super::incidents::{self, Entry, IncidentError};

/// The report.
#[derive(Debug, Clone, Serialize)]
pub struct Report {
    pub log: String,
    /// The chain verified (a broken chain is an error, not a report).
    pub verified: bool,
    pub entries_in_log: usize,
    /// The period covered: entries since this time.
    pub since: Option<String>,
    pub entries: usize,
    pub by_severity: BTreeMap<String, usize>,
    pub by_type: BTreeMap<String, usize>,
    pub drift: Vec<DriftRow>,
    pub adversarial: Adversarial,
    pub extraction: Vec<Suspect>,
    /// Fail-overs, fail-backs, health windows, reloads, starts and stops, in order.
    pub operations: Vec<Event>,
    /// Latency and error-rate alerts.
    pub service: Vec<Event>,
    pub recommendations: Vec<String>,
    #[serde(skip)]
    times: Vec<(f64, String)>,
}

#[derive(Debug, Clone, Serialize)]
pub struct DriftRow {
    pub seq: u64,
    pub time: String,
    pub p_value: Option<f64>,
    pub threshold: Option<f64>,
    pub window: Option<u64>,
    pub mmd_p_value: Option<f64>,
    pub features_drifted: Option<u64>,
}

#[derive(Debug, Clone, Default, Serialize)]
pub struct Adversarial {
    /// Requests with a flagged input, inputs flagged, inputs blocked.
    pub requests: usize,
    pub inputs: usize,
    pub blocked: usize,
    pub lowest_fused_p_value: Option<f64>,
    /// Flagged inputs per client.
    pub by_client: BTreeMap<String, usize>,
}

#[derive(Debug, Clone, Serialize)]
pub struct Suspect {
    pub client: String,
    /// The checks that alarmed, with the query count at each.
    pub checks: Vec<(String, u64)>,
    pub actions: Vec<String>,
    pub queries: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Event {
    pub seq: u64,
    pub time: String,
    pub severity: String,
    #[serde(rename = "type")]
    pub kind: String,
    pub summary: String,
}

fn event(e: &Entry) -> Event {
    Event {
        seq: e.seq,
        time: e.time.clone(),
        severity: e.alert.severity.name().into(),
        kind: e.alert.kind.clone(),
        summary: e.alert.summary.clone(),
    }
}

/// Builds the report from the log at `path`, keeping entries no older than `since`.
pub fn build(path: &Path, since: Option<Duration>) -> Result<Report, IncidentError> {
    let v = incidents::verify(path)?;
    let cutoff = since.map(|d| {
        SystemTime::now()
            .checked_sub(d)
            .unwrap_or(SystemTime::UNIX_EPOCH)
    });
    let kept: Vec<&Entry> = v
        .entries
        .iter()
        .filter(|e| match (cutoff, e.when()) {
            (Some(c), Some(t)) => t >= c,
            _ => true,
        })
        .collect();
    let mut r = Report {
        log: path.display().to_string(),
        verified: true,
        entries_in_log: v.entries.len(),
        since: cutoff.map(|c| humantime::format_rfc3339_seconds(c).to_string()),
        entries: kept.len(),
        by_severity: BTreeMap::new(),
        by_type: BTreeMap::new(),
        drift: Vec::new(),
        adversarial: Adversarial::default(),
        extraction: Vec::new(),
        operations: Vec::new(),
        service: Vec::new(),
        recommendations: Vec::new(),
        times: Vec::new(),
    };
    let start = kept.first().and_then(|e| e.when());
    let mut suspects: BTreeMap<String, Suspect> = BTreeMap::new();
    for e in &kept {
        let a = &e.alert;
        *r.by_severity.entry(a.severity.name().into()).or_default() += 1;
        *r.by_type.entry(a.kind.clone()).or_default() += 1;
        if let (Some(s), Some(t)) = (start, e.when()) {
            let secs = t.duration_since(s).map_or(0.0, |d| d.as_secs_f64());
            r.times.push((secs, a.severity.name().into()));
        }
        let ev = &a.evidence;
        match a.kind.as_str() {
            "drift" => r.drift.push(DriftRow {
                seq: e.seq,
                time: e.time.clone(),
                p_value: a.value,
                threshold: a.threshold,
                window: ev["window"].as_u64(),
                mmd_p_value: ev["mmd"]["p_value"].as_f64(),
                features_drifted: ev["features"]["drifted"].as_u64(),
            }),
            "adversarial_input" => {
                let inputs = ev["inputs"].as_array().map_or(0, Vec::len);
                let blocked = ev["inputs"].as_array().map_or(0, |v| {
                    v.iter()
                        .filter(|i| i["blocked"].as_bool() == Some(true))
                        .count()
                });
                let ad = &mut r.adversarial;
                ad.requests += 1;
                ad.inputs += inputs;
                ad.blocked += blocked;
                if let Some(p) = a.value {
                    ad.lowest_fused_p_value =
                        Some(ad.lowest_fused_p_value.map_or(p, |q: f64| q.min(p)));
                }
                *ad.by_client
                    .entry(a.client.clone().unwrap_or_default())
                    .or_default() += inputs;
            }
            "extraction" => {
                let client = a.client.clone().unwrap_or_default();
                let s = suspects.entry(client.clone()).or_insert_with(|| Suspect {
                    client,
                    checks: Vec::new(),
                    actions: Vec::new(),
                    queries: 0,
                });
                let check = ev["check"].as_str().unwrap_or("?").to_string();
                let at = ev["alarm_at_query"].as_u64().unwrap_or(0);
                s.checks.push((check, at));
                s.queries = s.queries.max(ev["queries"].as_u64().unwrap_or(0));
                if let Some(act) = &a.action {
                    s.actions.push(act.clone());
                }
            }
            "latency" | "error_rate" => r.service.push(event(e)),
            "failover" | "failback" | "health" | "reload" | "reload_refused" | "start" | "stop"
            | "start_refused" | "log_recovered" | "concept_drift" => r.operations.push(event(e)),
            _ => {}
        }
    }
    r.extraction = suspects.into_values().collect();
    r.recommendations = recommend(&r);
    Ok(r)
}

fn recommend(r: &Report) -> Vec<String> {
    let mut out = Vec::new();
    let count = |t: &str| r.by_type.get(t).copied().unwrap_or(0);
    if !r.drift.is_empty() {
        out.push(format!(
            "{} drift windows alarmed: compare recent inputs with the training data (input pipeline, sensor or population change); retrain or refit the drift reference once the new data is understood.",
            r.drift.len()
        ));
    }
    if r.adversarial.inputs > 0 {
        let top = r.adversarial.by_client.iter().max_by_key(|(_, n)| **n);
        out.push(format!(
            "{} inputs in {} requests were flagged as adversarial ({} blocked){}: review those clients, and consider adversarial training (rampart train --mode pgd or trades).",
            r.adversarial.inputs,
            r.adversarial.requests,
            r.adversarial.blocked,
            top.map_or(String::new(), |(c, n)| format!(", most from {c} ({n})"))
        ));
    }
    for s in &r.extraction {
        out.push(format!(
            "client {} looks like a model-extraction attack ({}; {} queries): rotate its API key and review its queries; actions taken: {}.",
            s.client,
            s.checks.iter().map(|(c, q)| format!("{c} at query {q}")).collect::<Vec<_>>().join(", "),
            s.queries,
            if s.actions.is_empty() { "none".into() } else { s.actions.join(", ") }
        ));
    }
    if count("failover") > 0 {
        out.push(format!(
            "{} fail-overs to a backup: the primary's accuracy on labelled feedback fell below the threshold; investigate it (drift, poisoning, a bad release) before it serves again.",
            count("failover")
        ));
    }
    if count("reload_refused") > 0 {
        out.push(format!(
            "{} reloads were refused (a model failed signature verification or did not load): check the model files for tampering.",
            count("reload_refused")
        ));
    }
    if count("latency") + count("error_rate") > 0 {
        out.push("latency or error-rate alerts: check the load against capacity (rampart_queue_depth, rampart_batch_size) and add replicas.".into());
    }
    if out.is_empty() {
        out.push("nothing needs attention in this period.".into());
    }
    out
}

impl std::fmt::Display for Report {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        writeln!(
            f,
            "Monitoring report: {} (hash chain verified, {} entries)",
            self.log, self.entries_in_log
        )?;
        if let Some(s) = &self.since {
            writeln!(f, "  entries since {s}: {}", self.entries)?;
        }
        let join = |m: &BTreeMap<String, usize>| {
            m.iter()
                .map(|(k, v)| format!("{k} {v}"))
                .collect::<Vec<_>>()
                .join(", ")
        };
        writeln!(f, "  by severity: {}", join(&self.by_severity))?;
        writeln!(f, "  by type: {}", join(&self.by_type))?;
        writeln!(f, "\nDrift ({} windows alarmed)", self.drift.len())?;
        for d in &self.drift {
            writeln!(
                f,
                "  #{} {}: p = {} (threshold {}), window {}, MMD p = {}, features drifted {}",
                d.seq,
                d.time,
                opt(d.p_value),
                opt(d.threshold),
                d.window.map_or("?".into(), |w| w.to_string()),
                opt(d.mmd_p_value),
                d.features_drifted.map_or("?".into(), |w| w.to_string()),
            )?;
        }
        let a = &self.adversarial;
        writeln!(
            f,
            "\nAdversarial inputs: {} flagged in {} requests, {} blocked, lowest fused p-value {}",
            a.inputs,
            a.requests,
            a.blocked,
            opt(a.lowest_fused_p_value)
        )?;
        for (c, n) in &a.by_client {
            writeln!(f, "  {c}: {n}")?;
        }
        writeln!(f, "\nExtraction suspects: {}", self.extraction.len())?;
        for s in &self.extraction {
            writeln!(
                f,
                "  {}: {} queries; {}; {}",
                s.client,
                s.queries,
                s.checks
                    .iter()
                    .map(|(c, q)| format!("{c} at query {q}"))
                    .collect::<Vec<_>>()
                    .join(", "),
                s.actions.join(", ")
            )?;
        }
        writeln!(f, "\nOperations")?;
        for e in self.operations.iter().chain(&self.service) {
            writeln!(
                f,
                "  #{} {} {} {}: {}",
                e.seq, e.time, e.severity, e.kind, e.summary
            )?;
        }
        writeln!(f, "\nRecommendations")?;
        for r in &self.recommendations {
            writeln!(f, "  - {r}")?;
        }
        Ok(())
    }
}

fn opt(v: Option<f64>) -> String {
    v.map_or("?".into(), |x| format!("{x:.3e}"))
}

fn esc(s: &str) -> String {
    s.replace('&', "&amp;")
        .replace('<', "&lt;")
        .replace('>', "&gt;")
        .replace('"', "&quot;")
}

const COLORS: [(&str, &str); 4] = [
    ("info", "#7aa2f7"),
    ("warning", "#e0af0b"),
    ("high", "#d9730d"),
    ("critical", "#b3261e"),
];

/// A bar chart of counts, as inline SVG.
fn bars(counts: &BTreeMap<String, usize>) -> String {
    let max = counts.values().copied().max().unwrap_or(1).max(1) as f64;
    let h = 22 * counts.len() + 10;
    let mut s =
        format!("<svg width=\"640\" height=\"{h}\" role=\"img\" aria-label=\"incidents by type\">");
    for (i, (k, v)) in counts.iter().enumerate() {
        let y = 5 + 22 * i;
        let w = (*v as f64 / max * 440.0).max(1.0);
        let _ = write!(
            s,
            "<text x=\"150\" y=\"{}\" text-anchor=\"end\" font-size=\"12\">{}</text><rect x=\"160\" y=\"{y}\" width=\"{w:.1}\" height=\"16\" fill=\"#4f6bed\"/><text x=\"{:.1}\" y=\"{}\" font-size=\"12\">{v}</text>",
            y + 12,
            esc(k),
            165.0 + w,
            y + 12
        );
    }
    s.push_str("</svg>");
    s
}

/// Incidents over time, one dot per entry, coloured by severity, as inline SVG.
fn timeline(times: &[(f64, String)]) -> String {
    let end = times.iter().map(|t| t.0).fold(0.0, f64::max).max(1.0);
    let mut s = String::from(
        "<svg width=\"640\" height=\"120\" role=\"img\" aria-label=\"incidents over time\"><line x1=\"20\" y1=\"100\" x2=\"620\" y2=\"100\" stroke=\"#999\"/>",
    );
    for (t, sev) in times {
        let row = COLORS.iter().position(|c| c.0 == sev).unwrap_or(0);
        let x = 20.0 + t / end * 600.0;
        let y = 90 - 20 * row;
        let _ = write!(
            s,
            "<circle cx=\"{x:.1}\" cy=\"{y}\" r=\"4\" fill=\"{}\"><title>{sev} at +{t:.0} s</title></circle>",
            COLORS[row].1
        );
    }
    let _ = write!(
        s,
        "<text x=\"20\" y=\"115\" font-size=\"11\">0 s</text><text x=\"620\" y=\"115\" font-size=\"11\" text-anchor=\"end\">{end:.0} s</text></svg>"
    );
    s
}

impl Report {
    /// A self-contained HTML page (no external resources).
    pub fn html(&self) -> String {
        let mut h = String::from(
            "<!doctype html><html lang=\"en\"><head><meta charset=\"utf-8\"><title>Rampart monitoring report</title><style>body{font:14px/1.45 system-ui,sans-serif;margin:2em;max-width:60em;color:#1d2430}table{border-collapse:collapse}td,th{border-bottom:1px solid #ddd;padding:.25em .6em;text-align:left}th{background:#eef1f5}</style></head><body>",
        );
        let _ = write!(
            h,
            "<h1>Rampart monitoring report</h1><p>Log <code>{}</code>: {} entries, hash chain verified.",
            esc(&self.log),
            self.entries_in_log
        );
        if let Some(s) = &self.since {
            let _ = write!(h, " Entries since {}: {}.", esc(s), self.entries);
        }
        h.push_str("</p><h2>Incidents over time</h2>");
        h.push_str(&timeline(&self.times));
        h.push_str("<p>");
        for (name, color) in COLORS {
            let _ = write!(h, "<span style=\"color:{color}\">●</span> {name} ");
        }
        h.push_str("</p><h2>Incidents by type</h2>");
        h.push_str(&bars(&self.by_type));
        let _ = write!(
            h,
            "<h2>Drift</h2><p>{} windows alarmed.</p>",
            self.drift.len()
        );
        if !self.drift.is_empty() {
            h.push_str("<table><tr><th>#</th><th>time</th><th>p-value</th><th>threshold</th><th>window</th><th>MMD p</th><th>features drifted</th></tr>");
            for d in &self.drift {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    d.seq,
                    esc(&d.time),
                    opt(d.p_value),
                    opt(d.threshold),
                    d.window.map_or("?".into(), |w| w.to_string()),
                    opt(d.mmd_p_value),
                    d.features_drifted.map_or("?".into(), |w| w.to_string())
                );
            }
            h.push_str("</table>");
        }
        let a = &self.adversarial;
        let _ = write!(
            h,
            "<h2>Adversarial inputs</h2><p>{} inputs flagged in {} requests, {} blocked; lowest fused p-value {}.</p>",
            a.inputs,
            a.requests,
            a.blocked,
            opt(a.lowest_fused_p_value)
        );
        if !a.by_client.is_empty() {
            h.push_str(&bars(&a.by_client));
        }
        let _ = write!(
            h,
            "<h2>Extraction suspects</h2><p>{}.</p>",
            self.extraction.len()
        );
        if !self.extraction.is_empty() {
            h.push_str("<table><tr><th>client</th><th>queries</th><th>checks (query)</th><th>actions</th></tr>");
            for s in &self.extraction {
                let _ = write!(
                    h,
                    "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                    esc(&s.client),
                    s.queries,
                    esc(&s
                        .checks
                        .iter()
                        .map(|(c, q)| format!("{c} ({q})"))
                        .collect::<Vec<_>>()
                        .join(", ")),
                    esc(&s.actions.join(", "))
                );
            }
            h.push_str("</table>");
        }
        h.push_str("<h2>Operations</h2><table><tr><th>#</th><th>time</th><th>severity</th><th>type</th><th>summary</th></tr>");
        for e in self.operations.iter().chain(&self.service) {
            let _ = write!(
                h,
                "<tr><td>{}</td><td>{}</td><td>{}</td><td>{}</td><td>{}</td></tr>",
                e.seq,
                esc(&e.time),
                esc(&e.severity),
                esc(&e.kind),
                esc(&e.summary)
            );
        }
        h.push_str("</table><h2>Recommendations</h2><ul>");
        for r in &self.recommendations {
            let _ = write!(h, "<li>{}</li>", esc(r));
        }
        h.push_str("</ul></body></html>\n");
        h
    }
}
