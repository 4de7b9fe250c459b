//! Labelled feedback: DDM, the accuracy windows, fail-over and fail-back.

use super::*;

impl Worker {
    /// True labels for a remembered request: the labelled window, DDM, and health.
    pub(super) fn feedback(
        &mut self,
        by: &str,
        request_id: &str,
        labels_: &[usize],
    ) -> Result<usize, ServeError> {
        let unknown = self
            .remembered
            .get(request_id)
            .is_none_or(|r| r.client != by);
        if unknown {
            return Err(ServeError::NotFound(format!(
                "request {request_id} is not one of this client's recent requests (the service remembers the last {} inputs, and takes one feedback per request)",
                self.cfg.monitor.remember
            )));
        }
        let r = &self.remembered[request_id];
        let n = r.inputs.len();
        if labels_.len() != n {
            return Err(ServeError::BadInput(format!(
                "request {request_id} had {n} inputs; give {n} labels"
            )));
        }
        let classes = self.loaded.models[0].num_classes();
        if let Some(bad) = labels_.iter().find(|l| **l >= classes) {
            return Err(ServeError::BadInput(format!(
                "label {bad}: the model has {classes} classes"
            )));
        }
        let r = self.remembered.remove(request_id).expect("checked above");
        self.remembered_inputs -= n;
        self.metrics.feedback.inc_by(labels_.len() as u64);
        for (i, label) in labels_.iter().enumerate() {
            let error = r.decisions[i] != *label as i64;
            let before = self.ddm.drifts.len();
            let level = self.ddm.observe(error);
            if level == Level::Drift && self.ddm.drifts.len() > before {
                self.raise(
                    Alert::new(Severity::Warning, "concept_drift", "the error rate on labelled feedback rose (DDM: p + s above p_min + 3 s_min)")
                        .evidence(json!({ "examples": self.ddm.drifts.last() })),
                )?;
            }
            self.labelled.push((r.inputs.select(&[i]), *label));
        }
        if self.labelled.len() >= self.cfg.monitor.feedback_window {
            self.close_window()?;
        }
        Ok(labels_.len())
    }

    /// Every model's accuracy on the labelled window; fail over or back.
    pub(super) fn close_window(&mut self) -> Result<(), ServeError> {
        let window = std::mem::take(&mut self.labelled);
        let inputs = Inputs::concat(window.iter().map(|w| &w.0));
        let truth: Vec<i64> = window.iter().map(|w| w.1 as i64).collect();
        let n = truth.len();
        let conf = 1.0 - self.cfg.monitor.health_confidence;
        let mut acc = Vec::new();
        for m in &self.loaded.models {
            let f = m.run(
                &inputs,
                ForwardJob {
                    fitted: None,
                    drift: false,
                },
                &self.device,
            )??;
            let k = f
                .decision
                .iter()
                .zip(&truth)
                .filter(|(a, b)| a == b)
                .count();
            let (lo, hi) = clopper_pearson(k, n, conf);
            let l = labels(&[("model", &m.name())]);
            self.metrics
                .accuracy
                .get_or_create(&l)
                .set(k as f64 / n as f64);
            self.metrics.accuracy_upper.get_or_create(&l).set(hi);
            acc.push((k as f64 / n as f64, lo, hi));
        }
        {
            let mut st = self.status.lock().unwrap_or_else(|e| e.into_inner());
            for (s, a) in st.models.iter_mut().zip(&acc) {
                s.accuracy = Some(*a);
            }
        }
        let m = &self.cfg.monitor;
        let threshold = m.health_threshold;
        let evidence = |acc: &[(f64, f64, f64)], models: &[Served]| {
            json!(models.iter().zip(acc).map(|(s, a)| json!({
                "model": s.name(), "accuracy": a.0, "lower": a.1, "upper": a.2, "labelled": n,
            })).collect::<Vec<_>>())
        };
        let active = self.active;
        if active == 0 {
            if acc[0].2 < threshold {
                self.bad_windows += 1;
                let (a, _, hi) = acc[0];
                if self.bad_windows < m.health_windows {
                    self.raise(
                        Alert::new(Severity::High, "health", format!("the primary's accuracy on {n} labelled inputs is {a:.3} (upper bound {hi:.3} < {threshold}); window {} of {}", self.bad_windows, m.health_windows))
                            .statistic("accuracy_upper_bound", hi, threshold)
                            .evidence(evidence(&acc, &self.loaded.models)),
                    )?;
                    return Ok(());
                }
                let best = (1..acc.len())
                    .filter(|i| acc[*i].1 >= threshold)
                    .max_by(|a, b| acc[*a].1.total_cmp(&acc[*b].1));
                match best {
                    Some(b) => {
                        self.active = b;
                        self.bad_windows = 0;
                        self.good_windows = 0;
                        self.metrics.failovers.inc();
                        self.raise(
                            Alert::new(
                                Severity::Critical,
                                "failover",
                                format!(
                                    "failed over from {} to {} after {} windows below {threshold}",
                                    self.loaded.models[0].name(),
                                    self.loaded.models[b].name(),
                                    m.health_windows
                                ),
                            )
                            .statistic("accuracy_upper_bound", hi, threshold)
                            .action(&format!("serving {}", self.loaded.models[b].name()))
                            .evidence(evidence(&acc, &self.loaded.models)),
                        )?;
                    }
                    None => {
                        self.raise(
                            Alert::new(Severity::Critical, "health", format!("the primary stays below {threshold} and no backup's lower bound reaches it; still serving the primary"))
                                .statistic("accuracy_upper_bound", hi, threshold)
                                .evidence(evidence(&acc, &self.loaded.models)),
                        )?;
                    }
                }
            } else {
                self.bad_windows = 0;
            }
        } else {
            let back = threshold + m.failback_margin;
            if acc[0].1 >= back {
                self.good_windows += 1;
            } else {
                self.good_windows = 0;
            }
            if self.good_windows >= m.health_windows {
                let from = self.loaded.models[active].name();
                self.active = 0;
                self.good_windows = 0;
                self.metrics.failbacks.inc();
                self.raise(
                    Alert::new(Severity::Warning, "failback", format!("failed back from {from} to the primary: its lower bound reached {back:.3} for {} windows", m.health_windows))
                        .statistic("accuracy_lower_bound", acc[0].1, back)
                        .action(&format!("serving {}", self.loaded.models[0].name()))
                        .evidence(evidence(&acc, &self.loaded.models)),
                )?;
            } else if acc[active].2 < threshold {
                // The backup in service is failing too: another backup that clears the
                // threshold takes over, or the operators are told.
                let (a, _, hi) = acc[active];
                // The primary is a candidate too (it clears the threshold, if not the margin).
                let other = (0..acc.len())
                    .filter(|i| *i != active && acc[*i].1 >= threshold)
                    .max_by(|x, y| acc[*x].1.total_cmp(&acc[*y].1));
                let from = self.loaded.models[active].name();
                let alert = match other {
                    Some(b) => {
                        self.active = b;
                        self.good_windows = 0;
                        if b == 0 {
                            self.metrics.failbacks.inc();
                        } else {
                            self.metrics.failovers.inc();
                        }
                        Alert::new(Severity::Critical, "failover", format!("the backup in service, {from}, fell to {a:.3} (upper bound {hi:.3} < {threshold}); failed over to {}", self.loaded.models[b].name()))
                            .action(&format!("serving {}", self.loaded.models[b].name()))
                    }
                    None => Alert::new(
                        Severity::Critical,
                        "health",
                        format!(
                            "the backup in service, {from}, fell to {a:.3} (upper bound {hi:.3} < {threshold}) and no other model clears the threshold"
                        ),
                    ),
                };
                self.raise(
                    alert
                        .statistic("accuracy_upper_bound", hi, threshold)
                        .evidence(evidence(&acc, &self.loaded.models)),
                )?;
            }
        }
        Ok(())
    }
}
