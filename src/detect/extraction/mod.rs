//! Model-extraction detection: a per-client query ledger running PRADA (Juuti, Szyller,
//! Marchal & Asokan, EuroS&P 2019), a CUSUM on each client's query rate ([`cusum`]), a cap on
//! its volume, and a count of near-duplicate queries. [`evaluate`] measures them against
//! benign clients and an extraction attacker that trains a stolen copy ([`substitute`]).
//!
//! PRADA: for each client and each predicted class c, a growing set G_c of that client's
//! queries. A new query x predicted c gets d = min_{y ∈ G_c} ‖x − y‖₂ (the first query of a
//! class starts G_c); d joins the client's distance set D, and x joins G_c when d exceeds the
//! class threshold T_c = max(T_c, mean − sd of the distances that entered G_c). Benign
//! queries spread naturally, so D looks normal; an attacker's synthetic queries, each a
//! small step from an earlier one, do not. Once D holds `min_queries` distances, every
//! `every` queries the Shapiro-Wilk W of D is compared with δ; W < δ raises the alarm.
//! Distances are computed on the host against the growing set (a few hundred vectors per
//! class): the test is sequential by nature, one query after another.

pub mod cusum;
pub mod evaluate;
pub mod ledger_file;
pub mod substitute;

use std::collections::{HashMap, HashSet};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use super::DetectError;
use super::shapiro::{SHAPIRO_MAX_N, shapiro_wilk};
use cusum::{RateCusum, RateState};

/// PRADA's settings.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Prada {
    /// Alarm when the Shapiro-Wilk W of the distances falls below δ (Juuti et al.: 0.9 to
    /// 0.96 depending on the data).
    pub delta: f64,
    /// Distances collected before the first test (PRADA: 100).
    pub min_queries: usize,
    /// Queries between tests (PRADA: 10).
    pub every: usize,
}

impl Default for Prada {
    fn default() -> Self {
        Self {
            delta: 0.9,
            min_queries: 100,
            every: 10,
        }
    }
}

impl Prada {
    pub fn new(delta: f64, min_queries: usize, every: usize) -> Result<Self, DetectError> {
        if !(delta > 0.0 && delta < 1.0) {
            return Err(DetectError::Invalid(format!(
                "--delta must be in (0, 1), got {delta}"
            )));
        }
        if min_queries < 3 || every == 0 {
            return Err(DetectError::Invalid(format!(
                "PRADA needs at least 3 distances before testing and a positive test interval; got {min_queries} and {every}"
            )));
        }
        Ok(Self {
            delta,
            min_queries,
            every,
        })
    }
}

/// One class's growing set: its queries (flattened inputs), the distances that entered it,
/// and the threshold T_c.
#[derive(Debug, Clone, Default)]
struct Growing {
    set: Vec<Vec<f32>>,
    entered: Vec<f64>,
    threshold: f64,
}

/// One client's state.
#[derive(Debug, Clone, Default)]
pub struct Client {
    /// Per predicted class.
    growing: HashMap<usize, Growing>,
    /// The latest distances of queries to their class's growing set (D): at most the
    /// [`SHAPIRO_MAX_N`] a test uses; `distance_count` counts them all.
    distances: std::collections::VecDeque<f64>,
    distance_count: usize,
    /// Queries seen.
    pub queries: usize,
    /// Fingerprints of the queries at 4 bits per coordinate, and how many repeated one.
    fingerprints: HashSet<[u8; 32]>,
    pub duplicates: usize,
    /// The query (1-based) at which the alarm was first raised, with W then.
    pub alarm: Option<(usize, f64)>,
    /// The last W computed, and the lowest.
    pub last_w: Option<f64>,
    pub min_w: Option<f64>,
    /// The query-rate CUSUM's state, when the ledger runs one.
    pub rate: RateState,
}

/// Most queries a class's growing set keeps (its cost per query grows with it; a long-lived
/// client's later queries are still measured against the first ones).
pub const MAX_GROWING: usize = 10_000;
/// Most distinct fingerprints kept per client (32 bytes each); later duplicates of a kept one
/// are still counted.
pub const MAX_FINGERPRINTS: usize = 1_000_000;

/// Squared L2 distance.
fn distance2(a: &[f32], b: &[f32]) -> f64 {
    a.iter().zip(b).map(|(p, q)| f64::from(p - q).powi(2)).sum()
}

impl Client {
    /// Records one query (its input, flattened, in the input box [lo, hi]) and the class the
    /// model predicted; returns W when a test ran.
    pub fn observe(
        &mut self,
        prada: &Prada,
        x: &[f32],
        class: usize,
        box_: (f64, f64),
    ) -> Result<Option<f64>, DetectError> {
        if x.iter().any(|v| !v.is_finite()) {
            return Err(DetectError::NotFinite {
                what: "query input",
            });
        }
        self.queries += 1;
        let (lo, hi) = box_;
        let mut hasher = Sha256::new();
        for v in x {
            let level = ((f64::from(*v) - lo) / (hi - lo) * 15.0)
                .round()
                .clamp(0.0, 15.0) as u8;
            hasher.update([level]);
        }
        let fingerprint: [u8; 32] = hasher.finalize().into();
        if self.fingerprints.contains(&fingerprint) {
            self.duplicates += 1;
        } else if self.fingerprints.len() < MAX_FINGERPRINTS {
            self.fingerprints.insert(fingerprint);
        }
        let g = self.growing.entry(class).or_default();
        if g.set.is_empty() {
            g.set.push(x.to_vec());
            return Ok(None);
        }
        let d = g
            .set
            .iter()
            .map(|y| distance2(x, y))
            .fold(f64::INFINITY, f64::min)
            .sqrt();
        self.distances.push_back(d);
        if self.distances.len() > SHAPIRO_MAX_N {
            self.distances.pop_front();
        }
        self.distance_count += 1;
        if d > g.threshold && g.set.len() < MAX_GROWING {
            g.set.push(x.to_vec());
            g.entered.push(d);
            let n = g.entered.len() as f64;
            let mean = g.entered.iter().sum::<f64>() / n;
            let sd = (g.entered.iter().map(|v| (v - mean).powi(2)).sum::<f64>() / n).sqrt();
            g.threshold = g.threshold.max(mean - sd);
        }
        let n = self.distance_count;
        if n < prada.min_queries || !(n - prada.min_queries).is_multiple_of(prada.every) {
            return Ok(None);
        }
        // Shapiro-Wilk takes at most 5,000 values: the latest ones.
        let recent: Vec<f64> = self.distances.iter().copied().collect();
        let recent = &recent[..];
        // All distances equal (the same query over and over) is as far from normal as it gets.
        let all_equal = recent.iter().all(|d| *d == recent[0]);
        let w = if all_equal {
            0.0
        } else {
            shapiro_wilk(recent)?.w
        };
        self.last_w = Some(w);
        self.min_w = Some(self.min_w.map_or(w, |m: f64| m.min(w)));
        if w < prada.delta && self.alarm.is_none() {
            self.alarm = Some((self.queries, w));
        }
        Ok(Some(w))
    }
}

impl Client {
    /// What has been raised for this client so far, with the volume cap `max_queries`.
    pub fn alarms(&self, max_queries: Option<usize>) -> Alarms {
        Alarms {
            prada: self.alarm,
            rate: self.rate.alarm,
            volume: max_queries.and_then(|cap| (self.queries > cap).then_some(cap + 1)),
        }
    }
}

/// What the ledger has raised for a client so far.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Alarms {
    /// PRADA: the query (1-based) and W then.
    pub prada: Option<(usize, f64)>,
    /// The rate CUSUM: the interval whose count raised it.
    pub rate: Option<u64>,
    /// The volume cap: the query that went over it.
    pub volume: Option<usize>,
}

/// The clients of a service, by name, and the checks run on each.
#[derive(Debug, Clone, Default)]
pub struct Ledger {
    pub prada: Prada,
    /// The query-rate CUSUM (none: rates are not checked).
    pub cusum: Option<RateCusum>,
    /// Most queries per client before the volume alarm (none: no cap).
    pub max_queries: Option<usize>,
    pub clients: HashMap<String, Client>,
}

impl Ledger {
    pub fn new(prada: Prada) -> Self {
        Self {
            prada,
            ..Self::default()
        }
    }

    /// Records a query of `client` arriving in `interval` (intervals never go back for a
    /// client); returns the alarms raised for it so far.
    pub fn observe(
        &mut self,
        client: &str,
        x: &[f32],
        class: usize,
        box_: (f64, f64),
        interval: u64,
    ) -> Result<Alarms, DetectError> {
        if x.iter().any(|v| !v.is_finite()) {
            return Err(DetectError::NotFinite {
                what: "query input",
            });
        }
        let prada = self.prada;
        let c = self.clients.entry(client.to_string()).or_default();
        if let Some(cusum) = &self.cusum {
            c.rate.observe(cusum, interval)?;
        }
        c.observe(&prada, x, class, box_)?;
        Ok(c.alarms(self.max_queries))
    }

    /// Records a query of `client` that has no vector for PRADA (e.g. a record without network
    /// features): it counts toward the rate check and the volume cap only.
    pub fn count(&mut self, client: &str, interval: u64) -> Result<Alarms, DetectError> {
        let c = self.clients.entry(client.to_string()).or_default();
        if let Some(cusum) = &self.cusum {
            c.rate.observe(cusum, interval)?;
        }
        c.queries += 1;
        Ok(c.alarms(self.max_queries))
    }

    /// Closes every client's intervals before `interval` (call it as time passes, so that a
    /// client that bursts and goes quiet is judged on its burst).
    pub fn close_until(&mut self, interval: u64) {
        if let Some(cusum) = &self.cusum {
            for c in self.clients.values_mut() {
                c.rate.close_until(cusum, interval);
            }
        }
    }
}
