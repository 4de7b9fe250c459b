//! API clients: keys (only their SHA-256 is configured), token-bucket rate limits, output
//! policies, and the response policy's escalation for a client suspected of extraction:
//! degrade its output at the first distinct alarm, limit its rate at the second, block it at
//! `policy.block_after`.

use std::collections::{BTreeSet, HashMap};
use std::sync::Mutex;
use std::time::Instant;

use serde::Serialize;

use super::config::{ClientConfig, OutputPolicy, Policy};
use crate::artifact::digest::sha256_hex;

/// Why a request was turned away.
#[derive(Debug, Clone, PartialEq)]
pub enum Refusal {
    /// No `Authorization: Bearer KEY` header (401).
    Missing,
    /// A key no client has (401).
    Unknown,
    /// The response policy blocked the client (403).
    Blocked,
    /// Over its rate; retry after this many seconds (429).
    RateLimited(f64),
}

/// A client's standing.
#[derive(Debug, Clone, Serialize)]
pub struct Standing {
    pub name: String,
    pub output: OutputPolicy,
    /// Requests per second now allowed.
    pub rate: f64,
    pub limited: bool,
    pub blocked: bool,
    pub admin: bool,
    /// The extraction checks that have alarmed for it.
    pub alarms: BTreeSet<String>,
    pub requests: u64,
    /// Queries the ledger had counted at the last alarm.
    #[serde(skip)]
    alarmed_at: usize,
    #[serde(skip)]
    burst: f64,
    #[serde(skip)]
    tokens: f64,
    #[serde(skip)]
    last: Option<Instant>,
}

/// Every client, by name, behind one lock.
pub struct Clients {
    by_key: HashMap<String, String>,
    standing: Mutex<HashMap<String, Standing>>,
}

impl Clients {
    pub fn new(configs: &[ClientConfig]) -> Self {
        let by_key = configs
            .iter()
            .map(|c| (c.key_sha256.to_ascii_lowercase(), c.name.clone()))
            .collect();
        let standing = configs
            .iter()
            .map(|c| {
                (
                    c.name.clone(),
                    Standing {
                        name: c.name.clone(),
                        output: c.output,
                        rate: c.rate,
                        limited: false,
                        blocked: false,
                        admin: c.admin,
                        alarms: BTreeSet::new(),
                        requests: 0,
                        alarmed_at: 0,
                        burst: c.burst,
                        tokens: c.burst,
                        last: None,
                    },
                )
            })
            .collect();
        Self {
            by_key,
            standing: Mutex::new(standing),
        }
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<String, Standing>> {
        self.standing.lock().unwrap_or_else(|p| p.into_inner())
    }

    /// The client whose key is in `authorization` ("Bearer KEY").
    pub fn authenticate(&self, authorization: Option<&str>) -> Result<String, Refusal> {
        let key = authorization
            .and_then(|h| h.strip_prefix("Bearer "))
            .map(str::trim)
            .filter(|k| !k.is_empty())
            .ok_or(Refusal::Missing)?;
        self.by_key
            .get(&sha256_hex(key.as_bytes()))
            .cloned()
            .ok_or(Refusal::Unknown)
    }

    /// Admits one request of `name` now, or says why not; returns its output policy.
    pub fn admit(&self, name: &str, now: Instant) -> Result<OutputPolicy, Refusal> {
        let mut all = self.lock();
        let s = all.get_mut(name).ok_or(Refusal::Unknown)?;
        if s.blocked {
            return Err(Refusal::Blocked);
        }
        let elapsed = s
            .last
            .map_or(0.0, |t| now.saturating_duration_since(t).as_secs_f64());
        s.tokens = (s.tokens + elapsed * s.rate).min(s.burst);
        s.last = Some(now);
        if s.tokens < 1.0 {
            return Err(Refusal::RateLimited((1.0 - s.tokens) / s.rate));
        }
        s.tokens -= 1.0;
        s.requests += 1;
        Ok(s.output)
    }

    /// The output policy `name` gets now.
    pub fn output(&self, name: &str) -> OutputPolicy {
        self.lock()
            .get(name)
            .map_or(OutputPolicy::Label, |s| s.output)
    }

    /// Whether `name` may call the admin endpoints.
    pub fn is_admin(&self, name: &str) -> bool {
        self.lock().get(name).is_some_and(|s| s.admin)
    }

    /// Records that extraction check `check` alarmed for `name` after `queries` queries;
    /// returns the action taken when this is a new alarm ("output degraded to label", "rate
    /// limited to 1/s", "blocked"). A client that has alarmed and goes on for
    /// `policy.escalate_queries` more queries alarms again (check "persisted").
    pub fn escalate(
        &self,
        name: &str,
        check: &str,
        queries: usize,
        policy: &Policy,
    ) -> Option<String> {
        let mut all = self.lock();
        let s = all.get_mut(name)?;
        let check = if check == "persisted" {
            if s.alarms.is_empty() || queries < s.alarmed_at + policy.escalate_queries {
                return None;
            }
            format!("persisted to query {queries}")
        } else {
            check.to_string()
        };
        if !s.alarms.insert(check) {
            return None;
        }
        s.alarmed_at = queries;
        let n = s.alarms.len();
        if n >= policy.block_after {
            s.blocked = true;
            return Some("blocked".into());
        }
        if n >= 2 {
            s.limited = true;
            s.rate = s.rate.min(policy.limited_rate);
            s.burst = s.burst.min(policy.limited_rate.max(1.0));
            s.tokens = s.tokens.min(s.burst);
            return Some(format!("rate limited to {}/s", s.rate));
        }
        // Degrading never loosens a client's own policy.
        s.output = stricter(s.output, policy.degrade_to);
        Some(format!("output degraded to {:?}", s.output).to_lowercase())
    }

    /// Every client's standing, by name.
    pub fn standings(&self) -> Vec<Standing> {
        let mut v: Vec<Standing> = self.lock().values().cloned().collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    }
}

/// The stricter of two output policies (full < rounded < top3 < label).
pub fn stricter(a: OutputPolicy, b: OutputPolicy) -> OutputPolicy {
    let rank = |p| match p {
        OutputPolicy::Full => 0,
        OutputPolicy::Rounded => 1,
        OutputPolicy::Top3 => 2,
        OutputPolicy::Label => 3,
    };
    if rank(a) >= rank(b) { a } else { b }
}

/// What a client sees of one prediction's probabilities under `policy`: `(class, p)` pairs.
pub fn shape_output(p: &[f32], policy: OutputPolicy) -> Option<Vec<(usize, f32)>> {
    let all = p.iter().copied().enumerate();
    match policy {
        OutputPolicy::Full => Some(all.collect()),
        OutputPolicy::Rounded => Some(all.map(|(c, v)| (c, (v * 10.0).round() / 10.0)).collect()),
        OutputPolicy::Top3 => {
            let mut v: Vec<(usize, f32)> = all.collect();
            v.sort_by(|a, b| b.1.total_cmp(&a.1));
            v.truncate(3);
            Some(v)
        }
        OutputPolicy::Label => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    fn clients() -> Clients {
        Clients::new(&[ClientConfig {
            name: "a".into(),
            key_sha256: sha256_hex(b"secret"),
            output: OutputPolicy::Full,
            rate: 2.0,
            burst: 2.0,
            admin: false,
        }])
    }

    #[test]
    fn keys_and_rates() {
        let c = clients();
        assert_eq!(c.authenticate(Some("Bearer secret")), Ok("a".into()));
        assert_eq!(c.authenticate(Some("Bearer other")), Err(Refusal::Unknown));
        assert_eq!(c.authenticate(None), Err(Refusal::Missing));
        let t = Instant::now();
        assert!(c.admit("a", t).is_ok());
        assert!(c.admit("a", t).is_ok());
        let Err(Refusal::RateLimited(wait)) = c.admit("a", t) else {
            panic!("the third request in a burst of 2 is refused")
        };
        assert!((wait - 0.5).abs() < 1e-9, "{wait}");
        assert!(c.admit("a", t + Duration::from_millis(500)).is_ok());
    }

    #[test]
    fn escalation_degrades_limits_then_blocks() {
        let c = clients();
        let policy = Policy::default();
        let t = Instant::now();
        assert_eq!(
            c.escalate("a", "persisted", 1000, &policy),
            None,
            "no alarm yet"
        );
        assert_eq!(
            c.escalate("a", "prada", 100, &policy).as_deref(),
            Some("output degraded to label")
        );
        assert_eq!(c.escalate("a", "prada", 110, &policy), None);
        assert_eq!(c.admit("a", t), Ok(OutputPolicy::Label));
        assert_eq!(c.escalate("a", "persisted", 599, &policy), None);
        assert!(
            c.escalate("a", "persisted", 600, &policy)
                .unwrap()
                .starts_with("rate limited")
        );
        assert_eq!(
            c.escalate("a", "volume", 601, &policy).as_deref(),
            Some("blocked")
        );
        assert_eq!(c.admit("a", t), Err(Refusal::Blocked));
    }

    #[test]
    fn output_policies() {
        let p = [0.1, 0.62, 0.28];
        assert_eq!(shape_output(&p, OutputPolicy::Label), None);
        assert_eq!(shape_output(&p, OutputPolicy::Top3).unwrap()[0], (1, 0.62));
        assert_eq!(
            shape_output(&p, OutputPolicy::Rounded).unwrap()[1],
            (1, 0.6)
        );
        assert_eq!(shape_output(&p, OutputPolicy::Full).unwrap().len(), 3);
    }
}
