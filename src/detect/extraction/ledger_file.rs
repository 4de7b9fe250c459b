//! A saved extraction ledger configuration (`rampart detect fit --kind extraction`): PRADA's
//! settings, the calibrated query-rate CUSUM and the volume cap, in a detector file of family
//! "extraction" (settings only, no tensors), bound to its model. A service builds its
//! [`Ledger`] from it; `rampart detect score` replays the selected examples through it as one
//! client's queries (offline inputs carry no arrival times, so the rate check is not run).

use std::path::Path;

use serde::{Deserialize, Serialize};

use super::cusum::RateCusum;
use super::evaluate::replay;
use super::{Client, Ledger, Prada};
use crate::classifier::Classifier;
use crate::detect::store::{self, FORMAT, KEY, StoreError};
use crate::detect::{DetectError, RunError};
use crate::workload::{Examples, Job, Workload};

/// What an extraction ledger file holds.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct LedgerFile {
    pub format: u32,
    /// "extraction".
    pub family: String,
    pub model_sha256: String,
    pub prada: Prada,
    pub cusum: RateCusum,
    pub max_queries: Option<usize>,
}

/// `detect score` on a ledger file: the selected examples as one client's queries.
#[derive(Debug, Clone, Serialize)]
pub struct LedgerScore {
    pub queries: usize,
    /// PRADA's alarm (query, W), its last and lowest W.
    pub alarm_at: Option<usize>,
    pub w_at_alarm: Option<f64>,
    pub last_w: Option<f64>,
    pub min_w: Option<f64>,
    pub volume_alarm_at: Option<usize>,
    pub duplicates: usize,
    pub rate: &'static str,
}

struct ScoreJob<'a> {
    file: &'a LedgerFile,
    batch: usize,
}

impl Job for ScoreJob<'_> {
    type Output = Result<Client, DetectError>;

    fn run<const D: usize, C: Classifier<D>>(
        self,
        model: &C,
        ex: Examples<C::Input>,
    ) -> Self::Output {
        let mut client = Client::default();
        replay(
            model,
            &mut client,
            &self.file.prada,
            None,
            &ex.inputs,
            self.batch,
        )?;
        Ok(client)
    }
}

impl LedgerFile {
    pub fn new(
        work: &Workload,
        prada: Prada,
        cusum: RateCusum,
        max_queries: Option<usize>,
    ) -> Self {
        Self {
            format: FORMAT,
            family: "extraction".into(),
            model_sha256: work.opened.sha256.clone(),
            prada,
            cusum,
            max_queries,
        }
    }

    /// The ledger a service starts from.
    pub fn ledger(&self) -> Ledger {
        Ledger {
            prada: self.prada,
            cusum: Some(self.cusum),
            max_queries: self.max_queries,
            ..Ledger::default()
        }
    }

    pub fn save(&self, path: &Path) -> Result<(), StoreError> {
        let header = serde_json::to_string(self).expect("ledger settings serialise");
        store::write_file(path, &[], header)
    }

    /// Reads a ledger file; its settings go through the checks of the flags that set them,
    /// and the CUSUM's h must be the one its rates and ARL call for.
    pub fn load(path: &Path) -> Result<Self, StoreError> {
        let (_, text) = store::read_file(path)?;
        let bad = |reason: String| StoreError::Invalid {
            path: path.to_path_buf(),
            reason,
        };
        let file: Self =
            serde_json::from_str(&text).map_err(|e| bad(format!("{KEY} metadata: {e}")))?;
        if file.format != FORMAT || file.family != "extraction" {
            return Err(bad(format!(
                "format {} of family {:?}, where this rampart reads extraction ledgers of format {FORMAT}",
                file.format, file.family
            )));
        }
        store::check_sha256(&file.model_sha256).map_err(bad)?;
        let p = file.prada;
        Prada::new(p.delta, p.min_queries, p.every).map_err(|e| bad(e.to_string()))?;
        let c = file.cusum;
        let again = RateCusum::calibrate(c.rate, c.alert_rate, c.target)
            .map_err(|e| bad(format!("cusum: {e}")))?;
        let close = |a: f64, b: f64| (a - b).abs() <= 1e-9 * a.abs().max(b.abs());
        if again.k != c.k
            || again.h != c.h
            || !close(again.arl0, c.arl0)
            || !close(again.arl1, c.arl1)
        {
            return Err(bad(format!(
                "the rate CUSUM's k {} and h {} (ARL {} and {}) are not the ones its rates and target ARL give (k {}, h {}); fit the ledger again",
                c.k, c.h, c.arl0, c.arl1, again.k, again.h
            )));
        }
        if file.max_queries == Some(0) {
            return Err(bad("max_queries is 0: every query would alarm".into()));
        }
        Ok(file)
    }

    /// [`LedgerFile::load`] for the workload's model.
    pub fn load_for(path: &Path, work: &Workload) -> Result<Self, RunError> {
        let file = Self::load(path)?;
        store::check_model(path, &file.model_sha256, work)?;
        Ok(file)
    }

    /// Replays the workload's selected examples, in order, as one client.
    pub fn score(&self, work: &Workload, batch: usize) -> Result<LedgerScore, RunError> {
        let c = work.run(ScoreJob { file: self, batch }, None)??;
        Ok(LedgerScore {
            queries: c.queries,
            alarm_at: c.alarm.map(|a| a.0),
            w_at_alarm: c.alarm.map(|a| a.1),
            last_w: c.last_w,
            min_w: c.min_w,
            volume_alarm_at: self
                .max_queries
                .filter(|cap| c.queries > *cap)
                .map(|cap| cap + 1),
            duplicates: c.duplicates,
            rate: "not checked: offline inputs carry no arrival times",
        })
    }
}

impl std::fmt::Display for LedgerScore {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let opt = |v: Option<usize>| v.map_or("none".to_string(), |q| format!("at query {q}"));
        writeln!(
            f,
            "{} queries as one client: PRADA alarm {} (last W {}, lowest {}); volume alarm {}; {} duplicates; rate {}",
            self.queries,
            opt(self.alarm_at),
            self.last_w.map_or("-".into(), |w| format!("{w:.4}")),
            self.min_w.map_or("-".into(), |w| format!("{w:.4}")),
            opt(self.volume_alarm_at),
            self.duplicates,
            self.rate
        )
    }
}
